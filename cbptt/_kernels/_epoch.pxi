# The compiled training epoch: for each minibatch the forward and backward
# pass (_chunk.pxi), the L2 penalty, the checks for non-finite values,
# clipping to a global norm and one optimizer step, all over the flat
# parameter vector.
#
# Why: Python between minibatches cost more than a small model's minibatch,
# so the whole epoch is one nogil call; Python only draws the order and the
# dropout seeds. Settings arrive as named struct fields (dicts from
# cbptt._base and cbptt._optimizers).

from cpython.exc cimport PyErr_CheckSignals
from libc.math cimport isfinite, pow, sqrt

cdef enum:
    SGD = 0
    ADAM = 1
    RMSPROP = 2

# The codes the Python layer passes as Solver.kind.
solver_codes = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP}


cdef struct Schedule:
    # How the epoch walks the data and regularizes each step.
    intp_t batch_size
    intp_t truncate                 # steps backpropagated per sequence
    double alpha                    # L2 penalty on the entries where l2_mask is 1
    double clip_norm                # <= 0: no clipping


cdef struct Solver:
    # The optimizer and its hyperparameters (cbptt._optimizers); each solver
    # reads its own fields.
    int kind                        # SGD, ADAM or RMSPROP
    double learning_rate
    double momentum                 # SGD
    bint nesterov                   # SGD
    double beta_1                   # Adam
    double beta_2                   # Adam
    double rho                      # RMSProp
    double epsilon                  # Adam, RMSProp
    intp_t steps_done               # steps taken before this epoch (Adam's bias correction)


def train_epoch(
    Spec spec,
    intp_t[::1] hidden,
    const floating[:, :, ::1] X,
    const intp_t[::1] lengths,
    const intp_t[::1] labels,
    const floating[:, ::1] targets,
    const floating[::1] sample_weight,
    const intp_t[::1] order,
    Schedule schedule,
    Solver solver,
    floating[::1] params,
    floating[::1] state_a,
    floating[::1] state_b,
    floating[::1] grad,
    floating[:, ::1] chunk_grads,
    floating[:, ::1] workspace,
    const floating[::1] l2_mask,
    const uint64_t[::1] seeds,
    int n_threads,
):
    """Train one epoch in place: for each minibatch
    ``order[k:k + batch_size]`` the forward and backward pass, the L2 penalty
    (data and penalty both divided by the minibatch's weight sum), clipping
    and one step of the solver, which updates ``params`` and its state:
    SGD's velocity in state_a; Adam's first and second moments in state_a,
    state_b; RMSProp's square average in state_a.

    The network, data and targets are as in loss_and_grad. ``seeds`` holds
    each minibatch's dropout seed (empty without dropout). Returns (sum of
    minibatch loss x weight sum, sum of weight sums, steps taken, steps
    skipped because their gradient was not finite, index of the minibatch
    whose loss was not finite, or -1). The scratch buffers must fit the
    largest minibatch (``workspace_size`` and ``chunk_rows``); at most
    ``workspace.shape[0]`` threads run.
    """
    cdef Model m = _model(&spec, hidden, X.shape[1], schedule.truncate, 0,
                          floating is float)
    cdef Data data = _data(&m, X, lengths, labels, targets, sample_weight)
    cdef intp_t n = order.shape[0], P = params.shape[0], T = X.shape[1]
    cdef intp_t start, n_batch, j, k = 0, steps = 0, skipped = 0, diverged = -1
    cdef intp_t n_windows, window
    cdef intp_t[::1] batch = np.empty(min(schedule.batch_size, n), dtype=np.intp)
    cdef intp_t[::1] slots = np.empty(T + 2, dtype=np.intp)
    cdef double[::1] chunk_loss = np.empty(chunk_grads.shape[0])
    # The state each row carries from window to window (per-step head).
    cdef floating[::1] carry = np.empty(
        max(1, min(schedule.batch_size, n) * m.state_size),
        dtype=np.float32 if floating is float else np.float64)
    cdef const floating* weights = <const floating*> data.sample_weight
    cdef double weight_sum, loss, total_loss = 0, total_weight = 0, sq, coef
    cdef floating p
    cdef Windows windows
    _check_window(&m, schedule.truncate, T)
    if n:  # the full minibatches and the last, smaller one
        _check_scratch(&m, min(schedule.batch_size, n), T, True, workspace.shape[1],
                       chunk_grads.shape[0])
        _check_scratch(&m, n - (n - 1) // schedule.batch_size * schedule.batch_size, T,
                       True, workspace.shape[1], chunk_grads.shape[0])
    n_threads = min(n_threads, workspace.shape[0])
    with nogil:
        start = 0
        while start < n:
            n_batch = min(schedule.batch_size, n - start)
            _sort_by_length(&lengths[0], T, &order[start], n_batch, &slots[0], &batch[0])
            start += n_batch
            k += 1
            if m.dropout > 0:
                m.seed = seeds[k - 1]
            # One optimizer step per minibatch; per window of each sequence
            # with a per-step head, carrying the state between them.
            n_windows = 1
            if m.head == HEAD_SEQUENCE:
                n_windows = (lengths[batch[0]] + m.window - 1) // m.window
            windows.n = 1
            for window in range(n_windows):
                windows.first = window
                weight_sum = _weight_sum(&m, &lengths[0], weights, &batch[0], n_batch,
                                         window)
                if weight_sum <= 0:
                    continue
                loss = _minibatch(&m, &data, &batch[0], n_batch, &windows, &carry[0],
                                  1.0 / weight_sum, &params[0], P, &grad[0],
                                  &chunk_grads[0, 0], &workspace[0, 0],
                                  workspace.shape[1], &chunk_loss[0], n_threads)
                # The L2 penalty, scaled like the data term (by the weight
                # sum), so a sample weight of 2 equals a duplicated sample.
                if schedule.alpha > 0:
                    sq = 0
                    coef = schedule.alpha / weight_sum
                    for j in range(P):
                        p = params[j] * l2_mask[j]
                        sq += <double> p * p
                        grad[j] += <floating> coef * p
                    loss += 0.5 * coef * sq
                if not isfinite(loss):
                    diverged = k - 1
                    break
                total_loss += loss * weight_sum
                total_weight += weight_sum
                sq = 0
                for j in range(P):
                    sq += <double> grad[j] * grad[j]
                if not isfinite(sq):
                    # A finite loss whose gradient overflowed: exploding
                    # gradients through a long sequence, beyond the dtype's
                    # range before clipping could scale them. Skip the step,
                    # as mixed-precision training does; the caller counts.
                    skipped += 1
                else:
                    if schedule.clip_norm > 0 and sq > schedule.clip_norm * schedule.clip_norm:
                        coef = schedule.clip_norm / sqrt(sq)
                        for j in range(P):
                            grad[j] *= <floating> coef
                    steps += 1
                    _solver_step(&solver, solver.steps_done + steps, &params[0], &grad[0],
                                 &state_a[0], &state_b[0], P)
                # Ctrl-C acts between optimizer steps: KeyboardInterrupt
                # propagates from here, params as the last step left them.
                with gil:
                    PyErr_CheckSignals()
            if diverged >= 0:
                break
    return total_loss, total_weight, steps, skipped, diverged


