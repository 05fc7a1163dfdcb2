"""Plain NumPy backpropagation through time: the ground truth for the Cython kernels.

The kernels in ``cbptt/_kernels`` are built for speed (time-major workspaces, fused
elementwise passes, GEMMs over all steps, minibatches ordered by length), which makes them
hard to check by reading. This module computes the same losses and gradients the slow,
obvious way: float64, one time step at a time, one forward loop and one mirrored backward
loop per layer and direction, written like the equations. It is itself checked against
central finite differences and PyTorch autograd in ``tests/test_reference.py``; the
kernels are then checked against it.

The head reads the top layer's output sequence o[i, t] (t < L_i = lengths[i];
bidirectional: o[i, t] = concat(forward state after step t, reverse state after step t)).
The many-to-one heads pool it into one vector per sequence:

    output="last":  the forward state at t = L_i - 1 and the reverse state after step 0
                    (PyTorch's ``h_n``),
    output="mean":  pooled[i] = (1 / L_i) * sum_{t < L_i} o[i, t],
    output="max":   pooled[i, j] = max_{t < L_i} o[i, t, j] (gradient to the first t
                    attaining it),

then z_i = pooled[i] @ weight_out.T + bias_out, a per-sample loss l_i = l(z_i, y_i), and

    loss = sum_i w_i l_i / sum_i w_i.

The per-step head output="sequence" reads every valid step instead:

    z_it = o[i, t] @ weight_out.T + bias_out,   l_it = l(z_it, y_it)   (t < L_i),
    loss = sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i,

the sample-weighted mean cost per step. The loss l(z, y) of one head row z (C,):

    loss="cross_entropy":  l = -log softmax(z)[y],        y a class index,
    loss="squared_error":  l = 0.5 * mean_c (z_c - y_c)**2,   y a vector of C reals.

Truncated BPTT (``bptt_truncate=k``, unidirectional networks) makes some states constants
of the gradient, which then stops there:

    output="last":      the gradient flows through each sequence's last k steps only;
                        the state entering step L_i - k is a constant.
    output="sequence":  each sequence is cut into windows of k steps from its first step,
                        [0, k), [k, 2k), ...; the forward state flows across the window
                        boundaries, the gradient does not (truncated BPTT with k1 = k2 = k):
                        the state entering each window is a constant.

Conventions are PyTorch's (``torch.nn.RNN/LSTM/GRU`` state_dict names, gate order, and
``h_n`` of a ``pack_padded_sequence`` run); see ``reference_loss_and_grad``.
"""

import re

import numpy as np

__all__ = [
    "N_GATES",
    "OUTPUTS",
    "LOSSES",
    "reference_loss_and_grad",
    "reference_loss",
    "init_weights",
    "numerical_grad",
]

N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
OUTPUTS = ("last", "mean", "max", "sequence")
LOSSES = ("cross_entropy", "squared_error")

_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def sigmoid(a):
    # Same function as 1 / (1 + exp(-a)), without overflow for large negative a.
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _split_gates(a, n_gates):
    """Split (rows, n_gates*H) into n_gates blocks of H columns, in PyTorch's gate order."""
    n_hidden = a.shape[1] // n_gates
    return [a[:, j * n_hidden:(j + 1) * n_hidden] for j in range(n_gates)]


def _suffixes(bidirectional):
    return ("", "_reverse") if bidirectional else ("",)


