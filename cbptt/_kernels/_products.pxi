# Matrix products: each either in small_sgemm (register-blocked AVX2/AVX-512
# kernels over weights packed once per chunk, small_gemm.h) or in BLAS.
#
# Why: every product of the recurrent core goes through _product, so the
# choice between the two, made per layer by _small (_model.pxi), lives in
# one place.

cdef inline void _product(bint small, intp_t m, intp_t n, intp_t k,
                          const floating* a, intp_t lda, bint trans_a,
                          const floating* b, bint trans_b, const floating* b_small,
                          bint packed, bint accumulate, floating* out,
                          intp_t ld_out) noexcept nogil:
    """out (+)= op(a) @ op(b), op(a) (m, k) and op(b) (k, n), in small_sgemm
    or BLAS. BLAS reads b as stored, (n, k) if trans_b else (k, n);
    small_sgemm reads op(b) from b_small: packed (see _pack), or the (k, n)
    row-major b itself."""
    if floating is float:
        if small:
            small_sgemm(m, n, k, a, lda, trans_a, b_small, n, packed, accumulate, out,
                        ld_out)
            return
    gemm(trans_a, trans_b, m, n, k, 1, a, lda, b, k if trans_b else n,
         1 if accumulate else 0, out, ld_out)


cdef inline void _pack(intp_t k, intp_t n, const floating* b, bint trans_b,
                       floating* out) noexcept nogil:
    """Pack op(b) (k, n), b stored (n, k) if trans_b, for small_sgemm."""
    if floating is float:
        pack(k, n, b, k if trans_b else n, trans_b, out)
