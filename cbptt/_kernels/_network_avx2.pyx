# The training kernels compiled for AVX2 and FMA (x86-64).
#
# Why a module per instruction set: the elementwise passes of the cells are
# plain C loops that the compiler vectorizes, and wheels are compiled for each
# platform's baseline (SSE2 on x86-64). The same kernels compiled for AVX2 or
# AVX-512 ran 25-45% faster per minibatch, so x86-64 builds carry up to three
# copies of _network.pxi and cbptt._kernels imports the widest one the CPU
# runs (see cbptt/_kernels/__init__.py).

include "_network.pxi"