def _architecture(weights, cell, n_features):
    """Infer (n_layers, bidirectional, hidden sizes) from the weight names; check shapes."""
    if cell not in N_GATES:
        raise ValueError(f"cell must be one of {sorted(N_GATES)}, got {cell!r}")
    n_gates = N_GATES[cell]
    bidirectional = any(key.endswith("_reverse") for key in weights)
    n_dirs = 2 if bidirectional else 1
    layer_ids = {
        int(m.group(1))
        for key in weights
        if (m := re.fullmatch(r"weight_ih_l(\d+)(_reverse)?", key))
    }
    n_layers = len(layer_ids)
    if n_layers == 0 or layer_ids != set(range(n_layers)):
        raise ValueError(f"weight_ih_l0 .. weight_ih_l{{k}} expected, got keys {sorted(weights)}")

    expected = {"weight_out", "bias_out"}
    hidden_sizes = []
    n_in = n_features
    for k in range(n_layers):
        if f"weight_hh_l{k}" not in weights or np.ndim(weights[f"weight_hh_l{k}"]) != 2:
            raise ValueError(f"weight_hh_l{k} missing or not 2-D")
        n_hidden = np.shape(weights[f"weight_hh_l{k}"])[1]
        for suffix in _suffixes(bidirectional):
            shapes = {
                "weight_ih": (n_gates * n_hidden, n_in),
                "weight_hh": (n_gates * n_hidden, n_hidden),
                "bias_ih": (n_gates * n_hidden,),
                "bias_hh": (n_gates * n_hidden,),
            }
            for name, shape in shapes.items():
                key = f"{name}_l{k}{suffix}"
                expected.add(key)
                if key not in weights or np.shape(weights[key]) != shape:
                    got = np.shape(weights[key]) if key in weights else "missing"
                    raise ValueError(f"{key}: expected shape {shape}, got {got}")
        hidden_sizes.append(n_hidden)
        n_in = n_dirs * n_hidden
    if set(weights) != expected:
        raise ValueError(f"weight names: missing {sorted(expected - set(weights))}, "
                         f"unexpected {sorted(set(weights) - expected)}")
    n_classes = np.shape(weights["bias_out"])[0]
    if np.shape(weights["weight_out"]) != (n_classes, n_in):
        raise ValueError(
            f"weight_out: expected shape {(n_classes, n_in)}, got {np.shape(weights['weight_out'])}"
        )
    return n_layers, bidirectional, hidden_sizes


def _valid_steps(lengths, n_timesteps):
    """Index arrays (samples, steps) of the valid steps t < lengths[i], sample-major."""
    return np.nonzero(np.arange(n_timesteps) < lengths[:, None])


def _check_targets(y, loss, output, lengths, n_timesteps, n_classes):
    """y as the loss reads it: class indices, or float64 targets with a last axis of C.

    The many-to-one heads read one target per sample, y (n,) or (n, C); output="sequence"
    reads one per step, y (n, T) or (n, T, C), and only at the valid steps t < lengths[i]:
    only those entries are checked, the padding ones may hold anything.
    """
    y = np.asarray(y)
    if output == "sequence":
        shape = (len(lengths), n_timesteps)
        shape_name = "(n_samples, n_timesteps)"
        shape_c_name = "(n_samples, n_timesteps, n_outputs)"
        for_head, at_steps = " and output='sequence'", " at the valid steps t < lengths[i]"
        read = _valid_steps(lengths, n_timesteps)
    else:
        shape = (len(lengths),)
        shape_name = "(n_samples,)"
        shape_c_name = "(n_samples, n_outputs)"
        for_head, at_steps = "", ""
        read = ...  # every entry
    if loss == "cross_entropy":
        if y.shape != shape or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must be integer class indices of shape {shape_name} "
                             f"for loss='cross_entropy'{for_head}")
        if y[read].min() < 0 or y[read].max() >= n_classes:
            raise ValueError(f"y must lie in [0, {n_classes}){at_steps}")
        return y
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"y must be real numbers for loss='squared_error', got dtype {y.dtype}")
    if n_classes == 1 and y.shape == shape:
        y = y[..., None]
    if y.shape != shape + (n_classes,):
        raise ValueError(f"y must have shape {shape_c_name} = {shape + (n_classes,)} "
                         f"for loss='squared_error'{for_head} (or {shape_name} when "
                         f"n_outputs == 1), got {y.shape}")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y[read])):
        raise ValueError(f"y must be finite{at_steps} for loss='squared_error'")
    return y


