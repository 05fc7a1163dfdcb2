/* Row-major float32 C[m, n] (+)= A[m, k] @ B[k, n] for the small per-step
 * products of the recurrence, in AVX-512 or AVX2 intrinsics.
 *
 * Why: at small hidden sizes a step's recurrent product is a few thousand
 * multiply-adds (32 rows x 32 x 32 for H = 32) and BLAS spends about as much
 * on dispatch and packing as on the arithmetic. These kernels keep a block of
 * 4 rows x 2 vectors of C in registers and read B straight from L1, the
 * ragged edges masked. Measured single-threaded: 5-15% less time per
 * minibatch at H = 32 and 64, 5% more than OpenBLAS at H = 128.
 *
 * Which kernel is compiled depends on the instruction set the including
 * module is built for (see _network_avx512.pyx); CBPTT_SMALL_SGEMM is 0 in a
 * baseline build, whose callers use BLAS.
 */
#ifndef CBPTT_SMALL_GEMM_H
#define CBPTT_SMALL_GEMM_H

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#include <stddef.h>
#define CBPTT_SMALL_SGEMM 1

#if defined(_MSC_VER)
#define CBPTT_NOINLINE __declspec(noinline)
#else
#define CBPTT_NOINLINE __attribute__((noinline))
#endif

/* Vectors of W floats; a block of C is ROWS rows x 2 vectors, its ragged
 * right edge cut by the lane masks MASK0 and MASK1. */
#if defined(__AVX512F__)
#define CBPTT_W 16
typedef __m512 cbptt_vec;
typedef __mmask16 cbptt_mask;
#define CBPTT_LOAD(p, mask) _mm512_maskz_loadu_ps(mask, p)
#define CBPTT_STORE(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#define CBPTT_SPLAT(x) _mm512_set1_ps(x)
#define CBPTT_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define CBPTT_ZERO() _mm512_setzero_ps()
static cbptt_mask cbptt_lane_mask(int left)
{
    return left >= 16 ? (cbptt_mask)0xFFFF
           : left > 0 ? (cbptt_mask)((1u << left) - 1u) : (cbptt_mask)0;
}
#else
/* AVX2 has no mask registers: a lane is on when its index is below the
 * number of columns left. */
#define CBPTT_W 8
typedef __m256 cbptt_vec;
typedef __m256i cbptt_mask;
#define CBPTT_LOAD(p, mask) _mm256_maskload_ps(p, mask)
#define CBPTT_STORE(p, mask, v) _mm256_maskstore_ps(p, mask, v)
#define CBPTT_SPLAT(x) _mm256_set1_ps(x)
#define CBPTT_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define CBPTT_ZERO() _mm256_setzero_ps()
static cbptt_mask cbptt_lane_mask(int left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

/* Rows of C per register block: 8 x 2 vectors of accumulators fit the 32
 * AVX-512 registers, 4 x 2 the 16 of AVX2. */
#if defined(__AVX512F__)
#define CBPTT_ROWS 8
#else
#define CBPTT_ROWS 4
#endif

/* C[ROWS, 2 W] (+)= A[ROWS, k] @ B[k, 2 W], where A(r, p) = a[r * a_row + p *
 * a_col]; ROWS is a compile-time constant so that the accumulators stay in
 * registers. */
#define CBPTT_BLOCK(ROWS)                                                        \
    do {                                                                         \
        cbptt_vec acc[ROWS][2];                                                  \
        int r_, p_;                                                              \
        for (r_ = 0; r_ < ROWS; r_++) {                                          \
            acc[r_][0] = accumulate ? CBPTT_LOAD(c + r_ * ldc, mask0) : CBPTT_ZERO(); \
            acc[r_][1] = accumulate ? CBPTT_LOAD(c + r_ * ldc + CBPTT_W, mask1)  \
                                    : CBPTT_ZERO();                              \
        }                                                                        \
        for (p_ = 0; p_ < k; p_++) {                                             \
            const float *a_p = a + (size_t)p_ * a_col;                           \
            cbptt_vec b0 = CBPTT_LOAD(b + (size_t)p_ * ldb, mask0);              \
            cbptt_vec b1 = CBPTT_LOAD(b + (size_t)p_ * ldb + CBPTT_W, mask1);    \
            for (r_ = 0; r_ < ROWS; r_++) {                                      \
                cbptt_vec x = CBPTT_SPLAT(a_p[r_ * a_row]);                      \
                acc[r_][0] = CBPTT_FMA(x, b0, acc[r_][0]);                       \
                acc[r_][1] = CBPTT_FMA(x, b1, acc[r_][1]);                       \
            }                                                                    \
        }                                                                        \
        for (r_ = 0; r_ < ROWS; r_++) {                                          \
            CBPTT_STORE(c + r_ * ldc, mask0, acc[r_][0]);                        \
            CBPTT_STORE(c + r_ * ldc + CBPTT_W, mask1, acc[r_][1]);              \
        }                                                                        \
    } while (0)

/* The first min(n, 2 W) columns, CBPTT_ROWS rows at a time. Kept out of line:
 * inlined into a large caller, its loop lost its registers to spills. */
static CBPTT_NOINLINE void cbptt_small_sgemm_panel(
    int m, int n, int k, const float *a, ptrdiff_t a_row, ptrdiff_t a_col,
    const float *b, int ldb, int accumulate, float *c, int ldc)
{
    cbptt_mask mask0 = cbptt_lane_mask(n), mask1 = cbptt_lane_mask(n - CBPTT_W);
    int i;
    for (i = 0; i + CBPTT_ROWS <= m; i += CBPTT_ROWS, a += CBPTT_ROWS * a_row,
                                     c += (size_t)CBPTT_ROWS * ldc)
        CBPTT_BLOCK(CBPTT_ROWS);
    for (; i < m; i++, a += a_row, c += ldc)
        CBPTT_BLOCK(1);
}

/* Row-major C[m, n] (+)= op(A)[m, k] @ B[k, n]; op(A) is A, stored (m, k), or
 * with trans_a the transpose of A stored (k, m); lda is A's row stride. */
static void cbptt_small_sgemm(int m, int n, int k, const float *a, int lda,
                              int trans_a, const float *b, int ldb, int accumulate,
                              float *c, int ldc)
{
    ptrdiff_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
    int j;
    for (j = 0; j < n; j += 2 * CBPTT_W)
        cbptt_small_sgemm_panel(m, n - j, k, a, a_row, a_col, b + j, ldb, accumulate,
                                c + j, ldc);
}

#else
#define CBPTT_SMALL_SGEMM 0
static void cbptt_small_sgemm(int m, int n, int k, const float *a, int lda,
                              int trans_a, const float *b, int ldb, int accumulate,
                              float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)trans_a; (void)b; (void)ldb;
    (void)accumulate; (void)c; (void)ldc;
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
