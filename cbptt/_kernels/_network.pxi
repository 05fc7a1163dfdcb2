# Forward and backward through time of a many-to-one recurrent network
# (Elman, LSTM or GRU cells; stacked; uni- or bidirectional) with a softmax
# cross-entropy head, for one minibatch.
#
# Why: this is the hot loop of training. The minibatch arrives as indices into
# the padded data set, sorted by decreasing length, and is cut into chunks of
# `chunk_rows` rows run in parallel (OpenMP) with single-threaded BLAS. The
# caller picks chunk_rows from the minibatch size, never from the thread
# count, so every bit of the result is the same for any number of threads.
# Inside a chunk, every buffer of every layer and direction is laid out
# (row, step, unit) with step 0 holding the zero initial state:
#
#   inp     (rows, S + 1, D_in)   the layer's input, zero padded
#   gates   (rows, S + 1, G H)    pre-activations, then activated gates
#   hs      (rows, S + 1, H)      hidden states, hs[:, 0] = h_0 = 0 (the
#                                 Elman cell's h overwrites its gates)
#   aux     (rows, S + 1, H)      LSTM: cell states; GRU: W_hn h + b_hn
#   d_gates (rows, S + 1, G H)    gradient of the pre-activations, zero where unused
#
# so that the input projection, the weight gradients and the gradient into
# the layer's input are each ONE GEMM over all steps (the recurrent weight
# gradient pairs row r + 1 of d_gates with row r of hs), and step s only
# touches the prefix of rows whose sequences are at least s long: no
# arithmetic on padding. S is the chunk's longest sequence. A reverse
# direction reads each sequence reversed within its own length, so it too
# runs forward over a prefix; its outputs are un-reversed between layers.
#
# Only the steps the backward pass needs are kept: the last `truncate` of
# each sequence in training, the last BLOCK_STEPS in predict (the head reads
# the last state only). The steps before them run forward only, BLOCK_STEPS
# at a time, carrying each layer's state into the next block's step 0, so a
# chunk's memory does not grow with T. The reverse direction of a
# bidirectional network needs its whole sequence, so it keeps every step.
#
# Parameters are one flat vector in PyTorch's state_dict order; `Model.params`
# holds where each (layer, direction) block starts, then come weight_out and
# bias_out.

import numpy as np

from cython.parallel cimport prange, threadid
from libc.stdint cimport uint64_t
from libc.math cimport isfinite, pow, sqrt
from libc.string cimport memcpy, memset

from cbptt._kernels._cells cimport (
    GRU, LSTM, RNN, gru_backward, gru_forward, lstm_backward, lstm_forward,
    n_gates, rnn_backward, rnn_forward,
)
from cbptt._kernels._common cimport (
    add_bias_rows, column_sums, floating, flush_denormals, gather_time_shifted, gemm,
    INSTRUCTION_SET, intp_t, pack, packed_size, restore_fp_mode, SMALL_SGEMM,
    small_elman_step, small_sgemm,
    softmax_cross_entropy, sqrt_, tanh_vector_array,
)

cdef enum:
    MAX_LAYERS = 16
    MAX_CHUNK_ROWS = 64             # the most _chunk_rows returns
    # Steps per block of the forward-only prefix (see above): long enough
    # for efficient input-projection GEMMs.
    BLOCK_STEPS = 64
    MAX_BLOCKS = 2 * MAX_LAYERS     # (layer, direction) pairs
    # Where the module has small_gemm.h, the float32 per-step products use
    # it at any hidden size, with packed weights (measured 12-31% less time
    # per epoch than BLAS at H = 128 and 512); up to this hidden size so do
    # the products over all steps, whose large inner dimension favours BLAS
    # beyond it.
    SMALL_H_MAX = 64

# The instruction set these kernels were compiled for: "baseline", "avx2" or
# "avx512".
instruction_set = INSTRUCTION_SET.decode()


cdef struct Model:
    int cell
    bint relu
    intp_t n_layers
    intp_t n_dirs
    intp_t n_features
    intp_t n_classes
    intp_t x_stride                 # elements between consecutive samples of X
    # Steps per sequence whose activations are kept for the backward pass
    # and the head: in training, the `truncate` steps backpropagated (BPTT
    # truncated to them when fewer than the sequence); in predict,
    # BLOCK_STEPS; every step in a bidirectional network.
    intp_t window
    bint packs                      # float32 in a module with small_gemm.h
    double dropout                  # probability of zeroing a layer's output unit
    uint64_t seed                   # dropout masks hash (seed, sample, step, unit)
    intp_t hidden[MAX_LAYERS]
    intp_t params[MAX_BLOCKS]       # offset of weight_ih of block (layer, direction)
    intp_t head                     # offset of weight_out


cdef struct Chunk:
    # The rows of a chunk over one segment of time: row i is sample
    # samples[i] over its steps offset[i] + 1 .. offset[i] + length[i];
    # lengths do not increase with i.
    const intp_t* samples
    intp_t n_rows
    intp_t length[MAX_CHUNK_ROWS]
    intp_t offset[MAX_CHUNK_ROWS]


cdef struct Layout:
    # Offsets (in elements) of one chunk's buffers in its workspace; per
    # block b = layer * n_dirs + direction where indexed.
    intp_t n_steps1                 # S + 1
    intp_t state_h[MAX_BLOCKS]      # (rows, H) hidden state carried between segments
    intp_t state_c[MAX_BLOCKS]      # (rows, H) LSTM cell state carried
    intp_t inp[MAX_BLOCKS]
    intp_t gates[MAX_BLOCKS]
    intp_t hs[MAX_BLOCKS]
    intp_t aux[MAX_BLOCKS]
    intp_t d_gates[MAX_BLOCKS]
    intp_t d_gh[MAX_BLOCKS]         # GRU: gradient of the hidden-side pre-activations
    intp_t d_out[MAX_BLOCKS]        # gradient arriving at hs from the layer above
    intp_t d_inp[MAX_BLOCKS]        # gradient into inp (layers > 0)
    # Weights packed for small_sgemm (small_gemm.h's cbptt_pack):
    intp_t packed_ih_t[MAX_BLOCKS]  # weight_ih^T, (D_in, G H)
    intp_t packed_hh_t[MAX_BLOCKS]  # weight_hh^T, (H, G H)
    intp_t packed_hh[MAX_BLOCKS]    # weight_hh, (G H, H), for the backward pass
    intp_t grad_ih_t                # (D_in, G H) weight_ih's gradient, transposed
    intp_t dh                       # (rows, H_max) running d loss / d h
    intp_t dc                       # (rows, H_max) running d loss / d c (LSTM)
    intp_t gh                       # (rows, 3 H_max) W_hh h_prev of one step (GRU)
    intp_t head_in                  # (rows, n_dirs H_last)
    intp_t d_head_in
    intp_t logits                   # (rows, C), overwritten by d loss / d logits
    intp_t end


