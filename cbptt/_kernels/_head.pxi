# The head and the loss: what the network outputs for each sequence, how it
# is scored, and the gradient that goes back into the recurrent core.
#
# Why: the recurrent core (_core.pxi) produces the top layer's output
# sequence; everything that depends on what y means happens here. A head
# reads that sequence into head_in, (rows, n_dirs H_last):
#
#   last: each direction's state after its last step (the forward state at
#         the sequence's last step, the reverse state after running back to
#         its first: PyTorch's h_n);
#   mean: the mean of the top layer's outputs over the sequence's valid steps;
#   max:  their elementwise max over the valid steps;
#
# then out = head_in @ weight_out^T + bias_out. The per-step head instead
# maps the top layer's output at every valid step, [h_forward, h_reverse]
# in forward time order, to an output of its own. The loss (_losses.pxd)
# turns out into d loss / d out; backward, the linear map forms the
# gradients of weight_out and bias_out and the gradient into what the head
# read, which enters the core at each sequence's last step (last) or at
# every valid step (mean, max, sequence).
#
# The pooled heads are streamed: each segment of a chunk adds its steps to
# head_in (_head_accumulate), so a prediction over long sequences needs no
# more memory than one segment. Order within a reverse direction does not
# matter to a mean or a max, so they read each direction's steps as stored.

from libc.math cimport INFINITY


cdef void _head_start(const Model* m, const Layout* w, intp_t n_rows,
                      floating* ws) noexcept nogil:
    """Set head_in to the identity of the pooling: 0 (mean) or -inf (max)."""
    cdef intp_t j
    cdef floating* head_in = ws + w.head_in
    if m.head == HEAD_MEAN:
        memset(head_in, 0, n_rows * _head_size(m) * sizeof(floating))
    elif m.head == HEAD_MAX:
        for j in range(n_rows * _head_size(m)):
            head_in[j] = -INFINITY


cdef void _head_accumulate(const Model* m, const Layout* w, const Chunk* c,
                           floating* ws) noexcept nogil:
    """Pool the valid steps of segment c of the top layer into head_in:
    their sum (mean) or their max (max)."""
    cdef intp_t i, d, s, j, T1 = w.n_steps1, H = m.hidden[m.n_layers - 1]
    cdef intp_t F = _head_size(m), top = (m.n_layers - 1) * m.n_dirs
    cdef const floating* h
    cdef floating* acc
    for d in range(m.n_dirs):
        for i in range(c.n_rows):
            acc = ws + w.head_in + i * F + d * H
            for s in range(1, c.length[i] + 1):
                h = ws + w.hs[top + d] + (i * T1 + s) * H
                if m.head == HEAD_MEAN:
                    for j in range(H):
                        acc[j] += h[j]
                else:
                    for j in range(H):
                        acc[j] = h[j] if h[j] > acc[j] else acc[j]


cdef const floating* _sequence_in(const Model* m, const Layout* w, const Chunk* c,
                                  floating* ws) noexcept nogil:
    """What the per-step head reads, (rows, S + 1, n_dirs H_last): the top
    block's hs, or both directions' in forward time order."""
    cdef intp_t d, H = m.hidden[m.n_layers - 1], top = (m.n_layers - 1) * m.n_dirs
    if m.n_dirs == 1:
        return ws + w.hs[top]
    memset(ws + w.seq_in, 0, c.n_rows * w.n_steps1 * 2 * H * sizeof(floating))
    for d in range(2):
        _copy_steps(ws + w.hs[top + d], H, 0, ws + w.seq_in, 2 * H, d * H, H, c,
                    w.n_steps1, d == 1, False)
    return ws + w.seq_in


cdef void _head_output(const Model* m, const Layout* w, const Chunk* c,
                       const intp_t* lengths, const floating* params,
                       floating* ws) noexcept nogil:
    """Finish head_in after the chunk's last segment c and form the output
    out = head_in @ weight_out^T + bias_out; the per-step head forms it at
    every step of the segment."""
    cdef intp_t i, d, j, F = _head_size(m), H = m.hidden[m.n_layers - 1]
    cdef intp_t top = (m.n_layers - 1) * m.n_dirs
    cdef floating* head_in = ws + w.head_in
    cdef floating scale
    cdef intp_t n_rows = c.n_rows
    if m.head == HEAD_SEQUENCE:
        head_in = <floating*> _sequence_in(m, w, c, ws)
        n_rows = c.n_rows * w.n_steps1
    elif m.head == HEAD_LAST:
        for i in range(c.n_rows):
            for d in range(m.n_dirs):
                memcpy(head_in + i * F + d * H,
                       ws + w.hs[top + d] + (i * w.n_steps1 + c.length[i]) * H,
                       H * sizeof(floating))
    elif m.head == HEAD_MEAN:
        for i in range(c.n_rows):
            scale = 1.0 / lengths[c.samples[i]]
            for j in range(F):
                head_in[i * F + j] *= scale
    gemm(False, True, n_rows, m.n_outputs, F, 1, head_in, F, params + m.head_params,
         F, 0, ws + w.out, m.n_outputs)
    add_bias_rows(ws + w.out, params + m.head_params + m.n_outputs * F, n_rows,
                  m.n_outputs)


