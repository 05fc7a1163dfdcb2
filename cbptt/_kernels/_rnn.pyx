# Elman RNN (tanh or relu), many-to-one, softmax cross-entropy: forward and
# backward through time for one minibatch.
#
# Why: this is the hot loop of training. The minibatch arrives as indices into
# the padded data set, sorted by decreasing length, and is cut into chunks of
# CHUNK_SIZE rows run in parallel (OpenMP) with single-threaded BLAS. Inside a
# chunk everything is laid out (row, step, unit) with step 0 holding h_0 = 0:
#
#   x_ws  (rows, S + 1, D)   inputs shifted one step, zero padded
#   hs    (rows, S + 1, H)   h_s = f(W_ih x_s + b_ih + W_hh h_{s-1} + b_hh)
#   d_pre (rows, S + 1, H)   d loss / d (pre-activation at step s), zero where unused
#
# so the input projection, dW_ih and dW_hh are each ONE GEMM over all steps
# (dW_hh pairs row r + 1 of d_pre with row r of hs), and step s only touches the
# prefix of rows whose sequences are at least s long: no work on padding.
# S is the longest sequence of the chunk.
#
# Parameters are one flat vector in PyTorch's state_dict order:
#   weight_ih_l0 (H, D), weight_hh_l0 (H, H), bias_ih_l0 (H), bias_hh_l0 (H),
#   weight_out (C, H), bias_out (C)

import numpy as np

from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cbptt._kernels._common cimport (
    CHUNK_SIZE, add_bias_rows, column_sums, floating, gather_time_shifted, gemm,
    intp_t, softmax_cross_entropy, tanh_,
)


cdef struct Dims:
    intp_t n_features      # D
    intp_t n_hidden        # H
    intp_t n_classes       # C
    intp_t x_stride        # elements between consecutive samples of X
    bint relu
    intp_t truncate        # backward runs over each sequence's last `truncate` steps


cdef struct Layout:
    # Offsets (in elements) of one chunk's buffers in its workspace.
    intp_t n_steps1        # S + 1
    intp_t hs
    intp_t d_pre
    intp_t h_last          # (rows, H)
    intp_t dh_last         # (rows, H)
    intp_t dh              # (rows, H)
    intp_t logits          # (rows, C), overwritten by d loss / d logits
    intp_t bias            # (H,) bias_ih + bias_hh
    intp_t end


cdef inline Layout _layout(intp_t n_rows, intp_t n_steps, intp_t D, intp_t H,
                           intp_t C) noexcept nogil:
    cdef Layout w
    w.n_steps1 = n_steps + 1
    w.hs = n_rows * w.n_steps1 * D              # x_ws starts at 0
    w.d_pre = w.hs + n_rows * w.n_steps1 * H
    w.h_last = w.d_pre + n_rows * w.n_steps1 * H
    w.dh_last = w.h_last + n_rows * H
    w.dh = w.dh_last + n_rows * H
    w.logits = w.dh + n_rows * H
    w.bias = w.logits + n_rows * C
    w.end = w.bias + H
    return w


def chunk_size():
    return CHUNK_SIZE


def n_params(intp_t n_features, intp_t n_hidden, intp_t n_classes):
    return n_hidden * (n_features + n_hidden + 2) + n_classes * (n_hidden + 1)


def workspace_size(intp_t n_rows, intp_t max_steps, intp_t n_features,
                   intp_t n_hidden, intp_t n_classes):
    """Elements of scratch memory a chunk of n_rows sequences needs."""
    return _layout(n_rows, max_steps, n_features, n_hidden, n_classes).end


