# The training kernels compiled for AVX2 and FMA (x86-64); _network.pyx says why
# there is a module per instruction set.

include "_network.pxi"
