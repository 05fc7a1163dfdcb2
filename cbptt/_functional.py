"""Named weights <-> one flat parameter vector, and the public ``loss_and_grad``.

Why: the kernels and optimizers see a model as ONE contiguous vector (so an
update, a gradient norm or clipping is a single loop), while users see
PyTorch's ``state_dict`` names and shapes. ``Network`` is the one place that
knows the layout and which kernel to call; the estimator and ``loss_and_grad``
both go through it.
"""

import functools

import numpy as np

from cbptt._kernels import network as _network
from cbptt._parallel import effective_n_threads, single_threaded_blas
from cbptt._sequences import (
    check_lengths,
    check_positive_int_or_none,
    check_sequences,
)

CELLS = ("rnn", "lstm", "gru")
NONLINEARITIES = ("tanh", "relu")
POOLINGS = ("last", "mean", "max")        # one output per sequence
OUTPUTS = POOLINGS + ("sequence",)       # or one per step
LOSSES = ("cross_entropy", "squared_error")
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class Network:
    """Shapes, flat layout and kernel calls of a recurrent net with a head.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    nonlinearity : {"tanh", "relu"}
        Used by the Elman cell only.
    n_features : int
    hidden_sizes : sequence of int
        Units of each stacked layer.
    n_outputs : int
        Rows of ``weight_out``: classes (cross-entropy) or target values.
    bidirectional : bool
    output : {"last", "mean", "max", "sequence"}
        What the head reads of the top layer's output sequence ("sequence":
        every step, for an output per step).
    loss : {"cross_entropy", "squared_error"}
    dropout : float
        Between layers, in training.
    """

    def __init__(self, cell, nonlinearity, n_features, hidden_sizes, n_outputs,
                 bidirectional=False, output="last", loss="cross_entropy", dropout=0.0):
        self.cell = cell
        self.nonlinearity = nonlinearity
        self.n_features = n_features
        self.hidden_sizes = np.asarray(hidden_sizes, dtype=np.intp)
        self.n_outputs = n_outputs
        self.n_dirs = 2 if bidirectional else 1
        self.output = output
        self.loss = loss
        # The kernels' Spec (cbptt/_kernels/_model.pxi).
        self.spec = {
            "cell": _network.cell_codes[cell], "relu": nonlinearity == "relu",
            "n_dirs": self.n_dirs, "n_features": n_features, "n_outputs": n_outputs,
            "head": _network.head_codes[output], "loss": _network.loss_codes[loss],
            "dropout": dropout,
        }
        self._workspace = {}

    @functools.cached_property
    def shapes(self):
        """``[(name, shape), ...]`` in flat-vector order (PyTorch's names)."""
        shapes = []
        n_input = self.n_features
        G = N_GATES[self.cell]
        for k, H in enumerate(int(h) for h in self.hidden_sizes):
            for suffix in ("", "_reverse")[: self.n_dirs]:
                shapes += [
                    (f"weight_ih_l{k}{suffix}", (G * H, n_input)),
                    (f"weight_hh_l{k}{suffix}", (G * H, H)),
                    (f"bias_ih_l{k}{suffix}", (G * H,)),
                    (f"bias_hh_l{k}{suffix}", (G * H,)),
                ]
            n_input = self.n_dirs * H
        return shapes + [
            ("weight_out", (self.n_outputs, n_input)),
            ("bias_out", (self.n_outputs,)),
        ]

    @functools.cached_property
    def n_params(self):
        return sum(int(np.prod(shape)) for _, shape in self.shapes)

    def unpack(self, flat):
        """Dict of views into ``flat``, one per named weight."""
        views, start = {}, 0
        for name, shape in self.shapes:
            size = int(np.prod(shape))
            views[name] = flat[start : start + size].reshape(shape)
            start += size
        return views

    def pack(self, weights, dtype):
        """Copy a dict of named weights into a new flat vector, checking it."""
        _check_is_dict(weights)
        expected = dict(self.shapes)
        missing = [name for name in expected if name not in weights]
        unknown = [name for name in weights if name not in expected]
        if missing or unknown:
            raise ValueError(
                f"weights has the wrong keys: missing {missing}, unexpected "
                f"{unknown}. Expected exactly {list(expected)}."
            )
        flat = np.empty(self.n_params, dtype=dtype)
        views = self.unpack(flat)
        for name, shape in self.shapes:
            value = np.asarray(weights[name])
            if value.dtype.kind not in "fiu":
                raise ValueError(
                    f"weights[{name!r}] must hold real numbers; got dtype {value.dtype}."
                )
            if value.shape != shape:
                raise ValueError(
                    f"weights[{name!r}] has shape {value.shape}; expected {shape}."
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"weights[{name!r}] contains NaN or infinity.")
            views[name][...] = value
        return flat

    def _buffers(self, dtype, batch_sizes, max_steps, n_threads, truncate=None):
        """``(workspace, chunk_grads)`` for minibatches of each of the sizes
        ``batch_sizes``, of sequences of up to max_steps steps: one workspace
        row per thread, one gradient row per chunk. Training backpropagates
        through the last ``truncate`` steps; ``truncate=None`` means predict
        (forward only, chunk_grads is None). The scratch memory is grown as
        needed and then reused, so it fits everything asked for so far."""
        training = truncate is not None
        size = n_chunks = 0
        for n_batch in batch_sizes:
            # Chunks get smaller with the minibatch, so a smaller one can
            # have more of them.
            rows = _network.chunk_rows(n_batch)
            size = max(size, _network.workspace_size(
                self.spec, self.hidden_sizes, min(n_batch, rows), max_steps, training,
                truncate if training else max_steps, dtype == np.float32,
            ))
            n_chunks = max(n_chunks, -(-n_batch // rows) if training else 0)
        key = (np.dtype(dtype), training)
        old = self._workspace.get(key)
        if (old is None or old[0].shape[0] < n_threads or old[0].shape[1] < size
                or (training and old[1].shape[0] < n_chunks)):
            if old is not None:
                n_threads = max(n_threads, old[0].shape[0])
                size = max(size, old[0].shape[1])
                n_chunks = max(n_chunks, 0 if old[1] is None else old[1].shape[0])
            self._workspace[key] = (
                np.empty((n_threads, size), dtype=dtype),
                np.empty((n_chunks, self.n_params), dtype=dtype) if training else None,
            )
        return self._workspace[key]

    def release(self):
        """Free the scratch memory (it is rebuilt on the next call)."""
        self._workspace = {}

    def loss_and_grad(self, params, X, lengths, batch, y, sample_weight,
                      loss_scale, grad_out, truncate, n_threads, seed=0):
        """Minibatch loss; the gradient goes into ``grad_out``.

        ``batch`` indexes X and must be sorted by decreasing length; ``y``
        holds class indices (cross-entropy) or (n_samples, n_outputs) values
        in X's dtype (squared error). ``seed`` draws the dropout masks of
        this minibatch.
        """
        workspace, chunk_grads = self._buffers(X.dtype, [len(batch)], lengths[batch[0]],
                                               n_threads, truncate)
        labels, targets = self.split_targets(y)
        return _network.loss_and_grad(
            self.spec, self.hidden_sizes, X, lengths, batch, labels, targets,
            sample_weight, loss_scale, params, grad_out, chunk_grads, workspace,
            truncate, seed, n_threads,
        )

    def split_targets(self, y):
        """``(labels, targets)`` for the kernels: y, flattened over samples
        (and steps), goes to the one the loss reads; the other is None."""
        if self.loss == "cross_entropy":
            return y.reshape(-1), None
        return None, y.reshape(-1, self.n_outputs)

    def outputs(self, params, X, lengths, n_threads):
        """The head's outputs for every sequence of X: logits (cross-entropy)
        or predictions (squared error), (n_samples, n_outputs); with the
        per-step head (n_samples, n_timesteps, n_outputs), zero past each
        sequence's length."""
        batch = sort_by_length(lengths)
        workspace, _ = self._buffers(X.dtype, [len(batch)], lengths[batch[0]], n_threads)
        if self.output == "sequence":
            out = np.zeros((X.shape[0] * X.shape[1], self.n_outputs), dtype=X.dtype)
            _network.forward(self.spec, self.hidden_sizes, X, lengths, batch, params,
                             out, workspace, n_threads)
            return out.reshape(X.shape[0], X.shape[1], self.n_outputs)
        out = np.empty((len(batch), self.n_outputs), dtype=X.dtype)
        _network.forward(self.spec, self.hidden_sizes, X, lengths, batch, params, out,
                         workspace, n_threads)
        outputs = np.empty_like(out)
        outputs[batch] = out
        return outputs


def _check_is_dict(weights):
    if not isinstance(weights, dict):
        raise TypeError(
            "weights must be a dict of arrays named as PyTorch's state_dict; "
            f"got {type(weights).__name__}."
        )


def sort_by_length(lengths):
    """Every index ordered by decreasing length, stably."""
    return _network.sort_by_length(np.ascontiguousarray(lengths, dtype=np.intp))


def _check_choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}; got {value!r}.")


_TRUNCATE_BIDIRECTIONAL = (
    "bptt_truncate cannot be combined with a bidirectional network: the "
    "reverse direction has no 'last k steps'. Use bptt_truncate=None or a "
    "unidirectional network."
)


def check_truncation(bptt_truncate, bidirectional, output, output_name="output"):
    """Truncated BPTT backpropagates the last k steps into the last state, or
    windows of k steps of a per-step head; it is not defined where the
    reverse direction or a pooled head needs every step."""
    if bptt_truncate is None:
        return
    if bidirectional:
        raise ValueError(_TRUNCATE_BIDIRECTIONAL)
    if output in ("mean", "max"):
        raise ValueError(
            f"bptt_truncate cannot be combined with {output_name}={output!r}: a "
            f"{output} over the steps reads every step, and truncated BPTT "
            f"backpropagates only into the last state from the last k steps. Use "
            f"bptt_truncate=None or {output_name}='last'."
        )


def check_nonlinearity(cell, nonlinearity):
    """Only the Elman cell has a choice of nonlinearity."""
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(
            f"nonlinearity={nonlinearity!r} applies to cell='rnn' only; the "
            f"{cell.upper()} cell has fixed sigmoid/tanh gates. Leave "
            "nonlinearity='tanh' (the default)."
        )


def network_from_weights(weights, cell, nonlinearity, n_features, output, loss):
    """The Network whose parameters ``weights`` names (layers, directions and
    sizes read from the keys and shapes; ``Network.pack`` checks the rest)."""
    _check_is_dict(weights)
    hidden_sizes = []
    while f"weight_hh_l{len(hidden_sizes)}" in weights:
        shape = np.shape(weights[f"weight_hh_l{len(hidden_sizes)}"])
        if len(shape) != 2 or shape[0] != N_GATES[cell] * shape[1]:
            raise ValueError(
                f"weights['weight_hh_l{len(hidden_sizes)}'] has shape {shape}; for "
                f"cell={cell!r} it must be ({N_GATES[cell]} * H, H)."
            )
        hidden_sizes.append(shape[1])
    out_shape = np.shape(weights.get("weight_out"))
    if not hidden_sizes or len(out_shape) != 2:
        raise ValueError(
            "weights needs 'weight_hh_l0' (gates * H, H) and 'weight_out' (C, H) "
            "to infer the sizes of the model; got keys "
            f"{sorted(weights)}."
        )
    bidirectional = any(name.endswith("_reverse") for name in weights)
    return Network(cell, nonlinearity, n_features, hidden_sizes, out_shape[0],
                   bidirectional, output, loss)


def normalized_weights(sample_weight, dtype):
    """``(weights / scale in dtype, scale)``, scale the largest weight.

    Every loss is a ratio of weighted sums, so it does not change when all
    weights are scaled alike; scaled to at most 1 first, weights that float64
    holds (1e-50, 1e300) do not vanish or overflow when cast to float32.
    """
    if sample_weight is None:
        return None, 1.0
    scale = float(np.max(sample_weight))
    return np.ascontiguousarray(np.asarray(sample_weight, dtype=np.float64) / scale,
                                dtype=dtype), scale


def loss_and_grad(
    weights,
    X,
    y,
    *,
    cell="rnn",
    nonlinearity="tanh",
    lengths=None,
    bptt_truncate=None,
    sample_weight=None,
    n_threads=None,
    output="last",
    loss="cross_entropy",
):
    """Loss of a recurrent network and its gradient: one output per sequence,
    or one per step.

    Runs the same Cython forward and backward pass through time that
    :class:`cbptt.RNNClassifier`, :class:`cbptt.RNNRegressor` and the
    per-step :class:`cbptt.RNNStepClassifier` and
    :class:`cbptt.RNNStepRegressor` train with,
    on weights you supply. Use it to check gradients, to evaluate weights
    trained elsewhere (the names and shapes are PyTorch's ``state_dict``), or
    to write your own training loop.

    Parameters
    ----------
    weights : dict of str -> array-like
        The ``state_dict`` of ``torch.nn.RNN/LSTM/GRU(D, H, batch_first=True,
        num_layers=..., bidirectional=...)``: for each layer k,
        ``weight_ih_l{k}`` (G*H_k, D_k), ``weight_hh_l{k}`` (G*H_k, H_k),
        ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (G*H_k,), with suffix
        ``_reverse`` for the reverse direction of a bidirectional layer;
        G = 1, 4, 3 for rnn, lstm, gru. Layers may differ in size. Plus the
        head ``weight_out`` (C, H_last) or (C, 2*H_last) and ``bias_out``
        (C,): C classes, or C outputs with ``loss="squared_error"``.
        Layers, directions and sizes are read from it.
    X : array-like of shape (n_samples, n_timesteps, n_features)
        Input sequences, float32 or float64 (the computation runs in X's
        dtype; other numeric dtypes are converted to float64).
    y : array-like of shape (n_samples,), (n_samples, C), (n_samples, n_timesteps) \
or (n_samples, n_timesteps, C)
        ``loss="cross_entropy"``: class indices in ``[0, C)``, shape
        (n_samples,). ``loss="squared_error"``: real targets of shape
        (n_samples, C), or (n_samples,) when C is 1. With
        ``output="sequence"``, one of those per step: (n_samples,
        n_timesteps) class indices, or (n_samples, n_timesteps, C) values
        ((n_samples, n_timesteps) when C is 1); entries past a sequence's
        length are ignored.
    cell : {"rnn", "lstm", "gru"}, default="rnn"
        Recurrent cell, with PyTorch's equations and gate order.
    nonlinearity : {"tanh", "relu"}, default="tanh"
        Activation of the Elman cell; gated cells accept only "tanh".
    lengths : array-like of shape (n_samples,), default=None
        Number of valid steps of each sequence, in ``[1, n_timesteps]``; the
        rest is padding, whose content never matters. None means all steps.
    bptt_truncate : int, default=None
        Truncated BPTT, for unidirectional networks with ``output="last"``
        or ``"sequence"``; None means full BPTT. With "last", backpropagate
        through the last ``bptt_truncate`` steps of each sequence only: the
        steps before run forward only. With "sequence", cut each sequence
        into windows of ``bptt_truncate`` steps from its first step: the
        state flows from window to window, the gradient does not. Either
        way the memory grows with ``bptt_truncate``, not with the sequence
        length.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights; the loss is ``sum_i w_i l_i / sum_i w_i``, or
        with ``output="sequence"`` the mean per-step loss
        ``sum_i w_i sum_t l_it / sum_i w_i L_i`` over each sequence's L_i
        valid steps.
    n_threads : int, default=None
        Maximum number of OpenMP threads; None uses what OpenMP allows.
        The result does not depend on it.
    output : {"last", "mean", "max", "sequence"}, default="last"
        What the head reads of the top layer's output sequence: each
        direction's state after its last step (PyTorch's ``h_n``), the mean
        or elementwise max of the outputs over each sequence's valid steps,
        or ("sequence") the output at every valid step. ``weight_out`` and
        ``bias_out`` then map it to C values (per step with "sequence").
    loss : {"cross_entropy", "squared_error"}, default="cross_entropy"
        Softmax cross-entropy of the class index, or half the mean squared
        error over the C outputs, ``l_i = sum_c (z_ic - y_ic)^2 / (2 C)``.

    Returns
    -------
    loss : float
        Weighted mean loss.
    grads : dict of str -> ndarray
        Gradient of ``loss`` for every weight, same keys and shapes as
        ``weights``, in X's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt import loss_and_grad
    >>> rng = np.random.default_rng(0)
    >>> H, D, C = 4, 3, 2
    >>> weights = {
    ...     "weight_ih_l0": rng.normal(size=(H, D)),
    ...     "weight_hh_l0": rng.normal(size=(H, H)) / 2,
    ...     "bias_ih_l0": np.zeros(H), "bias_hh_l0": np.zeros(H),
    ...     "weight_out": rng.normal(size=(C, H)), "bias_out": np.zeros(C),
    ... }
    >>> X = rng.normal(size=(5, 7, D))
    >>> y = np.array([0, 1, 1, 0, 1])
    >>> loss, grads = loss_and_grad(weights, X, y)
    >>> grads["weight_hh_l0"].shape
    (4, 4)
    >>> targets = rng.normal(size=(5, C))
    >>> loss, grads = loss_and_grad(weights, X, targets, output="mean",
    ...                             loss="squared_error")
    """
    _check_choice(cell, "cell", CELLS)
    _check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
    _check_choice(output, "output", OUTPUTS)
    _check_choice(loss, "loss", LOSSES)
    check_nonlinearity(cell, nonlinearity)
    n_threads = check_positive_int_or_none(n_threads, "n_threads")
    bptt_truncate = check_positive_int_or_none(bptt_truncate, "bptt_truncate")
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except ValueError:  # ragged nested lists
            raise ValueError(
                "X must be a 3-D array (n_samples, n_timesteps, n_features); for "
                "sequences of different lengths, pad them to one length and pass "
                "lengths."
            ) from None
    if X.ndim != 3:
        raise ValueError(
            f"X must be a 3-D array (n_samples, n_timesteps, n_features); got "
            f"{X.ndim} dimension(s)."
        )
    X, _ = check_sequences(X, ensure_all_finite=lengths is None)
    n_samples, n_timesteps, n_features = X.shape
    if lengths is None:
        lengths = np.full(n_samples, n_timesteps, dtype=np.intp)
    else:
        lengths = check_lengths(lengths, n_samples, n_timesteps)
        valid = np.arange(n_timesteps) < lengths[:, np.newaxis]
        if not np.all(np.isfinite(X[valid])):
            raise ValueError("X contains NaN or infinity within the valid steps.")

    net = network_from_weights(weights, cell, nonlinearity, n_features, output, loss)
    check_truncation(bptt_truncate, net.n_dirs == 2, output)
    flat = net.pack(weights, X.dtype)
    if output == "sequence":
        y = _check_step_targets(y, loss, lengths, n_timesteps, net.n_outputs, X.dtype)
    else:
        y = _check_loss_targets(y, loss, n_samples, net.n_outputs, X.dtype)
    if sample_weight is None:
        weight_sum = float(n_samples)
    else:
        sample_weight = np.asarray(sample_weight)
        if sample_weight.shape != (n_samples,) or sample_weight.dtype.kind not in "fiub":
            raise ValueError(
                f"sample_weight must be a numeric array of shape ({n_samples},); "
                f"got shape {sample_weight.shape} and dtype {sample_weight.dtype}."
            )
        if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
            raise ValueError("sample_weight must be finite and non-negative.")
        if n_samples == 0 or not np.max(sample_weight) > 0:
            raise ValueError("The loss needs at least one sample with positive weight.")
        sample_weight, _ = normalized_weights(sample_weight, np.float64)
        weight_sum = float(np.sum(sample_weight))
        sample_weight = np.ascontiguousarray(sample_weight, dtype=X.dtype)
    if n_samples == 0 or weight_sum <= 0:
        raise ValueError("The loss needs at least one sample with positive weight.")
    if output == "sequence":  # the loss is a mean over steps
        weight_sum = float(np.dot(lengths, np.ones(n_samples) if sample_weight is None
                                  else sample_weight.astype(np.float64)))
    truncate = n_timesteps if bptt_truncate is None else bptt_truncate

    grad = np.empty_like(flat)
    with single_threaded_blas():
        value = net.loss_and_grad(
            flat, X, lengths, sort_by_length(lengths), y, sample_weight,
            1.0 / weight_sum, grad, truncate, effective_n_threads(n_threads),
        )
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        raise ValueError(
            "The loss or its gradient is not finite; the weights are too large "
            "for this input."
        )
    return float(value), {name: view.copy() for name, view in net.unpack(grad).items()}


def _check_loss_targets(y, loss, n_samples, n_outputs, dtype):
    """y as the kernels read it: intp class indices in [0, n_outputs)
    (cross-entropy), or C-contiguous (n_samples, n_outputs) values in X's
    dtype (squared error)."""
    y = np.asarray(y)
    if loss == "cross_entropy":
        if y.shape != (n_samples,):
            raise ValueError(f"y must have shape ({n_samples},); got {y.shape}.")
        _check_class_indices(y, n_outputs)
        return np.ascontiguousarray(y, dtype=np.intp)
    if n_outputs == 1 and y.shape == (n_samples,):
        y = y[:, np.newaxis]
    if y.shape != (n_samples, n_outputs):
        raise ValueError(
            f"y must have shape ({n_samples}, {n_outputs}) with loss='squared_error' "
            f"(one value per row of weight_out); got {y.shape}."
        )
    return _real_targets(y, dtype)


def _check_step_targets(y, loss, lengths, n_timesteps, n_outputs, dtype):
    """Per-step y, flattened over samples and steps for the kernels: (n * T,)
    intp class indices (cross-entropy) or (n * T, n_outputs) values in X's
    dtype (squared error). Entries past a sequence's length are ignored (set
    to zero)."""
    n_samples = len(lengths)
    y = np.asarray(y)
    valid = np.arange(n_timesteps) < lengths[:, np.newaxis]
    if loss == "cross_entropy":
        if y.shape != (n_samples, n_timesteps):
            raise ValueError(
                f"y must have shape ({n_samples}, {n_timesteps}) with "
                f"output='sequence': a class index per step; got {y.shape}."
            )
        _check_class_indices(y[valid] if y.dtype.kind in "iu" else y, n_outputs)
        return np.where(valid, y, 0).astype(np.intp).reshape(-1)
    if n_outputs == 1 and y.shape == (n_samples, n_timesteps):
        y = y[:, :, np.newaxis]
    if y.shape != (n_samples, n_timesteps, n_outputs):
        raise ValueError(
            f"y must have shape ({n_samples}, {n_timesteps}, {n_outputs}) with "
            f"output='sequence' and loss='squared_error' (n_outputs values per "
            f"step); got {y.shape}."
        )
    if y.dtype.kind not in "fiub":
        raise ValueError(f"y must hold real numbers; got dtype {y.dtype}.")
    y = np.where(valid[:, :, np.newaxis], y, 0)
    return _real_targets(y.reshape(-1, n_outputs), dtype)


def _check_class_indices(y, n_classes):
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(
            f"y must hold integer class indices in [0, {n_classes}) "
            f"(n_classes is weight_out.shape[0])."
        )


def _real_targets(y, dtype):
    """Real targets as a C-contiguous array of X's dtype, all finite."""
    if y.dtype.kind not in "fiub":
        raise ValueError(f"y must hold real numbers; got dtype {y.dtype}.")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"y contains NaN or infinity, or values too large for {dtype}.")
    return y
