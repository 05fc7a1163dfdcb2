"""Export a fitted estimator to ONNX: ``to_onnx``.

Why: a trained model should run where Python and cbptt are not installed (a
C++ or Java service, a browser, an edge device). ONNX has recurrent operators
of its own (RNN, LSTM, GRU), so each layer of a cbptt network becomes one ONNX
node, with its gate blocks reordered from PyTorch's convention to ONNX's; the
input averaging of ``downsample_`` (when above 1) a few tensor operations
before the first, and the head (last state, mean or max over the valid steps,
or every step) a few after the last. The graph reproduces ``predict`` (and
``predict_proba``) and nothing of training. ``onnx`` is imported when
``to_onnx`` is called, never by ``import cbptt``.
"""

import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cbptt import __version__
from cbptt._classifier import RNNClassifier
from cbptt._regressor import RNNRegressor
from cbptt._step import RNNStepClassifier, RNNStepRegressor

# The oldest opset with the operators' current form (RNN, LSTM, GRU 14) and
# the default: opset 17 is read by onnxruntime >= 1.13 and most other runtimes.
MIN_OPSET = 14
DEFAULT_OPSET = 17

# ONNX's gate blocks as indices of PyTorch's: the LSTM's (i, o, f, c) from
# (i, f, g, o), the GRU's (z, r, h) from (r, z, n).
_ONNX_GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
_ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_ESTIMATORS = (RNNClassifier, RNNRegressor, RNNStepClassifier, RNNStepRegressor)


