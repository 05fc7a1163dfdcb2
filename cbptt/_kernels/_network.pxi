# The training and prediction kernels of a recurrent network (Elman, LSTM or
# GRU cells; stacked; uni- or bidirectional) with a head that reads the last
# state or pools every step, scored by cross-entropy or squared error.
#
# Why one file of includes: each instruction-set build (_network.pyx,
# _network_avx2.pyx, _network_avx512.pyx) must compile all of it as one unit,
# so the pieces are .pxi files included here, one concern each, in the
# order they build on each other:
#
#   _model.pxi     Model, Chunk, Layout: the network and where a chunk's
#                  buffers lie
#   _products.pxi  each matrix product in small_sgemm or BLAS
#   _core.pxi      the recurrent core: layers forward and backward through
#                  time, stacking, directions, dropout, carried state
#   _head.pxi      the head (last, mean, max) and the loss over a chunk; the
#                  losses themselves are point functions in _losses.pxd
#   _chunk.pxi     a chunk from inputs to loss and gradient, the parallel
#                  minibatch, and the loss_and_grad and forward entry points
#   _epoch.pxi     the compiled epoch: L2, clipping, optimizer steps

from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

from cbptt._kernels._cells cimport (
    GRU, LSTM, RNN, gru_backward, gru_forward, lstm_backward, lstm_forward,
    n_gates, rnn_backward, rnn_forward,
)
from cbptt._kernels._common cimport (
    add_bias_rows, column_sums, floating, flush_denormals, gather_time_shifted, gemm,
    INSTRUCTION_SET, intp_t, pack, packed_size, restore_fp_mode, SMALL_SGEMM,
    small_elman_step, small_sgemm, sqrt_, tanh_vector_array,
)
from cbptt._kernels._losses cimport cross_entropy, squared_error

# CBPTT_DEBUG=1 at build time: Cython's checks on, and the entry points
# check the scratch buffers they are given (_check_scratch).
cdef extern from *:
    bint CBPTT_DEBUG_BUILD

# The instruction set these kernels were compiled for: "baseline", "avx2" or
# "avx512".
instruction_set = INSTRUCTION_SET.decode()

include "_model.pxi"
include "_products.pxi"
include "_core.pxi"
include "_head.pxi"
include "_chunk.pxi"
include "_epoch.pxi"


def max_layers():
    return MAX_LAYERS


def tanh_vector_float32(const float[::1] x, float[::1] out):
    """The vector float32 tanh of the fused Elman step (small_gemm.h), applied
    to x, into out (for tests; the scalar form in a baseline build)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out must have the length of x")
    if x.shape[0]:
        tanh_vector_array(&x[0], &out[0], x.shape[0])
