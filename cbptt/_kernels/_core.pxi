# The recurrent core: each layer and direction forward and backward through
# time over one segment of a chunk, the stack of layers in both directions,
# dropout between layers, and the state carried from segment to segment.
#
# Why: this is the hot loop of training, and it knows nothing of labels or
# losses. Forward, it turns a chunk's inputs into the top layer's output
# sequence (hs of the top blocks); backward, it takes the gradient into
# that sequence, either entering at each sequence's last step (a head that
# reads the last state) or at every step (d_out of the top blocks: a head
# that reads every step), and forms every weight gradient of the layers.
# The head and the loss live in _head.pxi and _losses.pxd.

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
                _mix(<uint64_t> c.samples[i]) + <uint64_t> (c.offset[i] + s))))
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
                          floating* ws, const floating* d_last,
                          intp_t d_last_stride, bint accumulate) noexcept nogil:
    """Backprop through time in block (k, d) into its weight gradients
    (added to them with accumulate) and, for k > 0, into d_inp. The gradient at hs enters at each sequence's last
    step (d_last, row i at d_last + i * d_last_stride) or, when d_last is
    NULL, at every step (d_out: from the layer above, or from a head that
    reads every step). None flows into the state at step 0 (zero, or
    carried: truncated BPTT)."""
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
            if d_last != NULL:
                memcpy(dh + n_active * H, d_last + n_active * d_last_stride,
                       H * sizeof(floating))
            else:
                memset(dh + n_active * H, 0, H * sizeof(floating))
            memset(dc + n_active * H, 0, H * sizeof(floating))
            n_active += 1
        _zero_rows(d_gates, GH, T1, s, n_active, n_rows)
        if m.cell == GRU:
            _zero_rows(d_gh, GH, T1, s, n_active, n_rows)
        if d_last == NULL:
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
                if accumulate:
                    grad_weight_ih[j * D_in + i] += ws[w.grad_ih_t + i * GH + j]
                else:
                    grad_weight_ih[j * D_in + i] = ws[w.grad_ih_t + i * GH + j]
    else:
        _product(small, GH, D_in, n_rows * T1, d_gates, GH, True, inp, False, inp, False,
                 accumulate, grad_weight_ih, D_in)
    _product(small, GH, H, n_rows * T1 - 1, d_gh + GH, GH, True, hs, False, hs, False,
             accumulate, grad_weight_hh, H)
    column_sums(d_gates, n_rows * T1, GH, grad_bias_ih, accumulate)
    if m.cell == GRU:
        column_sums(d_gh, n_rows * T1, GH, grad_bias_hh, accumulate)
    else:
        # Both biases enter the same pre-activation: equal gradients (so
        # are their sums over segments).
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


cdef void _move_state(const Model* m, const Layout* w, intp_t n_rows, floating* carry,
                      floating* ws, bint to_carry) noexcept nogil:
    """Copy the carried state of n_rows rows between the workspace and carry,
    (rows, Model.state_size): each block's h, then its c (LSTM)."""
    cdef intp_t b, i, H, pos = 0
    cdef floating* a
    cdef floating* row
    for b in range(m.n_layers * m.n_dirs):
        H = m.hidden[b // m.n_dirs]
        for i in range(n_rows):
            row = carry + i * m.state_size + pos
            a = ws + w.state_h[b] + i * H
            memcpy(row if to_carry else a, a if to_carry else row, H * sizeof(floating))
            if m.cell == LSTM:
                a = ws + w.state_c[b] + i * H
                memcpy(row + H if to_carry else a, a if to_carry else row + H,
                       H * sizeof(floating))
        pos += H * (2 if m.cell == LSTM else 1)


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


cdef void _backward_stack(const Model* m, const Layout* w, const Chunk* c,
                          const floating* params, floating* grad, floating* ws,
                          const floating* d_last, bint accumulate) noexcept nogil:
    """Backprop through every layer, top first, into grad (its layer blocks;
    added to them with accumulate).

    The gradient into the top layer's outputs enters at each sequence's last
    step (d_last: (rows, n_dirs H_last), each direction's block) or, when
    d_last is NULL, at every step, from d_out of the top blocks; each layer
    then hands the gradient of its input to the outputs of the layer below.
    """
    cdef intp_t T1 = w.n_steps1, k, d, b, H, D_in
    cdef intp_t top = m.n_layers - 1, H_top = m.hidden[top], F = _head_size(m)
    for k in range(top, -1, -1):
        for d in range(m.n_dirs):
            _layer_backward(m, w, k, d, c, params, grad, ws,
                            d_last + d * H_top if k == top and d_last != NULL else NULL,
                            F, accumulate)
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
                        c, T1, True, True)
        if m.dropout > 0:
            _dropout(m, k - 1, ws + w.d_inp[b], D_in, c, T1)
        for d in range(m.n_dirs):
            # Every valid step is written; d_out is read at valid steps only.
            _copy_steps(ws + w.d_inp[b], D_in, d * H, ws + w.d_out[b - m.n_dirs + d], H,
                        0, H, c, T1, d == 1, False)