def to_onnx(estimator, *, with_lengths=True, opset=None, dtype="float32"):
    """Export a fitted estimator as an ONNX model that computes its predictions.

    The model runs in any ONNX runtime (e.g. ``onnxruntime``) without Python
    or cbptt. Each recurrent layer is one ONNX ``RNN``, ``LSTM`` or ``GRU``
    node, reading the input averaged over windows of ``downsample_`` steps
    when that is above 1, as ``predict`` does; the head (``pooling``, or
    every step for the per-step estimators) and the output layer follow as
    plain tensor operations. Only prediction is exported: dropout (training
    only) is left out, and the model cannot be trained further.

    Parameters
    ----------
    estimator : RNNClassifier, RNNRegressor, RNNStepClassifier or RNNStepRegressor
        A fitted estimator.
    with_lengths : bool, default=True
        Whether the model has the input ``"lengths"``, the number of valid
        steps of each sequence of a padded batch. Without it, every sequence
        of a batch is as long as the batch (as when ``predict`` is given a
        3-D array).
    opset : int or None, default=None
        The ONNX opset to target, at least 14; None means 17.
    dtype : {"float32", "float64"}, default="float32"
        The precision of the weights, of ``"X"`` and of the outputs (NumPy's
        types are accepted too). onnxruntime runs recurrent operators in
        float32 only.

    Returns
    -------
    model : onnx.ModelProto
        A checked model; save it with ``onnx.save(model, path)``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    TypeError
        If ``estimator`` is not one of cbptt's estimators, or its class
        labels have a type ONNX cannot hold.
    ValueError
        For an ``opset`` or ``dtype`` that cannot be exported, or when the
        estimator's parameters no longer match its fitted ``weights_``.
    ImportError
        If ``onnx`` is not installed (``pip install cbptt[onnx]``).

    Notes
    -----
    Inputs (``batch`` and ``time`` are dynamic):

    * ``"X"``: ``(batch, time, n_features_in_)`` of ``dtype``, the sequences,
      padded at the end;
    * ``"lengths"`` (with ``with_lengths=True``): ``(batch,)`` int64, the
      length of each sequence, between 1 and ``time``.

    Outputs, shaped as the estimator's ``predict`` and ``predict_proba``
    shape theirs for a 3-D array:

    * classifiers: ``"label"``, ``(batch,)`` for :class:`RNNClassifier` and
      ``(batch, time)`` for :class:`RNNStepClassifier`, holding the labels of
      ``classes_`` (int64 for integer labels, strings for strings, also bool
      or double); ``"probabilities"``, ``(batch, n_classes)`` or ``(batch,
      time, n_classes)``, columns in the order of ``classes_``;
    * regressors: ``"predictions"``, ``(batch,)`` or ``(batch, n_outputs)``
      for :class:`RNNRegressor`, ``(batch, time)`` or ``(batch, time,
      n_outputs)`` for :class:`RNNStepRegressor`, one value per sequence or
      step when the targets had one.

    The per-step outputs past a sequence's length are padding with no
    meaning: cut each row to its length, as ``predict`` does for a list of
    sequences. See :doc:`/deploy` for an example.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as error:
        raise ImportError(
            "cbptt.to_onnx needs the onnx package; install it with "
            "`pip install cbptt[onnx]` (which also installs onnxruntime to run "
            "the model)."
        ) from error

    if not isinstance(estimator, _ESTIMATORS):
        raise TypeError(
            "to_onnx exports a fitted RNNClassifier, RNNRegressor, RNNStepClassifier "
            f"or RNNStepRegressor; got {type(estimator).__name__}. For a Pipeline, "
            "export its last step and apply the steps before it to the input."
        )
    check_is_fitted(estimator)
    opset = _check_opset(opset, onnx.defs.onnx_opset_version())
    dtype = _check_dtype(dtype)
    if not isinstance(with_lengths, (bool, np.bool_)):
        raise TypeError(f"with_lengths must be True or False; got {with_lengths!r}.")
    network = estimator._network(estimator.n_features_in_,
                                 estimator.weights_["bias_out"].shape[0])
    if not estimator._is_fitted_for(network):
        raise ValueError(
            f"The parameters of this {type(estimator).__name__} (cell, "
            "hidden_layer_sizes, bidirectional) no longer match its fitted "
            "weights_; set them back or fit again before exporting."
        )

    graph = _Graph(helper, numpy_helper, TensorProto, opset, dtype)
    float_type = graph.float_type
    per_step = network.output == "sequence"
    inputs = [helper.make_tensor_value_info(
        "X", float_type, ["batch", "time", estimator.n_features_in_])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64,
                                                    ["batch"]))

    # The per-step estimators have no downsample_: they keep every step.
    window = int(getattr(estimator, "downsample_", 1))
    x, lengths = "X", ("lengths" if with_lengths else None)
    if window > 1:
        x, lengths = _average_windows(graph, window, estimator.n_features_in_, lengths)
    top_sequence, top_state = _recurrent_layers(graph, network, estimator.weights_,
                                                x, lengths)
    weight_out = estimator.weights_["weight_out"]
    bias_out = estimator.weights_["bias_out"]
    if per_step:
        # (time, batch, F) @ (F, C) -> (batch, time, C)
        out = graph.node("MatMul", [top_sequence,
                                    graph.const(weight_out.T, "weight_out_T")])
        out = graph.node("Add", [out, graph.const(bias_out, "bias_out")])
        out = graph.node("Transpose", [out], perm=[1, 0, 2])
    else:
        head_in = _head(graph, network.output, top_sequence, top_state, lengths)
        out = graph.node("Gemm", [head_in, graph.const(weight_out, "weight_out"),
                                  graph.const(bias_out, "bias_out")], transB=1)

    outputs = _outputs(graph, estimator, out, per_step)
    model = helper.make_model(
        helper.make_graph(graph.nodes, type(estimator).__name__, inputs, outputs,
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="cbptt",
        producer_version=__version__,
        doc_string=f"{type(estimator).__name__} exported by cbptt.to_onnx",
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_opset(opset, newest):
    if opset is None:
        return DEFAULT_OPSET
    if (not isinstance(opset, numbers.Integral) or isinstance(opset, bool)
            or not MIN_OPSET <= opset <= newest):
        raise ValueError(
            f"opset must be an integer from {MIN_OPSET} to {newest} (the newest "
            f"the installed onnx knows), or None for {DEFAULT_OPSET}; got {opset!r}."
        )
    return int(opset)


def _check_dtype(dtype):
    try:
        checked = None if dtype is None else np.dtype(dtype)
    except TypeError:
        checked = None
    if checked not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")
    return checked.type


def _outputs(graph, estimator, out, per_step):
    """The graph's outputs from the output layer's ``out``, (batch, C) or
    (batch, time, C): labels and probabilities, or predictions. Returns their
    value infos."""
    helper = graph.helper
    dims = ["batch", "time"] if per_step else ["batch"]
    n_outputs = len(estimator.weights_["bias_out"])
    if isinstance(estimator, (RNNClassifier, RNNStepClassifier)):
        classes = _labels_tensor(estimator.classes_, graph)
        index = graph.node("ArgMax", [out], axis=-1, keepdims=0)  # first of ties
        graph.node("Gather", [graph.add(classes), index], output="label")
        graph.node("Softmax", [out], axis=-1, output="probabilities")
        return [helper.make_tensor_value_info("label", classes.data_type, dims),
                helper.make_tensor_value_info("probabilities", graph.float_type,
                                              dims + [n_outputs])]
    # As predict: one value per sequence (or step) when the targets had one.
    one_value = estimator._one_output if per_step else n_outputs == 1
    if one_value:
        graph.node("Squeeze", [out, graph.axes(len(dims))], output="predictions")
    else:
        graph.node("Identity", [out], output="predictions")
    return [helper.make_tensor_value_info("predictions", graph.float_type,
                                          dims + ([] if one_value else [n_outputs]))]


def _labels_tensor(classes, graph):
    """``classes_`` as the tensor "classes": the labels themselves, so that
    "label" holds what ``predict`` returns."""
    TensorProto = graph.TensorProto
    values = classes.tolist()
    if classes.dtype.kind == "b":
        element_type = TensorProto.BOOL
    elif classes.dtype.kind == "f":
        element_type = TensorProto.DOUBLE
    elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        if not all(-(2**63) <= v < 2**63 for v in values):
            raise TypeError("The class labels do not fit in int64, the integer type "
                            "of the exported 'label' output.")
        element_type = TensorProto.INT64
    elif all(isinstance(v, (str, bytes)) for v in values):
        element_type = TensorProto.STRING
        values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    else:
        raise TypeError(
            "to_onnx exports class labels that are all integers, all strings, "
            f"booleans or floats; classes_ holds {classes.dtype} values of types "
            f"{sorted({type(v).__name__ for v in values})}. Fit on labels of one of "
            "these types."
        )
    return graph.helper.make_tensor("classes", element_type, [len(values)], values)


def _onnx_gates(weight, cell):
    """A weight's (or bias's) gate blocks of rows in ONNX's order."""
    blocks = np.split(np.asarray(weight), len(_ONNX_GATE_ORDER[cell]), axis=0)
    return np.concatenate([blocks[g] for g in _ONNX_GATE_ORDER[cell]], axis=0)


