# One chunk of a minibatch from inputs to loss and gradient, the minibatch's
# chunks in parallel, and the entry points that run them: loss_and_grad (one
# minibatch) and forward (predict).
#
# Why: here the recurrent core (_core.pxi) and the head and loss (_head.pxi)
# meet. The minibatch arrives as indices into the padded data set, sorted by
# decreasing length, and is cut into chunks of `chunk_rows` rows run in
# parallel (OpenMP) with single-threaded BLAS. chunk_rows depends on the
# minibatch size, never on the thread count, and the chunks' gradients are
# summed in chunk order, so every bit of the result is the same for any
# number of threads.
#
# Only the steps the backward pass needs are kept: the last `truncate` of
# each sequence in training, the last BLOCK_STEPS in predict. The steps
# before them run forward only, BLOCK_STEPS at a time, carrying each layer's
# state into the next block's step 0 (and a pooled head's running sum or
# max), so a chunk's memory does not grow with T. The per-step head instead
# cuts every sequence into windows from its first step (of `truncate` steps
# in training, BLOCK_STEPS in predict) and runs each window forward, scores
# it and backpropagates through it, carrying the state, not the gradient,
# into the next. The reverse direction of a bidirectional network needs its
# whole sequence, so it keeps every step.

import numpy as np

from cpython.exc cimport PyErr_CheckSignals
from cython.parallel cimport prange, threadid

cdef enum:
    # Chunks per thread between two checks for Ctrl-C in forward: often
    # enough to stop within a fraction of a second, rarely enough to keep
    # every thread busy between them.
    CHUNKS_PER_SIGNAL_CHECK = 8


cdef Layout _chunk_forward(const Model* m, const Data* data, const intp_t* samples,
                           intp_t n_rows, const floating* params, floating* ws,
                           bint training, Chunk* c) noexcept nogil:
    """Run the chunk (samples sorted by decreasing length) through every layer
    and the head, keeping the activations of each sequence's last m.window
    steps; c becomes that segment. The head's output stays in ws."""
    cdef Layout w
    cdef const floating* X = <const floating*> data.X
    cdef const intp_t* lengths = data.lengths
    cdef intp_t i, L, start
    cdef intp_t prefix = lengths[samples[0]] - m.window   # the longest one
    c.samples = samples
    w = _layout(n_rows, 0, m, False)
    _pack_forward_weights(m, &w, params, ws)
    _head_start(m, &w, n_rows, ws)
    if prefix > 0:
        # The steps before each window, forward only, BLOCK_STEPS at a time;
        # the rows whose prefix reaches a block are the first c.n_rows.
        memset(ws, 0, w.head_in * sizeof(floating))     # the carried states
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
            if _pooled(m):
                _head_accumulate(m, &w, c, ws)
            start += BLOCK_STEPS
    for i in range(n_rows):
        L = lengths[samples[i]]
        c.length[i] = min(L, m.window)
        c.offset[i] = L - c.length[i]
    c.n_rows = n_rows
    w = _layout(n_rows, c.length[0], m, training)
    _forward_segment(m, &w, X, c, params, ws, training, prefix > 0)
    if _pooled(m):
        _head_accumulate(m, &w, c, ws)
    _head_output(m, &w, c, lengths, params, ws)
    return w


cdef double _chunk_loss_and_grad(const Model* m, const Data* data,
                                 const intp_t* samples, intp_t n_rows,
                                 const Windows* windows, floating* carry,
                                 double loss_scale, const floating* params,
                                 floating* grad, floating* ws) noexcept nogil:
    """Forward, loss and backward through time for one chunk; grad is
    overwritten. The per-step head runs the given windows (_chunk_windows)."""
    cdef Chunk c
    cdef Layout w
    cdef double loss
    cdef const floating* d_last
    if m.head == HEAD_SEQUENCE:
        return _chunk_windows(m, data, samples, n_rows, windows, carry, loss_scale,
                              params, grad, ws, NULL)
    w = _chunk_forward(m, data, samples, n_rows, params, ws, True, &c)
    loss = _loss(m, &w, &c, data, loss_scale, ws)
    d_last = _head_backward(m, &w, &c, data.lengths, params, grad, ws, False)
    _backward_stack(m, &w, &c, params, grad, ws, d_last, False)
    return loss


cdef struct Windows:
    # Which windows of m.window steps, counted from each sequence's first
    # step, a per-step head runs: n from first on.
    intp_t first
    intp_t n