cdef Layout _forward(
    const floating* X, const intp_t* lengths, const intp_t* rows, intp_t n_rows,
    const floating* params, floating* ws, const Dims* d,
) noexcept nogil:
    """Run the chunk forward; leave hs, h_last and logits in the workspace."""
    cdef intp_t D = d.n_features, H = d.n_hidden, C = d.n_classes
    cdef intp_t S = lengths[rows[0]]
    cdef Layout w = _layout(n_rows, S, D, H, C)
    cdef intp_t T1 = w.n_steps1
    cdef const floating* weight_ih = params
    cdef const floating* weight_hh = weight_ih + H * D
    cdef const floating* bias_ih = weight_hh + H * H
    cdef const floating* bias_hh = bias_ih + H
    cdef const floating* weight_out = bias_hh + H
    cdef const floating* bias_out = weight_out + C * H
    cdef floating* x_ws = ws
    cdef floating* hs = ws + w.hs
    cdef floating* h_last = ws + w.h_last
    cdef floating* logits = ws + w.logits
    cdef floating* bias = ws + w.bias
    cdef floating* h
    cdef floating v
    cdef intp_t i, j, s, n_active = n_rows

    gather_time_shifted(X, d.x_stride, D, lengths, rows, n_rows, S, x_ws)
    # Input projection for every step at once: hs = x_ws @ weight_ih^T.
    gemm(False, True, n_rows * T1, H, D, 1, x_ws, D, weight_ih, D, 0, hs, H)
    for j in range(H):
        bias[j] = bias_ih[j] + bias_hh[j]
    for s in range(1, S + 1):
        while lengths[rows[n_active - 1]] < s:
            n_active -= 1
        if s > 1:
            # hs[:, s] += h_{s-1} @ weight_hh^T  (h_0 = 0 needs no product)
            gemm(False, True, n_active, H, H, 1, hs + (s - 1) * H, T1 * H,
                 weight_hh, H, 1, hs + s * H, T1 * H)
        for i in range(n_active):
            h = hs + (i * T1 + s) * H
            if d.relu:
                for j in range(H):
                    v = h[j] + bias[j]
                    h[j] = v if v > 0 else 0
            else:
                for j in range(H):
                    h[j] = tanh_(h[j] + bias[j])

    for i in range(n_rows):
        memcpy(h_last + i * H, hs + (i * T1 + lengths[rows[i]]) * H, H * sizeof(floating))
    gemm(False, True, n_rows, C, H, 1, h_last, H, weight_out, H, 0, logits, C)
    add_bias_rows(logits, bias_out, n_rows, C)
    return w


cdef double _loss_and_grad(
    const floating* X, const intp_t* lengths, const intp_t* rows, intp_t n_rows,
    const intp_t* y, const floating* sample_weight, double loss_scale,
    const floating* params, floating* grad, floating* ws, const Dims* d,
) noexcept nogil:
    """Forward, loss and backward through time for one chunk; grad is overwritten."""
    cdef intp_t D = d.n_features, H = d.n_hidden, C = d.n_classes
    cdef Layout w = _forward(X, lengths, rows, n_rows, params, ws, d)
    cdef intp_t S = w.n_steps1 - 1, T1 = w.n_steps1
    cdef const floating* weight_hh = params + H * D
    cdef const floating* weight_out = weight_hh + H * H + 2 * H
    cdef floating* grad_weight_ih = grad
    cdef floating* grad_weight_hh = grad_weight_ih + H * D
    cdef floating* grad_bias_ih = grad_weight_hh + H * H
    cdef floating* grad_bias_hh = grad_bias_ih + H
    cdef floating* grad_weight_out = grad_bias_hh + H
    cdef floating* grad_bias_out = grad_weight_out + C * H
    cdef floating* x_ws = ws
    cdef floating* hs = ws + w.hs
    cdef floating* d_pre = ws + w.d_pre
    cdef floating* h_last = ws + w.h_last
    cdef floating* dh_last = ws + w.dh_last
    cdef floating* dh = ws + w.dh
    cdef floating* d_logits = ws + w.logits
    cdef const floating* h
    cdef floating* dp
    cdef double loss
    cdef intp_t i, j, s, n_active = 0, first_active = 0

    loss = softmax_cross_entropy(d_logits, n_rows, C, rows, y, sample_weight, loss_scale)

    # Backprop into the head: dW_out = d_logits^T h_last, db_out = sum of rows,
    # and into each sequence's last hidden state: dh_last = d_logits @ W_out.
    gemm(True, False, C, H, n_rows, 1, d_logits, C, h_last, H, 0, grad_weight_out, H)
    column_sums(d_logits, n_rows, C, grad_bias_out)
    gemm(False, False, n_rows, H, C, 1, d_logits, C, weight_out, H, 0, dh_last, H)

    memset(d_pre, 0, n_rows * T1 * H * sizeof(floating))
    for s in range(S, 0, -1):
        # Sequences whose last step is s enter the backward pass here.
        while n_active < n_rows and lengths[rows[n_active]] >= s:
            memcpy(dh + n_active * H, dh_last + n_active * H, H * sizeof(floating))
            n_active += 1
        # Truncated BPTT: a sequence of length L is backpropagated over steps
        # L - truncate + 1 .. L only; rows are sorted, so those still inside
        # their window form the range [first_active, n_active).
        while first_active < n_active and lengths[rows[first_active]] > s + d.truncate - 1:
            first_active += 1
        # Backprop through the nonlinearity: d_pre = dh * f'(pre), with f'
        # read from the stored output (tanh' = 1 - h^2, relu' = [h > 0]).
        for i in range(first_active, n_active):
            h = hs + (i * T1 + s) * H
            dp = d_pre + (i * T1 + s) * H
            if d.relu:
                for j in range(H):
                    dp[j] = dh[i * H + j] if h[j] > 0 else 0
            else:
                for j in range(H):
                    dp[j] = dh[i * H + j] * (1 - h[j] * h[j])
        if s > 1:
            # Backprop into h_{s-1}: dh = d_pre_s @ W_hh.
            gemm(False, False, n_active - first_active, H, H,
                 1, d_pre + (first_active * T1 + s) * H, T1 * H, weight_hh, H,
                 0, dh + first_active * H, H)

    # Weight gradients, one GEMM each over all (row, step) pairs.
    gemm(True, False, H, D, n_rows * T1, 1, d_pre, H, x_ws, D, 0, grad_weight_ih, D)
    gemm(True, False, H, H, n_rows * T1 - 1, 1, d_pre + H, H, hs, H, 0, grad_weight_hh, H)
    column_sums(d_pre, n_rows * T1, H, grad_bias_ih)
    memcpy(grad_bias_hh, grad_bias_ih, H * sizeof(floating))
    return loss


