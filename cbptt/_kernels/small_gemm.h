/* Row-major float32 C[m, n] (+)= op(A)[m, k] @ B[k, n] in AVX-512 or AVX2
 * intrinsics, for the per-step products of the recurrence and for every
 * product of small-H layers, optionally ending in the Elman cell's bias and
 * activation.
 *
 * Why: a step's recurrent product is small in one dimension (the rows of a
 * chunk, 32 or 64) and BLAS repacks the weights at every call: at H = 512
 * that is a 1-4 MB copy per step. Here the weights are packed once per chunk
 * (cbptt_pack) and each step reads them front to back. At small H, BLAS
 * spends about as much on dispatch and packing as on the arithmetic, in its
 * products over all steps too (inner dimension D or H). The kernels keep a
 * block of rows x 2 vectors of C in registers, the ragged edges masked. The
 * Elman step adds its biases and applies tanh or relu to each block while
 * it is in L1, instead of in a second pass over memory.
 *
 * Which kernel is compiled depends on the instruction set the including
 * module is built for (see _network_avx512.pyx); CBPTT_SMALL_SGEMM is 0 in a
 * baseline build, whose callers use BLAS and the cells' own loops.
 */
#ifndef CBPTT_SMALL_GEMM_H
#define CBPTT_SMALL_GEMM_H

#include <stddef.h>

#include "tanh.h"

/* What happens to a block of C before it is stored. */
enum { CBPTT_STORE_ONLY = 0, CBPTT_BIAS_TANH = 1, CBPTT_BIAS_RELU = 2 };

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define CBPTT_SMALL_SGEMM 1

#if defined(_MSC_VER)
#define CBPTT_NOINLINE __declspec(noinline)
#else
#define CBPTT_NOINLINE __attribute__((noinline))
#endif

/* Vectors of W floats, their ragged end cut by lane masks. A block of C is
 * ROWS rows x NV vectors (NV = 2, or 1 when the panel is at most W wide):
 * 8 x 2 accumulators fit the 32 AVX-512 registers, 4 x 2 the 16 of AVX2. */
#if defined(__AVX512F__)
#define CBPTT_W 16
#define CBPTT_ROWS 8
typedef __m512 cbptt_vec;
typedef __mmask16 cbptt_mask;
#define CBPTT_LOAD(p, mask) _mm512_maskz_loadu_ps(mask, p)
#define CBPTT_STORE(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#define CBPTT_OP(name) _mm512_##name##_ps
static cbptt_mask cbptt_lane_mask(int left)
{
    return left >= 16 ? (cbptt_mask)0xFFFF
           : left > 0 ? (cbptt_mask)((1u << left) - 1u) : (cbptt_mask)0;
}
#else
/* AVX2 has no mask registers: a lane is on when its index is below the
 * number of columns left. */