def _average_windows(graph, window, n_features, lengths):
    """The input averaged over consecutive windows of ``window`` steps, as
    ``cbptt._base.average_windows`` averages it for ``predict``: the last
    window of a sequence averages the steps it has, and the padding past
    ``lengths`` (when given) is not read. Returns the names of ``(x (batch,
    windows, D), lengths of the averaged sequences or None)``."""
    zero, one = graph.const(np.array(0), "zero"), graph.const(np.array(1), "one")
    w = graph.const(np.array(window), "window")
    n_steps = graph.node("Gather", [graph.node("Shape", ["X"]), one])
    x = "X"
    if lengths is not None:  # the padding may hold anything: zero it
        x = graph.node("Where", [_valid_steps(graph, n_steps, lengths, time_axis=1), x,
                                 graph.const(np.array(0.0), "zero")])
    # Zeros at the end up to a whole number of windows, then one sum per window.
    w_less_one = graph.const(np.array(window - 1), "window_less_one")
    n_windows = graph.node("Div", [graph.node("Add", [n_steps, w_less_one]), w])
    extra = graph.node("Sub", [graph.node("Mul", [n_windows, w]), n_steps])
    # Pad's pads: every axis's start, then every axis's end; only time's end.
    pads = graph.node("Concat", [graph.const(np.zeros(4, dtype=np.int64), "pads_before"),
                                 graph.node("Unsqueeze", [extra, graph.axes(0)]),
                                 graph.const(np.zeros(1, dtype=np.int64), "pads_after")],
                      axis=0)
    x = graph.node("Pad", [x, pads])
    x = graph.node("Reshape", [x, graph.const(np.array([0, -1, window, n_features]),
                                              "shape_batch_windows_window_features")])
    sums = graph.node("ReduceSum", [x, graph.axes(2)], keepdims=0)
    # Window s holds min(w, L - s w) valid steps; max 1 past the sequence's end,
    # where the sum is zero.
    starts = graph.node("Mul", [graph.node("Range", [zero, n_windows, one]), w])
    if lengths is None:  # every sequence is as long as the batch
        left = graph.node("Sub", [n_steps, starts])                   # (windows,)
    else:
        left = graph.node("Sub", [graph.node("Unsqueeze", [lengths, graph.axes(1)]),
                                  starts])                            # (batch, windows)
    counts = graph.node("Max", [graph.node("Min", [left, w]), one])
    counts = graph.node("Cast", [graph.node("Unsqueeze", [counts, graph.axes(-1)])],
                        to=graph.float_type)
    x = graph.node("Div", [sums, counts])
    if lengths is not None:
        lengths = graph.node("Div", [graph.node("Add", [lengths, w_less_one]), w])
    return x, lengths


