# Helpers shared by every kernel: row-major BLAS, the minibatch gather, and
# elementwise math for float32 and float64.
#
# Why: the kernels spell out the recurrence, the head and the losses;
# everything they share (how a chunk reads its inputs, how a row-major GEMM
# maps onto Fortran BLAS, denormal flushing) lives here, once.

from cython cimport floating
from libc.math cimport exp, expf, log, logf, sqrt, sqrtf, tanh
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

ctypedef Py_ssize_t intp_t

# Denormal floats (below 1.2e-38 in float32) make every operation on them
# about 100 times slower, and BPTT makes them: gradients that vanish over
# many steps pass through that range. Measured: one Elman minibatch of 256
# steps took 33 times as long as one of 64 steps, with 4% of the workspace
# denormal. The kernels therefore run with the x86 flush-to-zero and
# denormals-are-zero modes on, per thread, and restore the caller's mode.
# Elsewhere this is a no-op.
cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64)
    #include <xmmintrin.h>
    static unsigned int cbptt_flush_denormals(void) {
        unsigned int mode = _mm_getcsr();
        _mm_setcsr(mode | 0x8040);  /* FTZ | DAZ */
        return mode;
    }
    static void cbptt_restore_fp_mode(unsigned int mode) { _mm_setcsr(mode); }
    #else
    static unsigned int cbptt_flush_denormals(void) { return 0; }
    static void cbptt_restore_fp_mode(unsigned int mode) { (void)mode; }
    #endif
    """
    unsigned int flush_denormals "cbptt_flush_denormals"() noexcept nogil
    void restore_fp_mode "cbptt_restore_fp_mode"(unsigned int mode) noexcept nogil


# Small row-major float32 products C (+)= op(A) @ B in AVX-512 or AVX2
# intrinsics, B row-major or packed in column panels (pack, packed_size),
# and the Elman step fused with its bias and activation (small_gemm.h);
# SMALL_SGEMM is 0 in a baseline build, where they do nothing.
cdef extern from "small_gemm.h":
    bint SMALL_SGEMM "CBPTT_SMALL_SGEMM"
    const char* INSTRUCTION_SET "CBPTT_INSTRUCTION_SET"
    void small_sgemm "cbptt_small_sgemm"(int m, int n, int k, const float* a, int lda,
                                         bint trans_a, const float* b, int ldb,
                                         bint packed, bint accumulate, float* c,
                                         int ldc) noexcept nogil
    void small_elman_step "cbptt_small_elman_step"(
        int m, int n, int k, const float* a, int lda, const float* b_packed,
        const float* bias_ih, const float* bias_hh, bint relu, float* c, int ldc) noexcept nogil
    void pack "cbptt_pack"(int k, int n, const float* src, int ld, bint trans,
                           float* dst) noexcept nogil
    Py_ssize_t packed_size "cbptt_packed_size"(Py_ssize_t k, Py_ssize_t n) noexcept nogil
    # The vector form of tanh_approx over an array (for tests).
    void tanh_vector_array "cbptt_tanh_vector_array"(const float* x, float* out,
                                                     int n) noexcept nogil


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)


# float32 tanh as a rational function (tanh.h): branch-free, so loops over it
# vectorize.
cdef extern from "tanh.h":
    float tanh_approx "cbptt_tanhf"(float x) noexcept nogil


cdef inline floating tanh_(floating x) noexcept nogil:
    """tanh: the rational approximation in float32, libm in float64."""
    if floating is float:
        return tanh_approx(x)
    else:
        return tanh(x)


cdef inline floating sqrt_(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating log_(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline void gather_time_shifted(
    const floating* X, intp_t x_stride, intp_t n_features,
    const intp_t* samples, const intp_t* offsets, const intp_t* lengths,
    intp_t n_rows, intp_t n_steps, floating* x_out,
) noexcept nogil:
    """Copy steps of the chunk's sequences: x_out[i, s] = X[samples[i],
    offsets[i] + s - 1] for s = 1 .. lengths[i].

    x_out is (n_rows, n_steps + 1, n_features): step 0 and every step past
    lengths[i] are zero, so that padding content never matters and one GEMM
    over all rows computes the input projection with step 0's row equal to 0.
    """
    cdef intp_t i
    cdef intp_t row_size = (n_steps + 1) * n_features
    memset(x_out, 0, n_rows * row_size * sizeof(floating))
    for i in range(n_rows):
        memcpy(x_out + i * row_size + n_features,
               X + samples[i] * x_stride + offsets[i] * n_features,
               lengths[i] * n_features * sizeof(floating))


cdef inline void add_bias_rows(floating* a, const floating* bias,
                               intp_t n_rows, intp_t n_cols) noexcept nogil:
    cdef intp_t i, j
    for i in range(n_rows):
        for j in range(n_cols):
            a[i * n_cols + j] += bias[j]


cdef inline void column_sums(const floating* a, intp_t n_rows, intp_t n_cols,
                             floating* out, bint accumulate=False) noexcept nogil:
    """out[j] = sum_i a[i, j], or out[j] += sum_i a[i, j] with accumulate.

    Eight rows are added together before they go into out: a loop that adds
    one row at a time into out waits, at every row, for its previous store
    (this was a fifth of the small Elman backward pass).
    """
    cdef intp_t i = 0, j
    cdef const floating* r
    if not accumulate:
        memset(out, 0, n_cols * sizeof(floating))
    while i + 8 <= n_rows:
        r = a + i * n_cols
        for j in range(n_cols):
            out[j] += (((r[j] + r[n_cols + j]) + (r[2 * n_cols + j] + r[3 * n_cols + j]))
                       + ((r[4 * n_cols + j] + r[5 * n_cols + j])
                          + (r[6 * n_cols + j] + r[7 * n_cols + j])))
        i += 8
    while i < n_rows:
        for j in range(n_cols):
            out[j] += a[i * n_cols + j]
        i += 1