cdef double _weight_sum(const Model* m, const intp_t* lengths, const floating* weights,
                        const intp_t* batch, intp_t n_batch, intp_t window) noexcept nogil:
    """The weight of a minibatch in its loss: the sum of its sample weights,
    or for a per-step head, of the weights of the steps in the given window
    (every step of a sample weighs the sample's weight)."""
    cdef intp_t i, steps
    cdef double total = 0
    for i in range(n_batch):
        steps = 1
        if m.head == HEAD_SEQUENCE:
            steps = min(max(lengths[batch[i]] - window * m.window, 0), m.window)
        total += steps * (weights[batch[i]] if weights != NULL else 1)
    return total


cdef void _solver_step(const Solver* solver, intp_t t, floating* params,
                       const floating* grad, floating* state_a, floating* state_b,
                       intp_t P) noexcept nogil:
    """One optimizer step (the t-th) over the flat parameter vector."""
    cdef intp_t j
    cdef floating lr = solver.learning_rate, a, b, eps, step, v, one = 1
    if solver.kind == SGD:
        # v <- momentum v - lr g; Nesterov looks ahead along the new v.
        a = solver.momentum
        for j in range(P):
            v = a * state_a[j] - lr * grad[j]
            state_a[j] = v
            params[j] += a * v - lr * grad[j] if solver.nesterov else v
    elif solver.kind == ADAM:
        # Bias correction folded into the step size.
        a = solver.beta_1
        b = solver.beta_2
        eps = solver.epsilon
        step = (solver.learning_rate * sqrt(1 - pow(solver.beta_2, <double> t))
                / (1 - pow(solver.beta_1, <double> t)))
        for j in range(P):
            state_a[j] = a * state_a[j] + (one - a) * grad[j]
            state_b[j] = b * state_b[j] + (one - b) * grad[j] * grad[j]
            params[j] -= step * state_a[j] / (sqrt_(state_b[j]) + eps)
    else:
        # RMSProp: divide by a running RMS of the recent gradients.
        a = solver.rho
        eps = solver.epsilon
        for j in range(P):
            state_a[j] = a * state_a[j] + (one - a) * grad[j] * grad[j]
            params[j] -= lr * grad[j] / (sqrt_(state_a[j]) + eps)