cdef inline intp_t _input_size(const Model* m, intp_t k) noexcept nogil:
    return m.n_features if k == 0 else m.n_dirs * m.hidden[k - 1]


cdef Layout _layout(intp_t n_rows, intp_t n_steps, const Model* m,
                    bint training) noexcept nogil:
    """Where the buffers of a chunk of n_rows rows and a segment of n_steps
    steps lie; without training, only the forward pass's (the gradient
    buffers get size 0). The carried states come first, then the weights
    packed for the forward pass: both at the same place for every n_steps,
    so that they outlive the segments of a chunk."""
    cdef Layout w
    cdef intp_t k, d, b, H, G = n_gates(m.cell), H_max = 0, grad_t_max = 0, pos = 0
    cdef intp_t plane = n_rows * (n_steps + 1)     # rows x steps
    cdef intp_t grad_plane = plane if training else 0
    w.n_steps1 = n_steps + 1
    for b in range(m.n_layers * m.n_dirs):
        H = m.hidden[b // m.n_dirs]
        w.state_h[b] = pos; pos += n_rows * H
        w.state_c[b] = pos; pos += n_rows * H if m.cell == LSTM else 0
    for b in range(m.n_layers * m.n_dirs):
        k = b // m.n_dirs
        H = m.hidden[k]
        w.packed_ih_t[b] = pos
        pos += packed_size(_input_size(m, k), G * H) if _small(m, H) else 0
        w.packed_hh_t[b] = pos; pos += packed_size(H, G * H) if m.packs else 0
    for k in range(m.n_layers):
        H = m.hidden[k]
        H_max = H if H > H_max else H_max
        if training and _transposed_grad_ih(m, k):
            grad_t_max = max(grad_t_max, _input_size(m, k) * G * H)
        for d in range(m.n_dirs):
            b = k * m.n_dirs + d
            w.inp[b] = pos; pos += plane * _input_size(m, k)
            w.gates[b] = pos; pos += plane * G * H
            # The Elman cell writes h over its pre-activation, in place.
            w.hs[b] = w.gates[b] if m.cell == RNN else pos
            pos += plane * H if m.cell != RNN else 0
            w.aux[b] = pos; pos += plane * H if m.cell != RNN else 0
            w.d_gates[b] = pos; pos += grad_plane * G * H
            w.d_gh[b] = pos; pos += grad_plane * G * H if m.cell == GRU else 0
            w.d_out[b] = pos; pos += grad_plane * H if k + 1 < m.n_layers else 0
            w.d_inp[b] = pos; pos += grad_plane * _input_size(m, k) if k > 0 else 0
            w.packed_hh[b] = pos
            pos += packed_size(G * H, H) if m.packs and training else 0
    w.grad_ih_t = pos; pos += grad_t_max
    w.dh = pos; pos += n_rows * H_max if training else 0
    w.dc = pos; pos += n_rows * H_max if training else 0
    w.gh = pos; pos += n_rows * 3 * H_max
    w.head_in = pos; pos += n_rows * m.n_dirs * m.hidden[m.n_layers - 1]
    w.d_head_in = pos; pos += n_rows * m.n_dirs * m.hidden[m.n_layers - 1] if training else 0
    w.logits = pos; pos += n_rows * m.n_classes
    w.end = pos
    return w


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    # splitmix64 finalizer: a well-spread 64-bit hash.
    x = (x ^ (x >> 30)) * <uint64_t> 0xbf58476d1ce4e5b9
    x = (x ^ (x >> 27)) * <uint64_t> 0x94d049bb133111eb
    return x ^ (x >> 31)


cdef void _dropout(const Model* m, intp_t k, floating* a, intp_t width,
                   const Chunk* c, intp_t T1) noexcept nogil:
    """Multiply layer k's output (forward time order) by its dropout mask.

    The mask of (sample, step, unit) is a hash of the minibatch seed, so it
    is the same in the forward and the backward pass and for any chunking or
    thread count: keep with probability 1 - p, scaled by 1 / (1 - p).
    """
    cdef intp_t i, s, j
    cdef uint64_t key
    cdef floating scale = 1.0 / (1.0 - m.dropout)
    cdef double u
    cdef floating* row
    for i in range(c.n_rows):
        for s in range(1, c.length[i] + 1):
            row = a + (i * T1 + s) * width
            key = _mix(m.seed ^ _mix(<uint64_t> (k + 1) ^ _mix(
                <uint64_t> c.samples[i] * <uint64_t> 65537
                + <uint64_t> (c.offset[i] + s))))
            for j in range(width):
                u = (_mix(key + <uint64_t> j) >> 11) * (1.0 / 9007199254740992.0)
                row[j] = row[j] * scale if u >= m.dropout else 0


cdef void _copy_steps(const floating* src, intp_t src_width, intp_t src_col,
                      floating* dst, intp_t dst_width, intp_t dst_col,
                      intp_t n_cols, const Chunk* c, intp_t T1, bint reverse,
                      bint accumulate) noexcept nogil:
    """dst[i, t, dst_col:+n_cols] (+)= src[i, s, src_col:+n_cols] for the valid
    steps s = 1..L_i, with t = s, or t = L_i + 1 - s when reversing."""
    cdef intp_t i, s, t, j, L
    cdef const floating* a
    cdef floating* b
    for i in range(c.n_rows):
        L = c.length[i]
        for s in range(1, L + 1):
            t = L + 1 - s if reverse else s
            a = src + (i * T1 + s) * src_width + src_col
            b = dst + (i * T1 + t) * dst_width + dst_col
            if accumulate:
                for j in range(n_cols):
                    b[j] += a[j]
            else:
                memcpy(b, a, n_cols * sizeof(floating))


cdef inline void _zero_rows(floating* a, intp_t width, intp_t T1, intp_t s,
                            intp_t first, intp_t last) noexcept nogil:
    """Zero step s of rows [first, last) of a (rows, T1, width) buffer."""
    cdef intp_t i
    for i in range(first, last):
        memset(a + (i * T1 + s) * width, 0, width * sizeof(floating))


cdef inline bint _small(const Model* m, intp_t H) noexcept nogil:
    """Whether all products of a layer of H units use small_sgemm; where the
    model packs (Model.packs), the per-step products do at any H."""
    return m.packs and H <= SMALL_H_MAX


cdef inline bint _transposed_grad_ih(const Model* m, intp_t k) noexcept nogil:
    """Whether layer k forms weight_ih's gradient transposed, (D_in, G H), in
    small_sgemm: its rows fill the vector lanes, and with fewer inputs than
    gate units the transpose has the longer rows (8 inputs, 32 units: 2.9
    times faster)."""
    return _small(m, m.hidden[k]) and _input_size(m, k) < n_gates(m.cell) * m.hidden[k]


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


cdef void _layer_forward(const Model* m, const Layout* w, intp_t k, intp_t d,
                         const Chunk* c, const floating* params, floating* ws,
                         bint from_state) noexcept nogil:
    """Run block (k, d) over its input; fills gates, hs and aux. The state at
    step 0 is zero, or with from_state the state carried in w.state_*."""
    cdef intp_t b = k * m.n_dirs + d, T1 = w.n_steps1, S = T1 - 1
    cdef intp_t H = m.hidden[k], G = n_gates(m.cell), GH = G * H
    cdef intp_t D_in = _input_size(m, k)
    cdef const floating* weight_ih = params + m.params[b]
    cdef const floating* weight_hh = weight_ih + GH * D_in
    cdef const floating* bias_ih = weight_hh + GH * H
    cdef const floating* bias_hh = bias_ih + GH
    cdef floating* inp = ws + w.inp[b]
    cdef floating* gates = ws + w.gates[b]
    cdef floating* hs = ws + w.hs[b]
    cdef floating* aux = ws + w.aux[b]
    cdef floating* gh = ws + w.gh
    cdef floating* packed_ih_t = ws + w.packed_ih_t[b]
    cdef floating* packed_hh_t = ws + w.packed_hh_t[b]
    cdef bint small = _small(m, H)
    cdef bint small_steps = m.packs
    cdef intp_t i, s, n_rows = c.n_rows, n_active = n_rows, at

    # Input projection for every step at once: gates = inp @ weight_ih^T.
    _product(small, n_rows * T1, GH, D_in, inp, D_in, False, weight_ih, True, packed_ih_t,
             True, False, gates, GH)
    # Only what the time loop does not write is set: the initial state
    # (step 0) and hs past each sequence's end (zero: the weight-gradient
    # GEMMs read it, so it must not hold stale workspace).
    if from_state:
        for i in range(n_rows):
            memcpy(hs + i * T1 * H, ws + w.state_h[b] + i * H, H * sizeof(floating))
            if m.cell == LSTM:
                memcpy(aux + i * T1 * H, ws + w.state_c[b] + i * H, H * sizeof(floating))
    else:
        _zero_rows(hs, H, T1, 0, 0, n_rows)
        if m.cell != RNN:
            _zero_rows(aux, H, T1, 0, 0, n_rows)
    for s in range(1, S + 1):
        while c.length[n_active - 1] < s:
            n_active -= 1
        _zero_rows(hs, H, T1, s, n_active, n_rows)
        if floating is float:
            if small_steps and m.cell == RNN:
                # Product, biases and activation in one pass (k = 0: no
                # product from a zero h_0).
                small_elman_step(n_active, H, H if s > 1 or from_state else 0,
                                 hs + (s - 1) * H, T1 * H, packed_hh_t, bias_ih,
                                 bias_hh, m.relu, gates + s * GH, T1 * GH)
                continue
        # The recurrent product (a zero h_0 needs none).
        if m.cell == GRU:
            if s > 1 or from_state:
                _product(small_steps, n_active, GH, H, hs + (s - 1) * H, T1 * H, False,
                         weight_hh, True, packed_hh_t, True, False, gh, GH)
            else:
                memset(gh, 0, n_active * GH * sizeof(floating))
        elif s > 1 or from_state:
            _product(small_steps, n_active, GH, H, hs + (s - 1) * H, T1 * H, False,
                     weight_hh, True, packed_hh_t, True, True, gates + s * GH, T1 * GH)
        # One loop per cell, as in _layer_backward.
        if m.cell == RNN:
            for i in range(n_active):
                at = i * T1 + s
                rnn_forward(H, m.relu, gates + at * GH, bias_ih, bias_hh, hs + at * H)
        elif m.cell == LSTM:
            for i in range(n_active):
                at = i * T1 + s
                lstm_forward(H, gates + at * GH, bias_ih, bias_hh, aux + (at - 1) * H,
                             aux + at * H, hs + at * H)
        else:
            for i in range(n_active):
                at = i * T1 + s
                gru_forward(H, gates + at * GH, gh + i * GH, bias_ih, bias_hh,
                            hs + (at - 1) * H, aux + at * H, hs + at * H)


cdef void _layer_backward(const Model* m, const Layout* w, intp_t k, intp_t d,
                          const Chunk* c, const floating* params, floating* grad,
                          floating* ws, const floating* d_head,
                          intp_t d_head_stride) noexcept nogil:
    """Backprop through time in block (k, d) into its weight gradients and,
    for k > 0, into d_inp. The gradient at hs comes from the head (d_head,
    row i at d_head + i * d_head_stride, for the last layer: it enters at
    each sequence's last step) or from the layer above (d_out, every step).
    None flows into the state at step 0 (zero, or carried: truncated BPTT)."""
    cdef intp_t b = k * m.n_dirs + d, T1 = w.n_steps1, S = T1 - 1
    cdef intp_t H = m.hidden[k], G = n_gates(m.cell), GH = G * H
    cdef intp_t D_in = _input_size(m, k)
    cdef const floating* weight_ih = params + m.params[b]
    cdef const floating* weight_hh = weight_ih + GH * D_in
    cdef floating* grad_weight_ih = grad + m.params[b]
    cdef floating* grad_weight_hh = grad_weight_ih + GH * D_in
    cdef floating* grad_bias_ih = grad_weight_hh + GH * H
    cdef floating* grad_bias_hh = grad_bias_ih + GH
    cdef floating* inp = ws + w.inp[b]
    cdef floating* gates = ws + w.gates[b]
    cdef floating* hs = ws + w.hs[b]
    cdef floating* aux = ws + w.aux[b]
    cdef floating* d_gates = ws + w.d_gates[b]
    cdef floating* d_gh = ws + w.d_gh[b] if m.cell == GRU else d_gates
    cdef floating* d_out = ws + w.d_out[b]
    cdef floating* dh = ws + w.dh
    cdef floating* dc = ws + w.dc
    cdef floating* dh_i
    cdef floating* packed_hh = ws + w.packed_hh[b]
    cdef bint small = _small(m, H)
    cdef bint small_steps = m.packs
    cdef intp_t i, j, s, at, n_rows = c.n_rows, n_active = 0

    if small_steps:
        _pack(GH, H, weight_hh, False, packed_hh)

    # d_gates (and d_gh) must be zero wherever the loop below writes nothing:
    # step 0, and the rows past n_active at each step.
    _zero_rows(d_gates, GH, T1, 0, 0, n_rows)
    if m.cell == GRU:
        _zero_rows(d_gh, GH, T1, 0, 0, n_rows)
    for s in range(S, 0, -1):
        # Sequences whose last step is s enter the backward pass here.
        while n_active < n_rows and c.length[n_active] >= s:
            if d_head != NULL:
                memcpy(dh + n_active * H, d_head + n_active * d_head_stride,
                       H * sizeof(floating))
            else:
                memset(dh + n_active * H, 0, H * sizeof(floating))
            memset(dc + n_active * H, 0, H * sizeof(floating))
            n_active += 1
        _zero_rows(d_gates, GH, T1, s, n_active, n_rows)
        if m.cell == GRU:
            _zero_rows(d_gh, GH, T1, s, n_active, n_rows)
        if d_head == NULL:
            # The gradient at h_s: from step s + 1 (in dh) and from above.
            for i in range(n_active):
                dh_i = dh + i * H
                for j in range(H):
                    dh_i[j] += d_out[(i * T1 + s) * H + j]
        # One loop per cell: a cell test inside the loop kept every cell's
        # pointers live in it.
        if m.cell == RNN:
            for i in range(n_active):
                at = i * T1 + s
                rnn_backward(H, m.relu, dh + i * H, hs + at * H, d_gates + at * GH)
        elif m.cell == LSTM:
            for i in range(n_active):
                at = i * T1 + s
                lstm_backward(H, dh + i * H, dc + i * H, gates + at * GH, aux + (at - 1) * H,
                              aux + at * H, d_gates + at * GH)
        else:
            for i in range(n_active):
                at = i * T1 + s
                gru_backward(H, dh + i * H, gates + at * GH, aux + at * H,
                             hs + (at - 1) * H, d_gates + at * GH, d_gh + at * GH)
        if s > 1:
            # Backprop into h_{s-1}: dh = d_gh_s @ W_hh (GRU adds to its direct
            # path dh * z; the other cells have no direct path).
            _product(small_steps, n_active, H, GH, d_gh + s * GH, T1 * GH, False,
                     weight_hh, False, packed_hh, True, m.cell == GRU, dh, H)

    # Weight gradients, one GEMM each over all (row, step) pairs.
    if _transposed_grad_ih(m, k):
        _product(True, D_in, GH, n_rows * T1, inp, D_in, True, d_gates, False, d_gates,
                 False, False, ws + w.grad_ih_t, GH)
        for i in range(D_in):
            for j in range(GH):
                grad_weight_ih[j * D_in + i] = ws[w.grad_ih_t + i * GH + j]
    else:
        _product(small, GH, D_in, n_rows * T1, d_gates, GH, True, inp, False, inp, False,
                 False, grad_weight_ih, D_in)
    _product(small, GH, H, n_rows * T1 - 1, d_gh + GH, GH, True, hs, False, hs, False,
             False, grad_weight_hh, H)
    column_sums(d_gates, n_rows * T1, GH, grad_bias_ih)
    if m.cell == GRU:
        column_sums(d_gh, n_rows * T1, GH, grad_bias_hh)
    else:
        # Both biases enter the same pre-activation: equal gradients.
        memcpy(grad_bias_hh, grad_bias_ih, GH * sizeof(floating))
    if k > 0:
        # Backprop into the layer's input: d_inp = d_gates @ W_ih.
        _product(small, n_rows * T1, D_in, GH, d_gates, GH, False, weight_ih, False,
                 weight_ih, False, False, ws + w.d_inp[b], D_in)


cdef void _pack_forward_weights(const Model* m, const Layout* w,
                                const floating* params, floating* ws) noexcept nogil:
    """Pack every block's weights for the forward pass's small_sgemm calls,
    once per chunk (their place in w does not depend on the segment)."""
    cdef intp_t b, k, H, GH, D_in
    cdef const floating* weight_ih
    for b in range(m.n_layers * m.n_dirs):
        k = b // m.n_dirs
        H = m.hidden[k]
        GH = n_gates(m.cell) * H
        D_in = _input_size(m, k)
        weight_ih = params + m.params[b]
        if _small(m, H):
            _pack(D_in, GH, weight_ih, True, ws + w.packed_ih_t[b])
        if m.packs:
            _pack(H, GH, weight_ih + GH * D_in, True, ws + w.packed_hh_t[b])


cdef void _forward_segment(const Model* m, const Layout* w, const floating* X,
                           const Chunk* c, const floating* params, floating* ws,
                           bint dropout, bint from_state) noexcept nogil:
    """Run every layer over the segment c; from_state: each layer starts
    from its carried state."""
    cdef intp_t T1 = w.n_steps1, k, d, b, H, D_in
    gather_time_shifted(X, m.x_stride, m.n_features, c.samples, c.offset, c.length,
                        c.n_rows, T1 - 1, ws + w.inp[0])
    for k in range(m.n_layers):
        b = k * m.n_dirs
        D_in = _input_size(m, k)
        if m.n_dirs == 2:
            memset(ws + w.inp[b + 1], 0, c.n_rows * T1 * D_in * sizeof(floating))
            _copy_steps(ws + w.inp[b], D_in, 0, ws + w.inp[b + 1], D_in, 0, D_in,
                        c, T1, True, False)
        for d in range(m.n_dirs):
            _layer_forward(m, w, k, d, c, params, ws, from_state)
        if k + 1 < m.n_layers:
            # The next layer reads [h_forward, h_reverse] in forward time order.
            H = m.hidden[k]
            b = (k + 1) * m.n_dirs
            memset(ws + w.inp[b], 0, c.n_rows * T1 * m.n_dirs * H * sizeof(floating))
            for d in range(m.n_dirs):
                _copy_steps(ws + w.hs[k * m.n_dirs + d], H, 0, ws + w.inp[b],
                            m.n_dirs * H, d * H, H, c, T1, d == 1, False)
            if dropout and m.dropout > 0:
                _dropout(m, k, ws + w.inp[b], m.n_dirs * H, c, T1)


cdef void _save_state(const Model* m, const Layout* w, const Chunk* c,
                      floating* ws) noexcept nogil:
    """Carry each row's state after its last step in the segment c."""
    cdef intp_t b, i, H, at
    for b in range(m.n_layers * m.n_dirs):
        H = m.hidden[b // m.n_dirs]
        for i in range(c.n_rows):
            at = i * w.n_steps1 + c.length[i]
            memcpy(ws + w.state_h[b] + i * H, ws + w.hs[b] + at * H, H * sizeof(floating))
            if m.cell == LSTM:
                memcpy(ws + w.state_c[b] + i * H, ws + w.aux[b] + at * H,
                       H * sizeof(floating))


cdef Layout _forward(const Model* m, const floating* X, const intp_t* lengths,
                     const intp_t* samples, intp_t n_rows, const floating* params,
                     floating* ws, bint training, Chunk* c) noexcept nogil:
    """Run the chunk (samples sorted by decreasing length) through every layer
    and the head, keeping the activations of each sequence's last m.window
    steps; c becomes that segment. The logits stay in ws."""
    cdef Layout w
    cdef intp_t i, d, L, start, top = (m.n_layers - 1) * m.n_dirs
    cdef intp_t H_last = m.hidden[m.n_layers - 1]
    cdef intp_t prefix = lengths[samples[0]] - m.window   # the longest one
    cdef floating* head_in
    c.samples = samples
    w = _layout(n_rows, 0, m, False)
    _pack_forward_weights(m, &w, params, ws)
    if prefix > 0:
        # The steps before each window, forward only, BLOCK_STEPS at a time;
        # the rows whose prefix reaches a block are the first c.n_rows.
        memset(ws, 0, w.packed_ih_t[0] * sizeof(floating))     # the carried states
        start = 0
        while start < prefix:
            c.n_rows = 0
            while c.n_rows < n_rows and lengths[samples[c.n_rows]] - m.window > start:
                i = c.n_rows
                c.length[i] = min(lengths[samples[i]] - m.window - start, BLOCK_STEPS)
                c.offset[i] = start
                c.n_rows += 1
            w = _layout(n_rows, c.length[0], m, False)
            _forward_segment(m, &w, X, c, params, ws, training, True)
            _save_state(m, &w, c, ws)
            start += BLOCK_STEPS
    for i in range(n_rows):
        L = lengths[samples[i]]
        c.length[i] = min(L, m.window)
        c.offset[i] = L - c.length[i]
    c.n_rows = n_rows
    w = _layout(n_rows, c.length[0], m, training)
    _forward_segment(m, &w, X, c, params, ws, training, prefix > 0)
    # The head reads each direction's state after its last step: h_forward at
    # the sequence's last step, h_reverse after running back to step 1.
    head_in = ws + w.head_in
    for i in range(n_rows):
        for d in range(m.n_dirs):
            memcpy(head_in + (i * m.n_dirs + d) * H_last,
                   ws + w.hs[top + d] + (i * w.n_steps1 + c.length[i]) * H_last,
                   H_last * sizeof(floating))
    gemm(False, True, n_rows, m.n_classes, m.n_dirs * H_last, 1, head_in,
         m.n_dirs * H_last, params + m.head, m.n_dirs * H_last, 0, ws + w.logits,
         m.n_classes)
    add_bias_rows(ws + w.logits, params + m.head + m.n_classes * m.n_dirs * H_last,
                  n_rows, m.n_classes)
    return w


cdef double _loss_and_grad(const Model* m, const floating* X, const intp_t* lengths,
                           const intp_t* samples, intp_t n_rows, const intp_t* y,
                           const floating* sample_weight, double loss_scale,
                           const floating* params, floating* grad,
                           floating* ws) noexcept nogil:
    """Forward, loss and backward through time for one chunk; grad is overwritten."""
    cdef Chunk c
    cdef Layout w = _forward(m, X, lengths, samples, n_rows, params, ws, True, &c)
    cdef intp_t T1 = w.n_steps1, k, d, b, H, D_in
    cdef intp_t H_last = m.hidden[m.n_layers - 1]
    cdef intp_t F = m.n_dirs * H_last
    cdef floating* d_logits = ws + w.logits
    cdef floating* d_head_in = ws + w.d_head_in
    cdef double loss = softmax_cross_entropy(d_logits, n_rows, m.n_classes, samples, y,
                                             sample_weight, loss_scale)

    # Backprop into the head: dW_out = d_logits^T head_in, db_out = column sums,
    # and into each direction's last state: d_head_in = d_logits @ W_out.
    gemm(True, False, m.n_classes, F, n_rows, 1, d_logits, m.n_classes,
         ws + w.head_in, F, 0, grad + m.head, F)
    column_sums(d_logits, n_rows, m.n_classes, grad + m.head + m.n_classes * F)
    gemm(False, False, n_rows, F, m.n_classes, 1, d_logits, m.n_classes,
         params + m.head, F, 0, d_head_in, F)
    for k in range(m.n_layers - 1, -1, -1):
        for d in range(m.n_dirs):
            _layer_backward(m, &w, k, d, &c, params, grad, ws,
                            d_head_in + d * H_last if k == m.n_layers - 1 else NULL, F)
        if k == 0:
            break
        # Backprop into layer k - 1's outputs: gather the gradient of layer k's
        # input in forward time order, through the dropout mask, then split it
        # into the two directions of layer k - 1.
        b = k * m.n_dirs
        H = m.hidden[k - 1]
        D_in = m.n_dirs * H
        if m.n_dirs == 2:
            _copy_steps(ws + w.d_inp[b + 1], D_in, 0, ws + w.d_inp[b], D_in, 0, D_in,
                        &c, T1, True, True)
        if m.dropout > 0:
            _dropout(m, k - 1, ws + w.d_inp[b], D_in, &c, T1)
        for d in range(m.n_dirs):
            # Every valid step is written; d_out is read at valid steps only.
            _copy_steps(ws + w.d_inp[b], D_in, d * H, ws + w.d_out[b - m.n_dirs + d], H,
                        0, H, &c, T1, d == 1, False)
    return loss


cdef Model _model(int cell, bint relu, intp_t[::1] hidden, intp_t n_dirs,
                  intp_t n_timesteps, intp_t n_features, intp_t n_classes,
                  intp_t window, double dropout, uint64_t seed, bint float32):
    """The network's description; ``window`` as in Model.window: the steps
    backpropagated in training, BLOCK_STEPS in predict."""
    cdef Model m
    cdef intp_t k, d, pos = 0, G = n_gates(cell), D_in
    if hidden.shape[0] > MAX_LAYERS:
        raise ValueError(f"at most {MAX_LAYERS} layers are supported")
    m.cell = cell
    m.relu = relu
    m.n_layers = hidden.shape[0]
    m.n_dirs = n_dirs
    m.n_features = n_features
    m.n_classes = n_classes
    m.x_stride = n_timesteps * n_features
    m.window = n_timesteps if n_dirs == 2 else min(window, n_timesteps)
    m.packs = float32 and SMALL_SGEMM
    m.dropout = dropout
    m.seed = seed
    for k in range(m.n_layers):
        m.hidden[k] = hidden[k]
        D_in = _input_size(&m, k)
        for d in range(n_dirs):
            m.params[k * n_dirs + d] = pos
            pos += G * hidden[k] * (D_in + hidden[k] + 2)
    m.head = pos
    return m


def max_layers():
    return MAX_LAYERS


def tanh_vector_float32(const float[::1] x, float[::1] out):
    """The vector float32 tanh of the fused Elman step (small_gemm.h), applied
    to x, into out (for tests; the scalar form in a baseline build)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out must have the length of x")
    if x.shape[0]:
        tanh_vector_array(&x[0], &out[0], x.shape[0])


def workspace_size(int cell, intp_t[::1] hidden, intp_t n_dirs, intp_t n_features,
                   intp_t n_classes, intp_t n_rows, intp_t max_steps, bint training,
                   intp_t truncate, bint float32):
    """Elements of scratch memory one thread needs to run chunks of n_rows
    sequences of up to max_steps steps: forward and backward through the
    last ``truncate`` steps (training), or forward only (``truncate`` unused);
    float32 or float64."""
    cdef Model m = _model(cell, False, hidden, n_dirs, max_steps, n_features,
                          n_classes, truncate if training else BLOCK_STEPS, 0.0, 0,
                          float32)
    cdef intp_t size = _layout(n_rows, m.window, &m, training).end
    if max_steps > m.window:
        size = max(size, _layout(n_rows, min(max_steps - m.window, BLOCK_STEPS),
                                 &m, False).end)
    return size


cdef inline intp_t _chunk_rows(intp_t n_batch) noexcept nogil:
    # Larger chunks make the per-step GEMMs more efficient (each call re-reads
    # the recurrent weights); two chunks per minibatch at least keep two cores
    # busy: 64 rows from 128 up, 32 below (measured: 7% faster per minibatch
    # at B = 128, H = 512; one 64-row chunk at B = 64 halves 2-core speed).
    return 64 if n_batch >= 128 else 32


def chunk_rows(intp_t n_batch):
    """Rows per OpenMP task for a minibatch of n_batch sequences: a function
    of the minibatch size only, never of the thread count, so every bit of
    the result is the same for any number of threads."""
    return _chunk_rows(n_batch)


cdef double _minibatch(const Model* m, const floating* X, const intp_t* lengths,
                       const intp_t* batch, intp_t n_batch, const intp_t* y,
                       const floating* sample_weight, double loss_scale,
                       const floating* params, intp_t n_params, floating* grad_out,
                       floating* chunk_grads, floating* workspace, intp_t ws_stride,
                       double* chunk_loss, int n_threads) noexcept nogil:
    """Loss of one minibatch (sorted by decreasing length) and its gradient
    into grad_out: the chunks in parallel, then summed in chunk order, which
    makes the result bit-identical for any thread count."""
    cdef intp_t rows = _chunk_rows(n_batch)
    cdef intp_t n_chunks = (n_batch + rows - 1) // rows
    cdef intp_t c, j, start
    cdef unsigned int fp_mode
    cdef double loss
    for c in prange(n_chunks, num_threads=n_threads, schedule="dynamic"):
        start = c * rows
        fp_mode = flush_denormals()
        chunk_loss[c] = _loss_and_grad(
            m, X, lengths, batch + start, min(rows, n_batch - start), y,
            sample_weight, loss_scale, params, chunk_grads + c * n_params,
            workspace + threadid() * ws_stride)
        restore_fp_mode(fp_mode)
    memcpy(grad_out, chunk_grads, n_params * sizeof(floating))
    loss = chunk_loss[0]
    for c in range(1, n_chunks):
        loss += chunk_loss[c]
        for j in range(n_params):
            grad_out[j] += chunk_grads[c * n_params + j]
    return loss


def loss_and_grad(
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] batch,
    const intp_t[::1] y,
    const floating[::1] sample_weight,
    double loss_scale,
    const floating[::1] params,
    floating[::1] grad_out,
    floating[:, ::1] chunk_grads,
    floating[:, ::1] workspace,
    int cell,
    bint relu,
    intp_t[::1] hidden,
    intp_t n_dirs,
    intp_t n_classes,
    intp_t truncate,
    double dropout,
    uint64_t seed,
    int n_threads,
):
    """Loss of the minibatch ``batch`` and its gradient, written to ``grad_out``.

    ``batch`` holds indices into X sorted by decreasing length. The loss is
    sum_i w_i CE_i * loss_scale. ``truncate`` is the number of steps
    backpropagated per sequence (>= the longest sequence means full BPTT).
    ``sample_weight`` may be None. ``chunk_grads`` (n_chunks, P) and
    ``workspace`` (threads, workspace_size(..., chunk_rows(len(batch)), ...,
    True)) are scratch; at most ``workspace.shape[0]`` threads run. Every
    argument is validated by the caller.
    """
    cdef Model m = _model(cell, relu, hidden, n_dirs, X.shape[1], X.shape[2],
                          n_classes, truncate, dropout, seed, floating is float)
    cdef double[::1] chunk_loss = np.empty(chunk_grads.shape[0])
    cdef const floating* weights = NULL
    cdef double loss
    if sample_weight is not None:
        weights = &sample_weight[0]
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        loss = _minibatch(&m, &X[0, 0, 0], &lengths[0], &batch[0], batch.shape[0],
                          &y[0], weights, loss_scale, &params[0], params.shape[0],
                          &grad_out[0], &chunk_grads[0, 0], &workspace[0, 0],
                          workspace.shape[1], &chunk_loss[0], n_threads)
    return loss


cdef void _sort_by_length(const intp_t* lengths, intp_t max_length,
                          const intp_t* indices, intp_t n, intp_t* slots,
                          intp_t* out) noexcept nogil:
    """out = indices ordered by decreasing length, ties in their given order
    (a counting sort; slots is scratch of max_length + 2 entries)."""
    cdef intp_t i, j
    memset(slots, 0, (max_length + 2) * sizeof(intp_t))
    for i in range(n):
        slots[max_length - lengths[indices[i]] + 1] += 1
    for i in range(1, max_length + 2):
        slots[i] += slots[i - 1]
    for i in range(n):
        j = max_length - lengths[indices[i]]
        out[slots[j]] = indices[i]
        slots[j] += 1


def sort_by_length(const intp_t[::1] lengths):
    """Every index of ``lengths`` (each in [0, max]), by decreasing length,
    ties in index order: the order the kernels take minibatches in."""
    cdef intp_t i, n = lengths.shape[0], max_length = 0
    cdef intp_t[::1] indices = np.arange(n, dtype=np.intp)
    cdef intp_t[::1] out = np.empty(n, dtype=np.intp)
    cdef intp_t[::1] slots
    for i in range(n):
        max_length = max(max_length, lengths[i])
    slots = np.empty(max_length + 2, dtype=np.intp)
    if n:
        _sort_by_length(&lengths[0], max_length, &indices[0], n, &slots[0], &out[0])
    return np.asarray(out)


cdef enum:
    SGD = 0
    ADAM = 1
    RMSPROP = 2

# The codes the Python layer passes as `cell` and `solver`.
cell_codes = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
solver_codes = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP}


def train_epoch(
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] y,
    const floating[::1] sample_weight,
    const intp_t[::1] order,
    intp_t batch_size,
    floating[::1] params,
    floating[::1] grad,
    floating[:, ::1] chunk_grads,
    floating[:, ::1] workspace,
    const floating[::1] l2_mask,
    double alpha,
    double clip_norm,
    int solver,
    const double[::1] solver_params,
    floating[::1] state_a,
    floating[::1] state_b,
    intp_t n_steps_done,
    const uint64_t[::1] seeds,
    int cell,
    bint relu,
    intp_t[::1] hidden,
    intp_t n_dirs,
    intp_t n_classes,
    intp_t truncate,
    double dropout,
    int n_threads,
):
    """Train one epoch in place: for each minibatch ``order[k:k + batch_size]``
    the forward and backward pass, the L2 penalty (on the entries where
    ``l2_mask`` is 1; data and penalty both divided by the minibatch's weight
    sum), clipping to global norm ``clip_norm`` (<= 0: none) and one step of
    ``solver`` (0 SGD, 1 Adam, 2 RMSProp) with ``solver_params``:

    * SGD: (learning_rate, momentum, nesterov); state_a is the velocity;
    * Adam: (learning_rate, beta_1, beta_2, epsilon); state_a, state_b are the
      first and second moments; ``n_steps_done`` steps were taken before;
    * RMSProp: (learning_rate, rho, epsilon); state_a is the square average.

    ``seeds`` holds each minibatch's dropout seed (empty without dropout).
    Returns (sum of minibatch loss x weight sum, sum of weight sums, steps
    taken, index of the minibatch whose loss or gradient was not finite, or -1).
    Sequences of X shorter than X.shape[1] are fine; the scratch buffers must
    fit the largest minibatch (``workspace_size`` and ``chunk_rows``); at
    most ``workspace.shape[0]`` threads run.
    """
    cdef Model m = _model(cell, relu, hidden, n_dirs, X.shape[1], X.shape[2],
                          n_classes, truncate, dropout, 0, floating is float)
    cdef intp_t n = order.shape[0], P = params.shape[0], T = X.shape[1]
    cdef intp_t start, n_batch, i, j, k = 0, steps = 0, diverged = -1
    cdef intp_t[::1] batch = np.empty(min(batch_size, n), dtype=np.intp)
    cdef intp_t[::1] slots = np.empty(T + 2, dtype=np.intp)
    cdef double[::1] chunk_loss = np.empty(chunk_grads.shape[0])
    cdef const floating* weights = NULL
    cdef double weight_sum, loss, total_loss = 0, total_weight = 0, sq, coef
    cdef floating p
    if sample_weight is not None:
        weights = &sample_weight[0]
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        start = 0
        while start < n:
            n_batch = min(batch_size, n - start)
            _sort_by_length(&lengths[0], T, &order[start], n_batch, &slots[0], &batch[0])
            weight_sum = n_batch
            if weights != NULL:
                weight_sum = 0
                for i in range(n_batch):
                    weight_sum += weights[batch[i]]
            start += n_batch
            k += 1
            if weight_sum <= 0:
                continue
            if dropout > 0:
                m.seed = seeds[k - 1]
            loss = _minibatch(&m, &X[0, 0, 0], &lengths[0], &batch[0], n_batch, &y[0],
                              weights, 1.0 / weight_sum, &params[0], P, &grad[0],
                              &chunk_grads[0, 0], &workspace[0, 0], workspace.shape[1],
                              &chunk_loss[0], n_threads)
            # The L2 penalty, scaled like the data term (by the minibatch's
            # weight sum), so a sample weight of 2 equals a duplicated sample.
            if alpha > 0:
                sq = 0
                coef = alpha / weight_sum
                for j in range(P):
                    p = params[j] * l2_mask[j]
                    sq += <double> p * p
                    grad[j] += <floating> coef * p
                loss += 0.5 * coef * sq
            sq = 0
            for j in range(P):
                sq += <double> grad[j] * grad[j]
            if not (isfinite(loss) and isfinite(sq)):
                diverged = k - 1
                break
            if clip_norm > 0 and sq > clip_norm * clip_norm:
                coef = clip_norm / sqrt(sq)
                for j in range(P):
                    grad[j] *= <floating> coef
            steps += 1
            _solver_step(solver, &solver_params[0], n_steps_done + steps, &params[0],
                         &grad[0], &state_a[0], &state_b[0], P)
            total_loss += loss * weight_sum
            total_weight += weight_sum
    return total_loss, total_weight, steps, diverged


cdef void _solver_step(int solver, const double* hyper, intp_t t, floating* params,
                       const floating* grad, floating* state_a, floating* state_b,
                       intp_t P) noexcept nogil:
    """One optimizer step over the flat parameter vector (see train_epoch)."""
    cdef intp_t j
    cdef floating lr = hyper[0], a = hyper[1], b, eps, step, v, one = 1
    if solver == SGD:
        # v <- momentum v - lr g; Nesterov looks ahead along the new v.
        for j in range(P):
            v = a * state_a[j] - lr * grad[j]
            state_a[j] = v
            params[j] += a * v - lr * grad[j] if hyper[2] else v
    elif solver == ADAM:
        # Bias correction folded into the step size.
        b = hyper[2]
        eps = hyper[3]
        step = hyper[0] * sqrt(1 - pow(hyper[2], <double> t)) / (1 - pow(hyper[1], <double> t))
        for j in range(P):
            state_a[j] = a * state_a[j] + (one - a) * grad[j]
            state_b[j] = b * state_b[j] + (one - b) * grad[j] * grad[j]
            params[j] -= step * state_a[j] / (sqrt_(state_b[j]) + eps)
    else:
        # RMSProp: divide by a running RMS of the recent gradients.
        eps = hyper[2]
        for j in range(P):
            state_a[j] = a * state_a[j] + (one - a) * grad[j] * grad[j]
            params[j] -= lr * grad[j] / (sqrt_(state_a[j]) + eps)


def forward(
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] batch,
    const floating[::1] params,
    floating[:, ::1] logits_out,
    floating[:, ::1] workspace,
    int cell,
    bint relu,
    intp_t[::1] hidden,
    intp_t n_dirs,
    intp_t n_classes,
    int n_threads,
):
    """Logits of the samples ``batch`` (sorted by decreasing length), written
    to ``logits_out[k]`` for sample ``batch[k]``. ``workspace`` is (threads,
    workspace_size(..., False)); at most ``workspace.shape[0]`` threads run."""
    cdef Model m = _model(cell, relu, hidden, n_dirs, X.shape[1], X.shape[2],
                          n_classes, BLOCK_STEPS, 0.0, 0, floating is float)
    cdef intp_t n_batch = batch.shape[0], chunk_rows = _chunk_rows(n_batch)
    cdef intp_t n_chunks = (n_batch + chunk_rows - 1) // chunk_rows
    cdef intp_t k, start
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        for k in prange(n_chunks, num_threads=n_threads, schedule="dynamic"):
            start = k * chunk_rows
            _chunk_logits(&m, &X[0, 0, 0], &lengths[0], &batch[start],
                          min(chunk_rows, n_batch - start), &params[0],
                          &workspace[threadid(), 0], &logits_out[start, 0])


cdef void _chunk_logits(const Model* m, const floating* X, const intp_t* lengths,
                        const intp_t* samples, intp_t n_rows, const floating* params,
                        floating* ws, floating* logits_out) noexcept nogil:
    cdef Chunk c
    cdef unsigned int fp_mode = flush_denormals()
    cdef Layout w = _forward(m, X, lengths, samples, n_rows, params, ws, False, &c)
    restore_fp_mode(fp_mode)
    memcpy(logits_out, ws + w.logits, n_rows * m.n_classes * sizeof(floating))
