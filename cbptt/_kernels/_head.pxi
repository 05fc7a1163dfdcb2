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
# then out = head_in @ weight_out^T + bias_out. The loss (_losses.pxd) turns
# out into d loss / d out; backward, the linear map forms the gradients of
# weight_out and bias_out and d_head_in, which enters the core at each
# sequence's last step (last) or at every valid step (mean, max).
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


cdef void _head_output(const Model* m, const Layout* w, const Chunk* c,
                       const intp_t* lengths, const floating* params,
                       floating* ws) noexcept nogil:
    """Finish head_in after the chunk's last segment c and form the output
    out = head_in @ weight_out^T + bias_out."""
    cdef intp_t i, d, j, F = _head_size(m), H = m.hidden[m.n_layers - 1]
    cdef intp_t top = (m.n_layers - 1) * m.n_dirs
    cdef floating* head_in = ws + w.head_in
    cdef floating scale
    if m.head == HEAD_LAST:
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
    gemm(False, True, c.n_rows, m.n_outputs, F, 1, head_in, F, params + m.head_params,
         F, 0, ws + w.out, m.n_outputs)
    add_bias_rows(ws + w.out, params + m.head_params + m.n_outputs * F, c.n_rows,
                  m.n_outputs)


cdef double _loss(const Model* m, const Layout* w, const Chunk* c, const Data* data,
                  double loss_scale, floating* ws) noexcept nogil:
    """sum_i w_i l_i * loss_scale over the chunk's rows; the output is
    overwritten with d loss / d out (_losses.pxd)."""
    cdef intp_t i, sample, C = m.n_outputs
    cdef floating* out = ws + w.out
    cdef const floating* weights = <const floating*> data.sample_weight
    cdef const floating* targets = <const floating*> data.targets
    cdef floating weight = 1
    cdef double loss = 0.0
    for i in range(c.n_rows):
        sample = c.samples[i]
        if weights != NULL:
            weight = weights[sample]
        if m.loss == CROSS_ENTROPY:
            loss += weight * cross_entropy(out + i * C, C, data.labels[sample], weight,
                                           loss_scale)
        else:
            loss += weight * squared_error(out + i * C, C, targets + sample * C, weight,
                                           loss_scale)
    return loss * loss_scale


cdef const floating* _head_backward(const Model* m, const Layout* w, const Chunk* c,
                                    const intp_t* lengths, const floating* params,
                                    floating* grad, floating* ws) noexcept nogil:
    """Backprop from d loss / d out into weight_out, bias_out and the top
    layer's outputs. Returns the gradient that enters each sequence at its
    last step (last), or NULL after writing d_out of the top blocks at every
    valid step (mean, max)."""
    cdef intp_t i, d, s, t, j, L, F = _head_size(m), H = m.hidden[m.n_layers - 1]
    cdef intp_t T1 = w.n_steps1, top = (m.n_layers - 1) * m.n_dirs
    cdef const floating* d_output = ws + w.out
    cdef floating* d_head_in = ws + w.d_head_in
    cdef const floating* g
    cdef const floating* pooled
    cdef const floating* hs
    cdef floating* d_out
    cdef floating scale

    # dW_out = d_output^T head_in, db_out = column sums, and backprop into
    # what the head read: d_head_in = d_output @ W_out.
    gemm(True, False, m.n_outputs, F, c.n_rows, 1, d_output, m.n_outputs,
         ws + w.head_in, F, 0, grad + m.head_params, F)
    column_sums(d_output, c.n_rows, m.n_outputs, grad + m.head_params + m.n_outputs * F)
    gemm(False, False, c.n_rows, F, m.n_outputs, 1, d_output, m.n_outputs,
         params + m.head_params, F, 0, d_head_in, F)
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