cdef inline Dims _dims(intp_t n_timesteps, intp_t n_features, intp_t n_hidden,
                       intp_t n_classes, bint relu, intp_t truncate) noexcept:
    cdef Dims d
    d.n_features = n_features
    d.n_hidden = n_hidden
    d.n_classes = n_classes
    d.x_stride = n_timesteps * n_features
    d.relu = relu
    d.truncate = truncate
    return d


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
    intp_t n_hidden,
    intp_t n_classes,
    bint relu,
    intp_t truncate,
    int n_threads,
):
    """Loss of the minibatch ``batch`` and its gradient, written to ``grad_out``.

    ``batch`` holds indices into X sorted by decreasing length. The loss is
    sum_i w_i CE_i * loss_scale. ``truncate`` is the number of steps
    backpropagated per sequence (>= the longest sequence means full BPTT).
    ``sample_weight`` may be None. ``chunk_grads`` (n_chunks, P) and
    ``workspace`` (n_chunks, workspace_size(CHUNK_SIZE, ...)) are scratch.
    Every argument is validated by the caller.
    """
    cdef Dims d = _dims(X.shape[1], X.shape[2], n_hidden, n_classes, relu, truncate)
    cdef intp_t n_batch = batch.shape[0], n_params = params.shape[0]
    cdef intp_t n_chunks = (n_batch + CHUNK_SIZE - 1) // CHUNK_SIZE
    cdef intp_t c, j, start
    cdef const floating* weights = NULL
    cdef double[::1] chunk_loss = np.zeros(n_chunks)
    cdef double loss
    if sample_weight is not None:
        weights = &sample_weight[0]
    with nogil:
        for c in prange(n_chunks, num_threads=n_threads, schedule="dynamic"):
            start = c * CHUNK_SIZE
            chunk_loss[c] = _loss_and_grad(
                &X[0, 0, 0], &lengths[0], &batch[start],
                min(CHUNK_SIZE, n_batch - start), &y[0], weights, loss_scale,
                &params[0], &chunk_grads[c, 0], &workspace[c, 0], &d)
        # Sum the chunks in a fixed order: bit-identical for any thread count.
        memcpy(&grad_out[0], &chunk_grads[0, 0], n_params * sizeof(floating))
        loss = chunk_loss[0]
        for c in range(1, n_chunks):
            loss += chunk_loss[c]
            for j in range(n_params):
                grad_out[j] += chunk_grads[c, j]
    return loss


def forward(
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] batch,
    const floating[::1] params,
    floating[:, ::1] logits_out,
    floating[:, ::1] workspace,
    intp_t n_hidden,
    intp_t n_classes,
    bint relu,
    int n_threads,
):
    """Logits of the samples ``batch`` (sorted by decreasing length), written
    to ``logits_out[k]`` for sample ``batch[k]``."""
    cdef Dims d = _dims(X.shape[1], X.shape[2], n_hidden, n_classes, relu, 0)
    cdef intp_t n_batch = batch.shape[0]
    cdef intp_t n_chunks = (n_batch + CHUNK_SIZE - 1) // CHUNK_SIZE
    cdef intp_t c, start, n_rows
    cdef Layout w
    with nogil:
        for c in prange(n_chunks, num_threads=n_threads, schedule="dynamic"):
            start = c * CHUNK_SIZE
            n_rows = min(CHUNK_SIZE, n_batch - start)
            w = _forward(&X[0, 0, 0], &lengths[0], &batch[start], n_rows,
                         &params[0], &workspace[c, 0], &d)
            memcpy(&logits_out[start, 0], &workspace[c, w.logits],
                   n_rows * n_classes * sizeof(floating))