def _check_inputs(weights, X, y, cell, nonlinearity, lengths, bptt_truncate, sample_weight,
                  output, loss):
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"X must be (n_samples, n_timesteps, n_features), got shape {X.shape}")
    n_samples, n_timesteps, n_features = X.shape
    if cell == "rnn" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    n_layers, bidirectional, hidden_sizes = _architecture(weights, cell, n_features)
    weights = {key: np.asarray(value, dtype=np.float64) for key, value in weights.items()}
    n_classes = weights["bias_out"].shape[0]

    if lengths is None:
        lengths = np.full(n_samples, n_timesteps, dtype=np.intp)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (n_samples,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError("lengths must be integers of shape (n_samples,)")
        if lengths.min() < 1 or lengths.max() > n_timesteps:
            raise ValueError(f"lengths must lie in [1, {n_timesteps}]")
        lengths = lengths.astype(np.intp)

    y = _check_targets(y, loss, output, lengths, n_timesteps, n_classes)

    if bptt_truncate is not None:
        if isinstance(bptt_truncate, bool) or not isinstance(bptt_truncate, (int, np.integer)):
            raise ValueError(f"bptt_truncate must be an int >= 1 or None, got {bptt_truncate!r}")
        if bptt_truncate < 1:
            raise ValueError(f"bptt_truncate must be an int >= 1 or None, got {bptt_truncate!r}")
        if bidirectional:
            raise ValueError("bptt_truncate is not defined for bidirectional networks")
        if output not in ("last", "sequence"):
            raise ValueError(f"bptt_truncate is only defined for output='last' (the gradient "
                             f"through each sequence's last k steps) and output='sequence' "
                             f"(windows of k steps), got output={output!r}")

    if sample_weight is None:
        sample_weight = np.ones(n_samples)
    else:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n_samples,):
            raise ValueError("sample_weight must have shape (n_samples,)")
        if np.any(sample_weight < 0) or not sample_weight.sum() > 0:
            raise ValueError("sample_weight must be non-negative with a positive sum")

    return weights, X, y, lengths, sample_weight, n_layers, bidirectional, hidden_sizes


# ----------------------------------------------------------------------------------------
# One direction of one layer
# ----------------------------------------------------------------------------------------