def _recurrent_layers(graph, network, weights, x, lengths):
    """One ONNX recurrent node per layer, reading ``x`` (batch, time, D) and
    ``lengths`` (None: every sequence is ``time`` steps long); returns the top
    layer's outputs as ``(sequence (time, batch, F), final states (directions,
    batch, H))``."""
    cell = network.cell
    x = graph.node("Transpose", [x], perm=[1, 0, 2])  # ONNX reads (time, batch, D)
    sequence_lens = graph.node("Cast", [lengths], to=graph.TensorProto.INT32) \
        if lengths is not None else ""
    suffixes = ("", "_reverse")[: network.n_dirs]
    n_layers = len(network.hidden_sizes)
    for k, n_hidden in enumerate(int(h) for h in network.hidden_sizes):
        W = np.stack([_onnx_gates(weights[f"weight_ih_l{k}{s}"], cell) for s in suffixes])
        R = np.stack([_onnx_gates(weights[f"weight_hh_l{k}{s}"], cell) for s in suffixes])
        B = np.stack([np.concatenate([_onnx_gates(weights[f"bias_ih_l{k}{s}"], cell),
                                      _onnx_gates(weights[f"bias_hh_l{k}{s}"], cell)])
                      for s in suffixes])
        attributes = {"hidden_size": n_hidden,
                      "direction": "bidirectional" if network.n_dirs == 2 else "forward"}
        if cell == "rnn":
            activation = "Relu" if network.spec["relu"] else "Tanh"
            attributes["activations"] = [activation] * network.n_dirs
        if cell == "gru":
            attributes["linear_before_reset"] = 1  # PyTorch's GRU
        inputs = [x, graph.const(W, f"W_l{k}"), graph.const(R, f"R_l{k}"),
                  graph.const(B, f"B_l{k}"), sequence_lens]
        y, y_h = graph.node(_ONNX_OP[cell], inputs, n_outputs=2, **attributes)
        # Y is (time, directions, batch, H): both directions side by side, as
        # the next layer (or the head) reads them.
        y = graph.node("Transpose", [y], perm=[0, 2, 1, 3])
        x = graph.node("Reshape", [y, graph.const(np.array([0, 0, -1]),
                                                  "shape_time_batch_features")])
        if k == n_layers - 1:
            return x, y_h