cdef double _chunk_windows(const Model* m, const Data* data, const intp_t* samples,
                           intp_t n_rows, const Windows* windows, floating* carry,
                           double loss_scale, const floating* params, floating* grad,
                           floating* ws, floating* out) noexcept nogil:
    """The per-step head over windows of m.window steps of a chunk (samples
    sorted by decreasing length). Training (grad not NULL): each window
    forward, scored and backpropagated, its gradient added to grad (which is
    overwritten first); the state entering a window is a constant, carried
    from the one before. Predict: every step's output goes to out, (samples,
    n_timesteps, n_outputs). The state enters from carry (rows,
    Model.state_size) when the first window is not the sequences' first, and
    is left there; carry may be NULL when every window runs here."""
    cdef Chunk c
    cdef Layout w = _layout(n_rows, 0, m, False)
    cdef const floating* X = <const floating*> data.X
    cdef const intp_t* lengths = data.lengths
    cdef intp_t i, s, k, start, C = m.n_outputs
    cdef bint training = grad != NULL
    cdef double loss = 0
    c.samples = samples
    if training:
        memset(grad, 0, m.n_params * sizeof(floating))
    _pack_forward_weights(m, &w, params, ws)
    if windows.first > 0:
        _move_state(m, &w, n_rows, carry, ws, False)
    for k in range(windows.first, windows.first + windows.n):
        start = k * m.window
        c.n_rows = 0
        while c.n_rows < n_rows and lengths[samples[c.n_rows]] > start:
            i = c.n_rows
            c.length[i] = min(lengths[samples[i]] - start, m.window)
            c.offset[i] = start
            c.n_rows += 1
        if c.n_rows == 0:
            break
        w = _layout(n_rows, c.length[0], m, training)
        _forward_segment(m, &w, X, &c, params, ws, training, start > 0)
        _head_output(m, &w, &c, lengths, params, ws)
        if training:
            loss += _loss(m, &w, &c, data, loss_scale, ws)
            _head_backward(m, &w, &c, lengths, params, grad, ws, True)
            _backward_stack(m, &w, &c, params, grad, ws, NULL, True)
        else:
            for i in range(c.n_rows):
                for s in range(1, c.length[i] + 1):
                    memcpy(out + (samples[i] * m.n_timesteps + start + s - 1) * C,
                           ws + w.out + (i * w.n_steps1 + s) * C, C * sizeof(floating))
        _save_state(m, &w, &c, ws)
    if carry != NULL:
        _move_state(m, &w, n_rows, carry, ws, True)
    return loss


cdef inline intp_t _chunk_rows(intp_t n_batch) noexcept nogil:
    # Larger chunks make the per-step GEMMs more efficient (each call re-reads
    # the recurrent weights); two chunks per minibatch at least keep two cores
    # busy: 64 rows from 128 up, 32 below.
    return 64 if n_batch >= 128 else 32


def chunk_rows(intp_t n_batch):
    """Rows per OpenMP task for a minibatch of n_batch sequences: a function
    of the minibatch size only, never of the thread count, so every bit of
    the result is the same for any number of threads."""
    return _chunk_rows(n_batch)


cdef double _minibatch(const Model* m, const Data* data, const intp_t* batch,
                       intp_t n_batch, const Windows* windows, floating* carry,
                       double loss_scale, const floating* params, intp_t n_params,
                       floating* grad_out, floating* chunk_grads, floating* workspace,
                       intp_t ws_stride, double* chunk_loss, int n_threads) noexcept nogil:
    """Loss of one minibatch (sorted by decreasing length) and its gradient
    into grad_out: the chunks in parallel, then summed in chunk order, which
    makes the result bit-identical for any thread count. A per-step head
    runs ``windows``, carrying each row's state in carry (n_batch,
    Model.state_size; NULL when the windows start at the first step and the
    state is not needed after them)."""
    cdef intp_t rows = _chunk_rows(n_batch)
    cdef intp_t n_chunks = (n_batch + rows - 1) // rows
    cdef intp_t c, j, start
    cdef unsigned int fp_mode
    cdef double loss
    for c in prange(n_chunks, num_threads=n_threads, schedule="dynamic"):
        start = c * rows
        fp_mode = flush_denormals()
        chunk_loss[c] = _chunk_loss_and_grad(
            m, data, batch + start, min(rows, n_batch - start), windows,
            carry + start * m.state_size if carry != NULL else NULL, loss_scale,
            params, chunk_grads + c * n_params, workspace + threadid() * ws_stride)
        restore_fp_mode(fp_mode)
    memcpy(grad_out, chunk_grads, n_params * sizeof(floating))
    loss = chunk_loss[0]
    for c in range(1, n_chunks):
        loss += chunk_loss[c]
        for j in range(n_params):
            grad_out[j] += chunk_grads[c * n_params + j]
    return loss