cdef inline floating _point_loss(const Model* m, floating* z, const Data* data,
                                 intp_t target, floating weight,
                                 double loss_scale) noexcept nogil:
    """The loss of one output z against target number ``target`` (a sample,
    or a (sample, step) of per-step targets), unweighted; z becomes its
    gradient, weighted."""
    if m.loss == CROSS_ENTROPY:
        return cross_entropy(z, m.n_outputs, data.labels[target], weight, loss_scale)
    return <floating> squared_error(
        z, m.n_outputs, <const floating*> data.targets + target * m.n_outputs, weight,
        loss_scale)


cdef double _loss(const Model* m, const Layout* w, const Chunk* c, const Data* data,
                  double loss_scale, floating* ws) noexcept nogil:
    """sum_i w_i l_i * loss_scale over the chunk's rows (per-step head: sum_i
    w_i sum_t l_it over the segment's valid steps); the output is
    overwritten with d loss / d out (_losses.pxd), zero at the steps that
    have none."""
    cdef intp_t i, s, sample, C = m.n_outputs, T1 = w.n_steps1
    cdef floating* out = ws + w.out
    cdef const floating* weights = <const floating*> data.sample_weight
    cdef floating weight = 1
    cdef double loss = 0.0
    for i in range(c.n_rows):
        sample = c.samples[i]
        if weights != NULL:
            weight = weights[sample]
        if m.head != HEAD_SEQUENCE:
            loss += weight * _point_loss(m, out + i * C, data, sample, weight, loss_scale)
            continue
        memset(out + i * T1 * C, 0, C * sizeof(floating))
        for s in range(1, c.length[i] + 1):
            loss += weight * _point_loss(m, out + (i * T1 + s) * C, data,
                                         sample * m.n_timesteps + c.offset[i] + s - 1,
                                         weight, loss_scale)
        memset(out + (i * T1 + c.length[i] + 1) * C, 0,
               (T1 - 1 - c.length[i]) * C * sizeof(floating))
    return loss * loss_scale


cdef const floating* _head_backward(const Model* m, const Layout* w, const Chunk* c,
                                    const intp_t* lengths, const floating* params,
                                    floating* grad, floating* ws,
                                    bint accumulate) noexcept nogil:
    """Backprop from d loss / d out into weight_out, bias_out (added to them
    with accumulate) and the top layer's outputs. Returns the gradient that
    enters each sequence at its last step (last), or NULL after writing d_out
    of the top blocks at every valid step (mean, max, sequence)."""
    cdef intp_t i, d, s, t, j, L, F = _head_size(m), H = m.hidden[m.n_layers - 1]
    cdef intp_t T1 = w.n_steps1, top = (m.n_layers - 1) * m.n_dirs
    cdef intp_t n_rows = c.n_rows * T1 if m.head == HEAD_SEQUENCE else c.n_rows
    cdef const floating* d_output = ws + w.out
    cdef const floating* head_in = ws + w.head_in
    cdef floating* d_head_in = ws + w.d_head_in
    cdef const floating* g
    cdef const floating* pooled
    cdef const floating* hs
    cdef floating* d_out
    cdef floating scale

    if m.head == HEAD_SEQUENCE:
        # The head read every step: the top block's hs, or for two
        # directions seq_in, whose gradient is split between them below.
        head_in = ws + (w.hs[top] if m.n_dirs == 1 else w.seq_in)
        d_head_in = ws + (w.d_out[top] if m.n_dirs == 1 else w.d_seq_in)
    # dW_out = d_output^T head_in, db_out = column sums, and backprop into
    # what the head read: d_head_in = d_output @ W_out.
    gemm(True, False, m.n_outputs, F, n_rows, 1, d_output, m.n_outputs,
         head_in, F, 1 if accumulate else 0, grad + m.head_params, F)
    column_sums(d_output, n_rows, m.n_outputs, grad + m.head_params + m.n_outputs * F,
                accumulate)
    gemm(False, False, n_rows, F, m.n_outputs, 1, d_output, m.n_outputs,
         params + m.head_params, F, 0, d_head_in, F)
    if m.head == HEAD_SEQUENCE:
        if m.n_dirs == 2:
            for d in range(2):
                _copy_steps(d_head_in, F, d * H, ws + w.d_out[top + d], H, 0, H, c, T1,
                            d == 1, False)
        return NULL
    if m.head == HEAD_LAST:
        return d_head_in
    for d in range(m.n_dirs):
        d_out = ws + w.d_out[top + d]
        hs = ws + w.hs[top + d]
        for i in range(c.n_rows):
            L = c.length[i]
            g = d_head_in + i * F + d * H
            if m.head == HEAD_MEAN:
                # Backprop through the mean: every valid step gets g / L.
                scale = 1.0 / lengths[c.samples[i]]
                for s in range(1, L + 1):
                    for j in range(H):
                        d_out[(i * T1 + s) * H + j] = g[j] * scale
            else:
                # Backprop through the max: unit j's gradient goes to the
                # first step (in time order) that holds its max; the reverse
                # direction stores time backwards, so it is searched from
                # its last stored step.
                pooled = ws + w.head_in + i * F + d * H
                for s in range(1, L + 1):
                    memset(d_out + (i * T1 + s) * H, 0, H * sizeof(floating))
                for j in range(H):
                    for t in range(L):
                        s = L - t if d == 1 else t + 1
                        if hs[(i * T1 + s) * H + j] == pooled[j]:
                            d_out[(i * T1 + s) * H + j] = g[j]
                            break
    return NULL