#define CBPTT_W 8
#define CBPTT_ROWS 4
typedef __m256 cbptt_vec;
typedef __m256i cbptt_mask;
#define CBPTT_LOAD(p, mask) _mm256_maskload_ps(p, mask)
#define CBPTT_STORE(p, mask, v) _mm256_maskstore_ps(p, mask, v)
#define CBPTT_OP(name) _mm256_##name##_ps
static cbptt_mask cbptt_lane_mask(int left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif
#define CBPTT_SPLAT(x) CBPTT_OP(set1)(x)
/* Columns per panel of C (and of a packed B): two vectors. */
#define CBPTT_PANEL (2 * CBPTT_W)

/* cbptt_tanhf (tanh.h) on a vector: the same steps lane by lane (the
 * compiler may fuse the scalar form's multiply-adds differently, so the two
 * can differ in the last bit). */
static inline cbptt_vec cbptt_tanh_vec(cbptt_vec x)
{
    cbptt_vec one = CBPTT_SPLAT(1.0f), z, p, q;
    x = CBPTT_OP(min)(x, CBPTT_SPLAT(9.0f));
    x = CBPTT_OP(max)(x, CBPTT_SPLAT(-9.0f));
    z = CBPTT_OP(mul)(x, x);
    p = CBPTT_OP(fmadd)(CBPTT_SPLAT(CBPTT_TANH_P4), z, CBPTT_SPLAT(CBPTT_TANH_P3));
    p = CBPTT_OP(fmadd)(p, z, CBPTT_SPLAT(CBPTT_TANH_P2));
    p = CBPTT_OP(fmadd)(p, z, CBPTT_SPLAT(CBPTT_TANH_P1));
    p = CBPTT_OP(fmadd)(p, z, one);
    q = CBPTT_OP(fmadd)(CBPTT_SPLAT(CBPTT_TANH_Q4), z, CBPTT_SPLAT(CBPTT_TANH_Q3));
    q = CBPTT_OP(fmadd)(q, z, CBPTT_SPLAT(CBPTT_TANH_Q2));
    q = CBPTT_OP(fmadd)(q, z, CBPTT_SPLAT(CBPTT_TANH_Q1));
    q = CBPTT_OP(fmadd)(q, z, one);
    x = CBPTT_OP(div)(CBPTT_OP(mul)(x, p), q);
    x = CBPTT_OP(min)(x, one);
    return CBPTT_OP(max)(x, CBPTT_SPLAT(-1.0f));
}

/* C[ROWS, NV W] (+)= A[ROWS, k] @ B[k, NV W], where A(r, p) = a[r * a_row +
 * p * a_col], then the epilogue (b_ih[v], b_hh[v]: the biases of vector v);
 * ROWS and NV are compile-time constants so that the accumulators stay in
 * registers. (One array per vector column: with a [ROWS][NV] array, GCC 12
 * stored the NV = 1 accumulators to the stack at every step of k.) */
#define CBPTT_BLOCK(ROWS, NV)                                                    \
    do {                                                                         \
        cbptt_vec acc0[ROWS], acc1[ROWS];                                        \
        int r_, p_;                                                              \
        for (r_ = 0; r_ < ROWS; r_++) {                                          \
            acc0[r_] = accumulate ? CBPTT_LOAD(c + r_ * ldc, mask[0])            \
                                  : CBPTT_OP(setzero)();                         \
            if (NV > 1)                                                          \
                acc1[r_] = accumulate ? CBPTT_LOAD(c + r_ * ldc + CBPTT_W, mask[1]) \
                                      : CBPTT_OP(setzero)();                     \
        }                                                                        \
        for (p_ = 0; p_ < k; p_++) {                                             \
            const float *a_p = a + (size_t)p_ * a_col;                           \
            cbptt_vec b0 = CBPTT_LOAD(b + (size_t)p_ * ldb, mask[0]), b1 = b0;   \
            if (NV > 1)                                                          \
                b1 = CBPTT_LOAD(b + (size_t)p_ * ldb + CBPTT_W, mask[1]);        \
            for (r_ = 0; r_ < ROWS; r_++) {                                      \
                cbptt_vec x = CBPTT_SPLAT(a_p[r_ * a_row]);                      \
                acc0[r_] = CBPTT_OP(fmadd)(x, b0, acc0[r_]);                     \
                if (NV > 1)                                                      \
                    acc1[r_] = CBPTT_OP(fmadd)(x, b1, acc1[r_]);                 \
            }                                                                    \
        }                                                                        \
        for (r_ = 0; r_ < ROWS; r_++) {                                          \
            CBPTT_STORE(c + r_ * ldc, mask[0], acc0[r_]);                        \
            if (NV > 1)                                                          \
                CBPTT_STORE(c + r_ * ldc + CBPTT_W, mask[1], acc1[r_]);          \
        }                                                                        \
        if (epilogue != CBPTT_STORE_ONLY)                                        \
            cbptt_bias_activation(ROWS, NV, epilogue, b_ih, b_hh, mask, c, ldc); \
    } while (0)

/* The epilogue on a block just stored (still in L1): reading it back keeps
 * the accumulators of the loop above in registers, where evaluating tanh on
 * them in place made the compiler spill them. */
static inline void cbptt_bias_activation(int rows, int n_vec, int epilogue,
                                         const cbptt_vec *b_ih, const cbptt_vec *b_hh,
                                         const cbptt_mask *mask, float *c, int ldc)
{
    int r, v;
    for (r = 0; r < rows; r++)
        for (v = 0; v < n_vec; v++) {
            float *out = c + (size_t)r * ldc + v * CBPTT_W;
            cbptt_vec x = CBPTT_OP(add)(CBPTT_OP(add)(CBPTT_LOAD(out, mask[v]), b_ih[v]),
                                        b_hh[v]);
            x = epilogue == CBPTT_BIAS_TANH ? cbptt_tanh_vec(x)
                                            : CBPTT_OP(max)(x, CBPTT_OP(setzero)());
            CBPTT_STORE(out, mask[v], x);
        }
}

/* The first min(n, 2 W) columns, CBPTT_ROWS rows at a time. Kept out of line:
 * inlined into a large caller, its loop lost its registers to spills. */
static CBPTT_NOINLINE void cbptt_small_sgemm_panel(
    int m, int n, int k, const float *a, ptrdiff_t a_row, ptrdiff_t a_col,
    const float *b, int ldb, int accumulate, int epilogue, const float *bias_ih,
    const float *bias_hh, float *c, int ldc)
{
    cbptt_mask mask[2];
    cbptt_vec b_ih[2], b_hh[2];
    int i, v, n_vec = n > CBPTT_W ? 2 : 1;
    mask[0] = cbptt_lane_mask(n);
    mask[1] = cbptt_lane_mask(n - CBPTT_W);
    for (v = 0; v < 2; v++) {
        b_ih[v] = b_hh[v] = CBPTT_OP(setzero)();
        if (epilogue != CBPTT_STORE_ONLY && v < n_vec) {
            b_ih[v] = CBPTT_LOAD(bias_ih + v * CBPTT_W, mask[v]);
            b_hh[v] = CBPTT_LOAD(bias_hh + v * CBPTT_W, mask[v]);
        }
    }
    if (n_vec == 2) {
        for (i = 0; i + CBPTT_ROWS <= m; i += CBPTT_ROWS, a += CBPTT_ROWS * a_row,
                                         c += (size_t)CBPTT_ROWS * ldc)
            CBPTT_BLOCK(CBPTT_ROWS, 2);
        for (; i < m; i++, a += a_row, c += ldc)
            CBPTT_BLOCK(1, 2);
    } else {
        for (i = 0; i + CBPTT_ROWS <= m; i += CBPTT_ROWS, a += CBPTT_ROWS * a_row,
                                         c += (size_t)CBPTT_ROWS * ldc)
            CBPTT_BLOCK(CBPTT_ROWS, 1);
        for (; i < m; i++, a += a_row, c += ldc)
            CBPTT_BLOCK(1, 1);
    }
}

/* B[k, n] is row-major with row stride ldb or, with packed, in the layout of
 * cbptt_pack (ldb unused). */
static void cbptt_small_sgemm_epilogue(int m, int n, int k, const float *a, int lda,
                                      int trans_a, const float *b, int ldb, int packed,
                                      int accumulate, int epilogue, const float *bias_ih,
                                      const float *bias_hh, float *c, int ldc)
{
    ptrdiff_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
    int j;
    for (j = 0; j < n; j += CBPTT_PANEL)
        cbptt_small_sgemm_panel(m, n - j, k, a, a_row, a_col,
                                packed ? b + (size_t)j * k : b + j,
                                packed ? CBPTT_PANEL : ldb, accumulate, epilogue,
                                bias_ih ? bias_ih + j : NULL,
                                bias_hh ? bias_hh + j : NULL, c + j, ldc);
}

/* Row-major C[m, n] (+)= op(A)[m, k] @ B[k, n]; op(A) is A, stored (m, k), or
 * with trans_a the transpose of A stored (k, m); lda is A's row stride. B as
 * in cbptt_small_sgemm_epilogue. */
static void cbptt_small_sgemm(int m, int n, int k, const float *a, int lda,
                              int trans_a, const float *b, int ldb, int packed,
                              int accumulate, float *c, int ldc)
{
    cbptt_small_sgemm_epilogue(m, n, k, a, lda, trans_a, b, ldb, packed, accumulate,
                              CBPTT_STORE_ONLY, NULL, NULL, c, ldc);
}

/* One Elman step for m rows of n units: C = f(C + A[m, k] @ B[k, n] + b_ih +
 * b_hh), f tanh or relu, with C holding the input projection on entry; B
 * packed (cbptt_pack). */
static void cbptt_small_elman_step(int m, int n, int k, const float *a, int lda,
                                   const float *b_packed, const float *bias_ih,
                                   const float *bias_hh, int relu, float *c, int ldc)
{
    cbptt_small_sgemm_epilogue(m, n, k, a, lda, 0, b_packed, 0, 1, 1,
                              relu ? CBPTT_BIAS_RELU : CBPTT_BIAS_TANH, bias_ih, bias_hh,
                              c, ldc);
}

/* Floats that cbptt_pack writes for a (k, n) matrix. */
static ptrdiff_t cbptt_packed_size(ptrdiff_t k, ptrdiff_t n)
{
    return k * ((n + CBPTT_PANEL - 1) / CBPTT_PANEL) * CBPTT_PANEL;
}

/* Copy op(S)[k, n] (op(S)[p, j] = S[p * ld + j], or S[j * ld + p] with trans)
 * into dst in panels: panel q, columns [q P, q P + P) for P = CBPTT_PANEL, is
 * a contiguous row-major (k, P) block at dst + q P k, zero past column n.
 * The kernels then read B front to back, which the hardware prefetches; a
 * strided walk down a wide row-major B was 25-55% slower than BLAS once B
 * outgrew L2. */
static void cbptt_pack(int k, int n, const float *src, int ld, int trans, float *dst)
{
    int j, p, col;
    for (j = 0; j < n; j += CBPTT_PANEL)
        for (p = 0; p < k; p++, dst += CBPTT_PANEL)
            for (col = 0; col < CBPTT_PANEL; col++)
                dst[col] = j + col >= n ? 0.0f
                           : trans ? src[(size_t)(j + col) * ld + p]
                                   : src[(size_t)p * ld + j + col];
}

/* The kernels' vector tanh over an array (for tests). */
static void cbptt_tanh_vector_array(const float *x, float *out, int n)
{
    int j;
    for (j = 0; j < n; j += CBPTT_W) {
        cbptt_mask mask = cbptt_lane_mask(n - j);
        CBPTT_STORE(out + j, mask, cbptt_tanh_vec(CBPTT_LOAD(x + j, mask)));
    }
}

#else
#define CBPTT_SMALL_SGEMM 0
static void cbptt_small_sgemm(int m, int n, int k, const float *a, int lda,
                              int trans_a, const float *b, int ldb, int packed,
                              int accumulate, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)trans_a; (void)b; (void)ldb;
    (void)packed; (void)accumulate; (void)c; (void)ldc;
}
static void cbptt_small_elman_step(int m, int n, int k, const float *a, int lda,
                                   const float *b_packed, const float *bias_ih,
                                   const float *bias_hh, int relu, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b_packed;
    (void)bias_ih; (void)bias_hh; (void)relu; (void)c; (void)ldc;
}
static ptrdiff_t cbptt_packed_size(ptrdiff_t k, ptrdiff_t n)
{
    (void)k; (void)n;
    return 0;
}
static void cbptt_pack(int k, int n, const float *src, int ld, int trans, float *dst)
{
    (void)k; (void)n; (void)src; (void)ld; (void)trans; (void)dst;
}
static void cbptt_tanh_vector_array(const float *x, float *out, int n)
{
    int j;
    for (j = 0; j < n; j++)
        out[j] = cbptt_tanhf(x[j]);
}
#endif

/* The instruction set this module was compiled for. */
#if defined(__AVX512F__)
#define CBPTT_INSTRUCTION_SET "avx512"
#elif defined(__AVX2__)
#define CBPTT_INSTRUCTION_SET "avx2"
#else
#define CBPTT_INSTRUCTION_SET "baseline"
#endif

#endif