def _head(graph, output, sequence, state, lengths):
    """The head's input ``e`` (batch, F) from the top layer, whose sequences
    have ``lengths`` steps (None: as many as ``sequence`` has)."""
    if output == "last":
        # Y_h: each direction's state after its last step, forward first.
        state = graph.node("Transpose", [state], perm=[1, 0, 2])
        return graph.node("Reshape", [state, graph.const(np.array([0, -1]),
                                                         "shape_batch_features")])
    if lengths is None:
        reduce = "ReduceMean" if output == "mean" else "ReduceMax"
        return graph.reduce(reduce, sequence)
    n_steps = graph.node("Gather", [graph.node("Shape", [sequence]),
                                    graph.const(np.array(0), "zero")])
    valid = _valid_steps(graph, n_steps, lengths, time_axis=0)
    if output == "mean":
        zero = graph.const(np.array(0.0), "zero")
        total = graph.reduce("ReduceSum", graph.node("Where", [valid, sequence, zero]))
        lengths = graph.node("Unsqueeze", [lengths, graph.axes(1)])  # (batch, 1)
        counts = graph.node("Cast", [lengths], to=graph.float_type)
        return graph.node("Div", [total, counts])
    lowest = graph.const(np.array(-np.inf, dtype=graph.dtype), "minus_infinity")
    return graph.reduce("ReduceMax", graph.node("Where", [valid, sequence, lowest]))


def _valid_steps(graph, n_steps, lengths, time_axis):
    """Boolean (time, batch, 1) with ``time_axis=0``, (batch, time, 1) with
    ``time_axis=1``: whether step t of ``n_steps`` is within sequence i's
    length."""
    steps = graph.node("Range", [graph.const(np.array(0), "zero"), n_steps,
                                 graph.const(np.array(1), "one")])
    steps = graph.node("Unsqueeze", [steps, graph.axes(1 - time_axis)])
    lengths = graph.node("Unsqueeze", [lengths, graph.axes(time_axis)])
    valid = graph.node("Less", [steps, lengths])
    return graph.node("Unsqueeze", [valid, graph.axes(2)])


class _Graph:
    """Nodes and initializers of the graph under construction, with unique
    names for intermediate values."""

    def __init__(self, helper, numpy_helper, TensorProto, opset, dtype):
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.TensorProto = TensorProto
        self.opset = opset
        self.dtype = dtype
        self.float_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.nodes = []
        self.initializers = []
        self._names = set()
        self._constants = {}

    def _unique(self, name):
        candidate, i = name, 0
        while candidate in self._names:
            i += 1
            candidate = f"{name}{i}"
        self._names.add(candidate)
        return candidate

    def add(self, tensor):
        """Add an initializer (TensorProto), named as it is; returns its name."""
        self._names.add(tensor.name)
        self.initializers.append(tensor)
        return tensor.name

    def const(self, array, name):
        """A constant: float arrays in the graph's dtype, integers as int64,
        0-d arrays as scalars; equal constants are one initializer."""
        array = np.asarray(array)
        # np.array, not np.ascontiguousarray, which makes a scalar 1-D.
        array = np.array(array, dtype=self.dtype if array.dtype.kind == "f" else np.int64,
                         order="C")
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            tensor = self.numpy_helper.from_array(array, self._unique(name))
            self._constants[key] = self.add(tensor)
        return self._constants[key]

    def axes(self, *axes):
        return self.const(np.array(axes), "axes")

    def node(self, op, inputs, *, output=None, n_outputs=1, **attributes):
        """Append a node; returns its output name (a tuple of n_outputs names)."""
        if output is None:
            outputs = [self._unique(f"{op.lower()}_out") for _ in range(n_outputs)]
        else:
            outputs = [output]
            self._names.add(output)
        self.nodes.append(self.helper.make_node(op, inputs, outputs,
                                                name=self._unique(op), **attributes))
        return outputs[0] if n_outputs == 1 else tuple(outputs)

    def reduce(self, op, x):
        """Reduce (time, batch, F) over time; before opset 18 only ReduceSum
        takes its axes as an input."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.axes(0)], keepdims=0)
        return self.node(op, [x], axes=[0], keepdims=0)