cdef Data _data(const Model* m, const floating[:, :, ::1] X, const intp_t[::1] lengths,
                const intp_t[::1] labels, const floating[:, ::1] targets,
                const floating[::1] sample_weight) except *:
    """The samples for the kernels, with the targets the loss needs (the
    Python layer validated their values)."""
    cdef Data data
    cdef intp_t n = X.shape[0] * (X.shape[1] if m.head == HEAD_SEQUENCE else 1)
    if m.loss == CROSS_ENTROPY and (labels is None or labels.shape[0] != n):
        raise ValueError("cross-entropy needs one class index per sample (per "
                         "step with the per-step head, flattened)")
    if m.loss == SQUARED_ERROR and (targets is None or targets.shape[0] != n
                                    or targets.shape[1] != m.n_outputs):
        raise ValueError("squared error needs (n_samples, n_outputs) targets "
                         "((n_samples * n_timesteps, n_outputs) per step)")
    data.X = &X[0, 0, 0]
    data.lengths = &lengths[0]
    data.labels = &labels[0] if labels is not None else NULL
    data.targets = &targets[0, 0] if targets is not None else NULL
    data.sample_weight = &sample_weight[0] if sample_weight is not None else NULL
    return data


cdef void _check_window(const Model* m, intp_t truncate, intp_t n_timesteps) except *:
    if _pooled(m) and truncate < n_timesteps:
        raise ValueError("truncated BPTT is defined for the last-state and per-step "
                         "heads only")


def loss_and_grad(
    Spec spec,
    intp_t[::1] hidden,
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] batch,
    const intp_t[::1] labels,
    const floating[:, ::1] targets,
    const floating[::1] sample_weight,
    double loss_scale,
    const floating[::1] params,
    floating[::1] grad_out,
    floating[:, ::1] chunk_grads,
    floating[:, ::1] workspace,
    intp_t truncate,
    uint64_t seed,
    int n_threads,
):
    """Loss of the minibatch ``batch`` and its gradient, written to ``grad_out``.

    ``spec`` describes the network (Spec), ``hidden`` its layer sizes.
    ``batch`` holds indices into X sorted by decreasing length. The loss is
    sum_i w_i l_i * loss_scale (per-step head: sum_i w_i sum_t l_it *
    loss_scale), scored against ``labels`` (cross-entropy) or ``targets``
    (squared error; the other may be None; per step: flattened over samples
    and steps). ``truncate``: with the last-state head, the number of steps
    backpropagated per sequence; with the per-step head, the length of the
    windows the gradient does not cross; >= the longest sequence means full
    BPTT. ``sample_weight`` may be None; ``seed`` draws the dropout masks.
    ``chunk_grads`` (n_chunks, P) and ``workspace`` (threads,
    workspace_size(..., chunk_rows(len(batch)), ..., True)) are scratch; at
    most ``workspace.shape[0]`` threads run. The caller validated every
    value.
    """
    cdef Model m = _model(&spec, hidden, X.shape[1], truncate, seed, floating is float)
    cdef Data data = _data(&m, X, lengths, labels, targets, sample_weight)
    cdef double[::1] chunk_loss = np.empty(chunk_grads.shape[0])
    cdef double loss
    cdef Windows windows
    windows.first = 0
    windows.n = (lengths[batch[0]] + m.window - 1) // m.window
    _check_window(&m, truncate, X.shape[1])
    _check_scratch(&m, batch.shape[0], lengths[batch[0]], True, workspace.shape[1],
                   chunk_grads.shape[0])
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        loss = _minibatch(&m, &data, &batch[0], batch.shape[0], &windows, NULL,
                          loss_scale, &params[0], params.shape[0], &grad_out[0],
                          &chunk_grads[0, 0], &workspace[0, 0], workspace.shape[1],
                          &chunk_loss[0], n_threads)
    return loss