def _forward_direction(cell, nonlinearity, params, inputs, lengths, reverse):
    """Run one direction of one layer over all sequences.

    Sequence i takes part in step t iff t < lengths[i]; the forward direction runs
    t = 0 .. T-1, the reverse one t = T-1 .. 0, so each sequence's reverse run starts at
    its own last valid step with a zero state. Padded steps are never read.

    Returns ``outputs`` (n, T, H): the state after step t (zero at padded steps), and a
    ``tape`` of what the backward pass needs, keyed by t.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = params
    n_samples, n_timesteps, _ = inputs.shape
    n_hidden = weight_hh.shape[1]
    h = np.zeros((n_samples, n_hidden))
    c = np.zeros((n_samples, n_hidden))  # LSTM cell state; stays zero for rnn and gru
    outputs = np.zeros((n_samples, n_timesteps, n_hidden))
    tape = {}
    steps = range(n_timesteps - 1, -1, -1) if reverse else range(n_timesteps)
    for t in steps:
        rows = np.flatnonzero(lengths > t)
        x = inputs[rows, t]
        h_prev = h[rows]
        c_prev = c[rows]
        saved = {"rows": rows, "x": x, "h_prev": h_prev}

        if cell == "rnn":
            pre = x @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh
            h_new = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0.0)
            c_new = c_prev
            saved.update(pre=pre, h=h_new)
        elif cell == "lstm":
            gates = x @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh
            a_i, a_f, a_g, a_o = _split_gates(gates, 4)
            i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
            c_new = f * c_prev + i * g
            tanh_c = np.tanh(c_new)
            h_new = o * tanh_c
            saved.update(i=i, f=f, g=g, o=o, c_prev=c_prev, tanh_c=tanh_c)
        else:  # gru
            gi = x @ weight_ih.T + bias_ih
            gh = h_prev @ weight_hh.T + bias_hh
            gi_r, gi_z, gi_n = _split_gates(gi, 3)
            gh_r, gh_z, gh_n = _split_gates(gh, 3)
            r = sigmoid(gi_r + gh_r)
            z = sigmoid(gi_z + gh_z)
            n = np.tanh(gi_n + r * gh_n)
            h_new = (1.0 - z) * n + z * h_prev
            c_new = c_prev
            saved.update(r=r, z=z, n=n, gh_n=gh_n)

        h[rows] = h_new
        c[rows] = c_new
        outputs[rows, t] = h_new
        tape[t] = saved
    return outputs, tape


def _window_starts(lengths, n_timesteps, bptt_truncate, output):
    """Truncated BPTT as windows: window_start[i, t] (n, T) is the first step s of the window
    that step t of sequence i backpropagates within, or None without truncation.

    The state entering a window, h[i, s - 1] (and c for the LSTM), is a constant of the
    truncated gradient: the gradient flows back from step t through steps t-1 .. s, not
    into the state before s. Steps t < window_start[i, t] lie before the window: they take
    no part in the backward pass.

    output="last":      one window, the last k steps: window_start[i, t] = max(L_i - k, 0).
                        The head reads step L_i - 1 only, so nothing reaches steps before it.
    output="sequence":  windows [0, k), [k, 2k), ... from each sequence's first step:
                        window_start[i, t] = k * (t // k).
    """
    if bptt_truncate is None:
        return None
    if output == "last":
        first_step = np.maximum(lengths - bptt_truncate, 0)
        return np.repeat(first_step[:, None], n_timesteps, axis=1)
    steps = np.arange(n_timesteps)
    return np.broadcast_to(steps - steps % bptt_truncate, (len(lengths), n_timesteps))


def _backward_direction(cell, nonlinearity, params, tape, d_outputs, reverse, window_start):
    """Mirror of ``_forward_direction``: walk the steps in the opposite order.

    ``d_outputs[i, t]`` is dLoss/d outputs[i, t] arriving from outside the recurrence (the
    head, or the layer above). ``window_start`` is None (full BPTT) or, for truncated BPTT
    of a forward direction, ``_window_starts``: sequence i takes part in step t iff
    t >= window_start[i, t], and at a window's first step the gradient it would carry into
    the state entering the window is dropped. Returns dLoss/d inputs (n, T, D_in) and the
    parameter gradients.
    """
    weight_ih, weight_hh, _, _ = params
    n_samples, n_timesteps, _ = d_outputs.shape
    n_hidden = weight_hh.shape[1]
    d_weight_ih = np.zeros_like(weight_ih)
    d_weight_hh = np.zeros_like(weight_hh)
    d_bias_ih = np.zeros(weight_ih.shape[0])
    d_bias_hh = np.zeros(weight_hh.shape[0])
    d_inputs = np.zeros((n_samples, n_timesteps, weight_ih.shape[1]))
    # Gradient carried back in time: dLoss/d h_prev (and c_prev) of the step just processed.
    dh_carry = np.zeros((n_samples, n_hidden))
    dc_carry = np.zeros((n_samples, n_hidden))

    steps = range(n_timesteps) if reverse else range(n_timesteps - 1, -1, -1)
    for t in steps:
        saved = tape[t]
        keep = np.arange(len(saved["rows"]))
        if window_start is not None:
            # steps before their window (output="last": before the last k) are left out
            keep = np.flatnonzero(t >= window_start[saved["rows"], t])
        rows = saved["rows"][keep]
        x = saved["x"][keep]
        h_prev = saved["h_prev"][keep]
        # Total gradient on h_t: through the recurrence from the next step, plus from outside.
        dh = dh_carry[rows] + d_outputs[rows, t]

        if cell == "rnn":
            h = saved["h"][keep]
            # backprop through the nonlinearity into the pre-activation
            if nonlinearity == "tanh":
                d_pre = dh * (1.0 - h**2)
            else:
                d_pre = dh * (saved["pre"][keep] > 0.0)
            d_gates_ih = d_gates_hh = d_pre
            dh_prev_direct = 0.0
        elif cell == "lstm":
            i, f, g, o = (saved[name][keep] for name in "ifgo")
            c_prev, tanh_c = saved["c_prev"][keep], saved["tanh_c"][keep]
            # backprop into c_t: through h_t = o * tanh(c_t), plus from c_{t+1} via the carry
            dc = dc_carry[rows] + dh * o * (1.0 - tanh_c**2)
            # backprop into the activated gates
            d_i = dc * g
            d_f = dc * c_prev
            d_g = dc * i
            d_o = dh * tanh_c
            # backprop into c_{t-1} = the carry for the next (earlier) step
            dc_carry[rows] = dc * f
            # backprop through the gate activations into the pre-activations
            d_gates = np.concatenate(
                [d_i * i * (1.0 - i), d_f * f * (1.0 - f), d_g * (1.0 - g**2), d_o * o * (1.0 - o)],
                axis=1,
            )
            d_gates_ih = d_gates_hh = d_gates
            dh_prev_direct = 0.0
        else:  # gru
            r, z, n, gh_n = (saved[name][keep] for name in ("r", "z", "n", "gh_n"))
            # backprop through h_t = (1 - z) * n + z * h_{t-1}
            d_n = dh * (1.0 - z)
            d_z = dh * (h_prev - n)
            dh_prev_direct = dh * z
            # backprop through n = tanh(gi_n + r * gh_n) into its pre-activation and into r
            d_a_n = d_n * (1.0 - n**2)
            d_r = d_a_n * gh_n
            # backprop through the sigmoids of r and z
            d_a_r = d_r * r * (1.0 - r)
            d_a_z = d_z * z * (1.0 - z)
            # input side sees d_a_n directly; recurrent side sees it through r * gh_n
            d_gates_ih = np.concatenate([d_a_r, d_a_z, d_a_n], axis=1)
            d_gates_hh = np.concatenate([d_a_r, d_a_z, d_a_n * r], axis=1)

        # backprop into the weights and biases
        d_weight_ih += d_gates_ih.T @ x
        d_bias_ih += d_gates_ih.sum(axis=0)
        d_weight_hh += d_gates_hh.T @ h_prev
        d_bias_hh += d_gates_hh.sum(axis=0)
        # backprop into x_t (the layer below) and into h_{t-1} (the carry)
        d_inputs[rows, t] = d_gates_ih @ weight_ih
        dh_carry[rows] = dh_prev_direct + d_gates_hh @ weight_hh
        if window_start is not None:
            # t is the first step of its window: the state entering the window, h_{t-1}
            # (and c_{t-1}), is a constant, so the gradient stops here; the earlier steps
            # start again from a zero carry (and get only their own windows' gradient)
            entering = rows[window_start[rows, t] == t]
            dh_carry[entering] = 0.0
            dc_carry[entering] = 0.0

    return d_inputs, (d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh)


# ----------------------------------------------------------------------------------------
# Head: pooling over time (many-to-one heads), and the loss of each head row
# ----------------------------------------------------------------------------------------


def _pool(outputs, lengths, output, reverse):
    """Pool one direction's top-layer outputs o (n, T, H) over the valid steps into (n, H).

    Returns ``pooled`` and ``steps_read``: for "last" and "max", steps_read[i, j] is the step
    t whose o[i, t, j] the head read; for "mean" it is None (every valid step is read).
    """
    n_samples, n_timesteps, n_hidden = outputs.shape
    valid = (np.arange(n_timesteps) < lengths[:, None])[:, :, None]  # t < lengths[i]
    if output == "mean":
        # pooled[i] = sum_{t < lengths[i]} o[i, t] / lengths[i]
        return np.where(valid, outputs, 0.0).sum(axis=1) / lengths[:, None], None
    if output == "last":
        # forward: the state at t = lengths[i] - 1; reverse: the state after step 0 (h_n)
        t_last = np.zeros(n_samples, dtype=np.intp) if reverse else lengths - 1
        steps_read = np.repeat(t_last[:, None], n_hidden, axis=1)
    else:  # max
        # pooled[i, j] = max_{t < lengths[i]} o[i, t, j]; argmax returns the first such t
        steps_read = np.argmax(np.where(valid, outputs, -np.inf), axis=1)
    pooled = np.take_along_axis(outputs, steps_read[:, None, :], axis=1)[:, 0]
    return pooled, steps_read


def _unpool(d_pooled, steps_read, lengths, n_timesteps):
    """Mirror of ``_pool``: backprop from d pooled (n, H) into d o (n, T, H)."""
    n_samples, n_hidden = d_pooled.shape
    if steps_read is None:
        # mean: d pooled[i] / lengths[i] flows to every valid step
        valid = (np.arange(n_timesteps) < lengths[:, None])[:, :, None]
        return np.where(valid, (d_pooled / lengths[:, None])[:, None, :], 0.0)
    # last, max: d pooled[i, j] flows to the one step steps_read[i, j] the head read
    d_outputs = np.zeros((n_samples, n_timesteps, n_hidden))
    np.put_along_axis(d_outputs, steps_read[:, None, :], d_pooled[:, None, :], axis=1)
    return d_outputs


def _row_loss(logits, y, loss):
    """The losses l (R,) of the head's rows of logits z (R, C), and dl/dz (R, C).

    A row is a sample (l_i of z_i) for the many-to-one heads, a valid step (l_it of z_it)
    for output="sequence"; y holds the rows' targets.
    """
    if loss == "cross_entropy":
        # l = -log softmax(z)[y], through log-sum-exp
        rows = np.arange(logits.shape[0])
        m = logits.max(axis=1, keepdims=True)
        log_p = logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))
        # dl/dz = softmax(z) - onehot(y)
        d_logits = np.exp(log_p)
        d_logits[rows, y] -= 1.0
        return -log_p[rows, y], d_logits
    # l = 0.5 * mean_c (z_c - y_c)^2;  dl/dz_c = (z_c - y_c) / C
    residual = logits - y
    return 0.5 * np.mean(residual**2, axis=1), residual / logits.shape[1]


# ----------------------------------------------------------------------------------------
# Whole network
# ----------------------------------------------------------------------------------------


def _run(weights, X, y, cell, nonlinearity, lengths, bptt_truncate, sample_weight, output,
         loss, need_grad):
    (weights, X, y, lengths, sample_weight, n_layers, bidirectional,
     hidden_sizes) = _check_inputs(weights, X, y, cell, nonlinearity, lengths,
                                   bptt_truncate, sample_weight, output, loss)
    n_timesteps = X.shape[1]
    suffixes = _suffixes(bidirectional)

    # Forward: layer k reads layer k-1's full output sequence (forward then reverse features).
    inputs = X
    tapes = []
    for k in range(n_layers):
        outputs = {}
        layer_tapes = {}
        for suffix in suffixes:
            params = tuple(weights[f"{name}_l{k}{suffix}"] for name in _PARAM_NAMES)
            outputs[suffix], layer_tapes[suffix] = _forward_direction(
                cell, nonlinearity, params, inputs, lengths, reverse=(suffix == "_reverse"))
        tapes.append(layer_tapes)
        inputs = np.concatenate([outputs[s] for s in suffixes], axis=2)

    # Head: its rows are the samples, each pooled over time (z_i = pooled[i] @ W_out.T +
    # b_out), or for output="sequence" the valid steps (i, t), t < L_i, sample-major
    # (z_it = o[i, t] @ W_out.T + b_out); every row weighs w_i / total_weight.
    if output == "sequence":
        samples, steps = _valid_steps(lengths, n_timesteps)
        head_inputs = np.concatenate([outputs[s][samples, steps] for s in suffixes], axis=1)
        targets = y[samples, steps]
        # loss = sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i
        row_weight, total_weight = sample_weight[samples], np.sum(sample_weight * lengths)
    else:
        pooled_parts, steps_read = {}, {}
        for suffix in suffixes:
            pooled_parts[suffix], steps_read[suffix] = _pool(outputs[suffix], lengths, output,
                                                             reverse=(suffix == "_reverse"))
        head_inputs = np.concatenate([pooled_parts[s] for s in suffixes], axis=1)
        targets = y
        # loss = sum_i w_i l_i / sum_i w_i
        row_weight, total_weight = sample_weight, np.sum(sample_weight)
    logits = head_inputs @ weights["weight_out"].T + weights["bias_out"]
    row_loss, d_row_loss = _row_loss(logits, targets, loss)
    mean_loss = float(np.sum(row_weight * row_loss) / total_weight)
    if not need_grad:
        return mean_loss, None

    grads = {}
    # backprop into the logits: dl/dz * w_i / total_weight
    d_logits = d_row_loss * (row_weight / total_weight)[:, None]
    # backprop into the head's weights and into its inputs (pooled vectors or o[i, t])
    grads["weight_out"] = d_logits.T @ head_inputs
    grads["bias_out"] = d_logits.sum(axis=0)
    d_head_inputs = d_logits @ weights["weight_out"]
    # backprop into the top layer's outputs, per direction, at every step the head read
    n_hidden = hidden_sizes[-1]
    d_outputs = {}
    for j, suffix in enumerate(suffixes):
        d_part = d_head_inputs[:, j * n_hidden:(j + 1) * n_hidden]
        if output == "sequence":
            # row (i, t) flows to o[i, t] itself, in both directions: the reverse
            # direction's outputs are stored by t too (its state after processing step t)
            d_outputs[suffix] = np.zeros_like(outputs[suffix])
            d_outputs[suffix][samples, steps] = d_part
        else:
            d_outputs[suffix] = _unpool(d_part, steps_read[suffix], lengths, n_timesteps)

    # Backward: top layer first; each layer hands dLoss/d(its inputs) to the layer below.
    # Truncated BPTT cuts every layer's recurrence at the same window starts.
    window_start = _window_starts(lengths, n_timesteps, bptt_truncate, output)
    for k in range(n_layers - 1, -1, -1):
        d_inputs = 0.0
        for suffix in suffixes:
            params = tuple(weights[f"{name}_l{k}{suffix}"] for name in _PARAM_NAMES)
            d_in, d_params = _backward_direction(
                cell, nonlinearity, params, tapes[k][suffix], d_outputs[suffix],
                reverse=(suffix == "_reverse"), window_start=window_start)
            d_inputs = d_inputs + d_in
            for name, d_param in zip(_PARAM_NAMES, d_params):
                grads[f"{name}_l{k}{suffix}"] = d_param
        if k > 0:
            # backprop into layer k-1's outputs: split the features back per direction
            n_below = hidden_sizes[k - 1]
            d_outputs = {"": d_inputs[:, :, :n_below]}
            if bidirectional:
                d_outputs["_reverse"] = d_inputs[:, :, n_below:]

    return mean_loss, {key: grads[key] for key in weights}


def reference_loss_and_grad(weights, X, y, *, cell="rnn", nonlinearity="tanh", lengths=None,
                            bptt_truncate=None, sample_weight=None, output="last",
                            loss="cross_entropy"):
    """Loss of a (stacked, bidirectional) RNN with a many-to-one or per-step head, and its
    gradient.

    Parameters
    ----------
    weights : dict
        PyTorch state_dict names: ``weight_ih_l{k}`` (G*H_k, D_in_k), ``weight_hh_l{k}``
        (G*H_k, H_k), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H_k,), the same with suffix
        ``_reverse`` for a bidirectional network, and the head ``weight_out`` (C, H_last or
        2*H_last), ``bias_out`` (C,). G = 1, 4, 3 for rnn, lstm, gru.
    X : array (n_samples, n_timesteps, n_features)
    y : one target per sample (output "last", "mean", "max"):
        loss="cross_entropy": int array (n_samples,), class indices in [0, C);
        loss="squared_error": real array (n_samples, C), or (n_samples,) when C == 1.
        One target per step (output="sequence"):
        loss="cross_entropy": int array (n_samples, n_timesteps), classes in [0, C);
        loss="squared_error": real array (n_samples, n_timesteps, C), or
        (n_samples, n_timesteps) when C == 1.
        Only the valid steps t < lengths[i] are read (and checked): the entries past a
        sequence's length may hold anything (-1, NaN, ...).
    cell : "rnn", "lstm" or "gru".
    nonlinearity : "tanh" or "relu"; used by cell="rnn" only.
    lengths : int array (n_samples,) in [1, n_timesteps], or None (all full length).
        Steps t >= L_i = lengths[i] are padding and are never read.
    bptt_truncate : int k >= 1 or None (full BPTT)
        Defined (else ValueError) for unidirectional networks with output "last" or
        "sequence":
        output="last": the gradient flows only through the last k valid steps of each
        sequence; the state entering step L_i - k is a constant.
        output="sequence": each sequence is cut into windows of k steps from its first
        step, [0, k), [k, 2k), ...; the forward state flows across the window boundaries,
        the gradient does not: the state entering each window is a constant, and the
        per-step losses of a window backpropagate within the window only (truncated BPTT
        with k1 = k2 = k).
        k >= n_timesteps is full BPTT.
    sample_weight : array (n_samples,) or None (all ones)
        The weight w_i of sequence i in the loss, see ``output``.
    output : "last", "mean", "max" or "sequence"
        What the head reads from the top layer's outputs o[i, t], t < L_i (when
        bidirectional, o[i, t] = concat(forward state after step t, reverse state after
        step t)). The many-to-one heads pool them into one vector per sequence:
        "last": the forward state at t = L_i - 1 and the reverse state after it ran from
        t = L_i - 1 down to 0, i.e. ``h_n`` of PyTorch with ``pack_padded_sequence``;
        "mean": pooled[i] = (1 / L_i) * sum_{t < L_i} o[i, t];
        "max": pooled[i, j] = max_{t < L_i} o[i, t, j]; the gradient of unit j flows to the
        first t (in time order) attaining the max.
        Then z_i = pooled[i] @ weight_out.T + bias_out, l_i = l(z_i, y_i) and

            loss = sum_i w_i l_i / sum_i w_i.

        "sequence": a head at every valid step, z_it = o[i, t] @ weight_out.T + bias_out,
        l_it = l(z_it, y_it), and the sample-weighted mean cost per step

            loss = sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i.

    loss : "cross_entropy" or "squared_error", the loss l(z, y) of one head row z (C,):
        "cross_entropy": l = -log softmax(z)[y];
        "squared_error": l = 0.5 * mean_c (z_c - y_c)^2, so dl/dz_c = (z_c - y_c) / C
        (scikit-learn's MLPRegressor convention).

    Returns
    -------
    loss : float
    grads : dict, same keys and shapes as ``weights``, float64.

    Everything is computed in float64.
    """
    return _run(weights, X, y, cell, nonlinearity, lengths, bptt_truncate, sample_weight,
                output, loss, need_grad=True)


def reference_loss(weights, X, y, *, cell="rnn", nonlinearity="tanh", lengths=None,
                   sample_weight=None, output="last", loss="cross_entropy"):
    """The loss of ``reference_loss_and_grad`` alone (forward pass only; truncation
    changes the gradient, not the loss)."""
    value, _ = _run(weights, X, y, cell, nonlinearity, lengths, None, sample_weight, output,
                    loss, need_grad=False)
    return value


# ----------------------------------------------------------------------------------------
# Test helpers
# ----------------------------------------------------------------------------------------


def init_weights(rng, cell, n_features, hidden_sizes, n_classes, bidirectional=False,
                 scale=0.5, dtype=np.float64):
    """Random weights, uniform in [-scale, scale], in PyTorch state_dict order.

    ``hidden_sizes`` is an int (one layer) or a sequence of ints (one per stacked layer).
    """
    rng = np.random.default_rng(rng)
    hidden_sizes = [hidden_sizes] if np.isscalar(hidden_sizes) else list(hidden_sizes)
    n_gates = N_GATES[cell]
    n_dirs = 2 if bidirectional else 1
    weights = {}

    def draw(*shape):
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    n_in = n_features
    for k, n_hidden in enumerate(hidden_sizes):
        for suffix in _suffixes(bidirectional):
            weights[f"weight_ih_l{k}{suffix}"] = draw(n_gates * n_hidden, n_in)
            weights[f"weight_hh_l{k}{suffix}"] = draw(n_gates * n_hidden, n_hidden)
            weights[f"bias_ih_l{k}{suffix}"] = draw(n_gates * n_hidden)
            weights[f"bias_hh_l{k}{suffix}"] = draw(n_gates * n_hidden)
        n_in = n_dirs * n_hidden
    weights["weight_out"] = draw(n_classes, n_in)
    weights["bias_out"] = draw(n_classes)
    return weights


def numerical_grad(f, weights, eps=1e-6):
    """Central differences (f(w + eps) - f(w - eps)) / (2 eps) of a scalar f(weights).

    Perturbs every entry of every weight in turn, on float64 copies; returns a dict with the
    same keys and shapes as ``weights``.
    """
    weights = {key: np.array(value, dtype=np.float64) for key, value in weights.items()}
    grads = {}
    for key, w in weights.items():
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            original = w[idx]
            w[idx] = original + eps
            f_plus = f(weights)
            w[idx] = original - eps
            f_minus = f(weights)
            w[idx] = original
            g[idx] = (f_plus - f_minus) / (2.0 * eps)
        grads[key] = g
    return grads