def forward(
    Spec spec,
    intp_t[::1] hidden,
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] batch,
    const floating[::1] params,
    floating[:, ::1] out,
    floating[:, ::1] workspace,
    int n_threads,
):
    """The head's output for the samples ``batch`` (sorted by decreasing
    length): logits for cross-entropy, predictions for squared error, written
    to ``out[k]`` for sample ``batch[k]``; with the per-step head, to
    ``out[sample * n_timesteps + t]`` for each valid step t of each sample
    (out is (n_samples * n_timesteps, n_outputs)). ``workspace`` is
    (threads, workspace_size(..., False)); at most ``workspace.shape[0]``
    threads run."""
    cdef Model m = _model(&spec, hidden, X.shape[1], BLOCK_STEPS, 0, floating is float)
    cdef Data data
    cdef intp_t n_batch = batch.shape[0], rows = _chunk_rows(n_batch)
    cdef intp_t n_chunks = (n_batch + rows - 1) // rows
    cdef intp_t k, start, first, last
    cdef intp_t group = CHUNKS_PER_SIGNAL_CHECK * max(n_threads, 1)
    data.X = &X[0, 0, 0]
    data.lengths = &lengths[0]
    _check_scratch(&m, n_batch, lengths[batch[0]], False, workspace.shape[1], 0)
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        first = 0
        while first < n_chunks:
            last = min(first + group, n_chunks)
            for k in prange(first, last, num_threads=n_threads, schedule="dynamic"):
                start = k * rows
                _chunk_output(&m, &data, &batch[start], min(rows, n_batch - start),
                              &params[0], &workspace[threadid(), 0],
                              &out[0, 0] if m.head == HEAD_SEQUENCE else &out[start, 0])
            first = last
            # Ctrl-C acts between groups of chunks of a long prediction.
            with gil:
                PyErr_CheckSignals()


cdef void _chunk_output(const Model* m, const Data* data, const intp_t* samples,
                        intp_t n_rows, const floating* params, floating* ws,
                        floating* out) noexcept nogil:
    cdef Chunk c
    cdef Layout w
    cdef Windows windows
    cdef unsigned int fp_mode = flush_denormals()
    if m.head == HEAD_SEQUENCE:
        windows.first = 0
        windows.n = (data.lengths[samples[0]] + m.window - 1) // m.window
        _chunk_windows(m, data, samples, n_rows, &windows, NULL, 0, params, NULL, ws,
                       out)
    else:
        w = _chunk_forward(m, data, samples, n_rows, params, ws, False, &c)
        memcpy(out, ws + w.out, n_rows * m.n_outputs * sizeof(floating))
    restore_fp_mode(fp_mode)


def workspace_size(Spec spec, intp_t[::1] hidden, intp_t n_rows, intp_t max_steps,
                   bint training, intp_t truncate, bint float32):
    """Elements of scratch memory one thread needs to run chunks of n_rows
    sequences of up to max_steps steps: forward and backward through the
    last ``truncate`` steps (training), or forward only (``truncate`` unused);
    float32 or float64."""
    cdef Model m = _model(&spec, hidden, max_steps,
                          truncate if training else BLOCK_STEPS, 0, float32)
    return _scratch_size(&m, n_rows, max_steps, training)


cdef intp_t _scratch_size(const Model* m, intp_t n_rows, intp_t max_steps,
                          bint training) noexcept nogil:
    """Elements one thread's workspace needs for chunks of n_rows sequences
    of up to max_steps steps: the kept window, or a forward-only block of
    the steps before it, whichever is larger."""
    cdef intp_t window = min(m.window, max_steps)
    cdef intp_t size = _layout(n_rows, window, m, training).end
    if max_steps > window and m.head != HEAD_SEQUENCE:
        size = max(size, _layout(n_rows, min(max_steps - window, BLOCK_STEPS), m,
                                 False).end)
    return size


cdef void _check_scratch(const Model* m, intp_t n_batch, intp_t max_steps,
                         bint training, intp_t workspace_row,
                         intp_t n_chunk_grads) except *:
    """CBPTT_DEBUG builds only: the scratch buffers the caller passed fit a
    minibatch of n_batch sequences of up to max_steps steps (a mistake in
    the Python layer otherwise, which the release build trusts)."""
    cdef intp_t rows, need
    if not CBPTT_DEBUG_BUILD or n_batch == 0:
        return
    rows = _chunk_rows(n_batch)
    if rows > MAX_CHUNK_ROWS:
        raise AssertionError(f"chunks of {rows} rows exceed MAX_CHUNK_ROWS")
    need = _scratch_size(m, min(rows, n_batch), max_steps, training)
    if workspace_row < need:
        raise AssertionError(f"a workspace row holds {workspace_row} elements; chunks "
                             f"of this minibatch need {need}")
    if training and n_chunk_grads < (n_batch + rows - 1) // rows:
        raise AssertionError(f"{n_chunk_grads} chunk gradients for "
                             f"{(n_batch + rows - 1) // rows} chunks")


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
