"""cbptt.to_onnx: the exported graph, run by onnxruntime, predicts what the
estimator predicts.

Every estimator, cell, topology (one layer, stacked layers of different
sizes, stacked and bidirectional) and head is exported once and run on a
ragged batch padded with noise (the "lengths" input) and on a batch of
another size and length; labels, probabilities and predictions must match
``predict`` and ``predict_proba`` in float32. Then: the input averaging of
``downsample_`` (windows of 2 and 3 steps, and 'auto'), the models without
"lengths", opsets on both sides of ReduceMax's change (18), float64 (in
onnx's reference evaluator, as onnxruntime runs recurrent operators in
float32 only), the types of class labels, the inputs and outputs the graph
declares, and the errors. Needs onnx and onnxruntime (``pip install
cbptt[onnx]``); skipped without them.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from cbptt import (
    RNNClassifier,
    RNNRegressor,
    RNNStepClassifier,
    RNNStepRegressor,
    to_onnx,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

N_FEATURES = 2
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
TOPOLOGIES = {
    "one layer": dict(hidden_layer_sizes=(4,), bidirectional=False),
    "stacked": dict(hidden_layer_sizes=(5, 3), bidirectional=False),
    "stacked bidirectional": dict(hidden_layer_sizes=(4, 3), bidirectional=True),
}
HEADS = [(RNNClassifier, "last"), (RNNClassifier, "mean"), (RNNClassifier, "max"),
         (RNNRegressor, "last"), (RNNRegressor, "mean"), (RNNRegressor, "max"),
         (RNNStepClassifier, None), (RNNStepRegressor, None)]
LABELS = np.array([3, 7, 11])  # not 0..C-1: "label" must hold the labels


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _sequences(lengths, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(length, N_FEATURES)).astype(np.float32)
            for length in lengths]


def _targets(estimator_class, X, seed, n_outputs=None):
    """Labels or values, per sequence or per step, for the sequences X."""
    rng = np.random.default_rng(seed)
    if estimator_class is RNNClassifier:
        return LABELS[rng.integers(0, 3, len(X))]
    if estimator_class is RNNRegressor:
        n_outputs = n_outputs or 2
        return rng.normal(size=(len(X),) + ((n_outputs,) if n_outputs > 1 else ()))
    if estimator_class is RNNStepClassifier:
        return [LABELS[rng.integers(0, 3, len(x))] for x in X]
    shape = () if n_outputs is None else (n_outputs,)
    return [rng.normal(size=(len(x),) + shape) for x in X]


def _fit(estimator_class, pooling=None, n_outputs=None, **params):
    X = _sequences([1, 4, 6, 3, 5, 2, 6, 4, 5, 3], seed=0)
    if pooling is not None:
        params["pooling"] = pooling
    estimator = estimator_class(max_iter=2, random_state=0, **params)
    return estimator.fit(X, _targets(estimator_class, X, seed=1, n_outputs=n_outputs))


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _padded(X, seed=2):
    """X padded at the end with noise, which the model must not read."""
    rng = np.random.default_rng(seed)
    T = max(len(x) for x in X)
    padded = (3 * rng.normal(size=(len(X), T, N_FEATURES))).astype(np.float32)
    for i, x in enumerate(X):
        padded[i, : len(x)] = x
    return padded, np.array([len(x) for x in X], dtype=np.int64)


def _run(session, X_padded, lengths=None):
    feeds = {"X": X_padded}
    if lengths is not None:
        feeds["lengths"] = lengths
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _valid(outputs, lengths):
    """The per-step outputs (n, T, ...) at each sequence's valid steps."""
    return np.concatenate([outputs[i, :length] for i, length in enumerate(lengths)])


def _check_same_predictions(estimator, got, X, lengths):
    """got: the graph's outputs for the padded X; compare with predict on
    the list X (which predict answers per sequence, or per step)."""
    per_step = isinstance(estimator, (RNNStepClassifier, RNNStepRegressor))
    if isinstance(estimator, (RNNClassifier, RNNStepClassifier)):
        proba = estimator.predict_proba(X)
        labels = estimator.predict(X)
        if per_step:
            proba = np.concatenate(proba)
            labels = np.concatenate(labels)
            got = {name: _valid(value, lengths) for name, value in got.items()}
        assert got["probabilities"].shape == proba.shape
        assert_allclose(got["probabilities"], proba, rtol=1e-5, atol=1e-6)
        assert got["label"].dtype == np.int64
        # The label is the top probability's class; where the top two are
        # too close to tell apart in float32, the two may differ.
        assert_array_equal(got["label"],
                           estimator.classes_[np.argmax(got["probabilities"], axis=-1)])
        top_two = np.sort(proba, axis=-1)[..., -2:]
        clear = top_two[..., 1] - top_two[..., 0] > 1e-4
        assert clear.any()
        assert_array_equal(got["label"][clear], labels[clear])
    else:
        predictions = estimator.predict(X)
        if per_step:
            predictions = np.concatenate(predictions)
            got = {"predictions": _valid(got["predictions"], lengths)}
        assert got["predictions"].shape == predictions.shape
        assert_allclose(got["predictions"], predictions, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("estimator_class, pooling", HEADS,
                         ids=[f"{cls.__name__}-{pooling or 'steps'}" for cls, pooling in HEADS])
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell, nonlinearity", CELLS, ids=["rnn", "rnn-relu", "lstm", "gru"])
def test_onnxruntime_predicts_as_predict(estimator_class, pooling, topology, cell,
                                         nonlinearity):
    estimator = _fit(estimator_class, pooling, cell=cell, nonlinearity=nonlinearity,
                     **TOPOLOGIES[topology])
    session = _session(to_onnx(estimator))
    # A ragged batch, padded with noise, then a batch of another size and
    # length: batch and time are dynamic.
    for lengths in ([3, 1, 7, 4, 7], [2, 2]):
        X = _sequences(lengths, seed=len(lengths))
        X_padded, lengths = _padded(X)
        _check_same_predictions(estimator, _run(session, X_padded, lengths), X, lengths)


@pytest.mark.parametrize("estimator_class, pooling", HEADS,
                         ids=[f"{cls.__name__}-{pooling or 'steps'}" for cls, pooling in HEADS])
def test_without_lengths_every_sequence_is_as_long_as_the_batch(estimator_class, pooling):
    estimator = _fit(estimator_class, pooling, cell="gru", hidden_layer_sizes=(3, 4),
                     bidirectional=True)
    model = to_onnx(estimator, with_lengths=False)
    assert [i.name for i in model.graph.input] == ["X"]
    session = _session(model)
    for n_samples, n_timesteps in [(4, 6), (1, 3)]:
        X = _sequences([n_timesteps] * n_samples, seed=n_samples)
        got = _run(session, np.stack(X))
        _check_same_predictions(estimator, got, X, [n_timesteps] * n_samples)


@pytest.mark.parametrize("opset", [14, 18])
@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_opsets_before_and_after_reduce_takes_axes_as_input(opset, pooling, with_lengths):
    estimator = _fit(RNNRegressor, pooling, cell="lstm", hidden_layer_sizes=(4,))
    model = to_onnx(estimator, opset=opset, with_lengths=with_lengths)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    X = _sequences([5, 2, 4] if with_lengths else [4, 4, 4], seed=3)
    X_padded, lengths = _padded(X)
    got = _run(_session(model), X_padded, lengths if with_lengths else None)
    _check_same_predictions(estimator, got, X, lengths)


def test_default_opset_is_17():
    model = to_onnx(_fit(RNNClassifier, cell="rnn", hidden_layer_sizes=(3,)))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


@pytest.mark.parametrize("dtype", ["float64", np.float64])
def test_float64_model(dtype):
    # onnxruntime has no float64 recurrent kernels; onnx's reference
    # evaluator runs the graph (without "lengths", which it ignores).
    from onnx.reference import ReferenceEvaluator

    estimator = _fit(RNNStepRegressor, cell="lstm", hidden_layer_sizes=(3, 2),
                     bidirectional=True, n_outputs=2)
    model = to_onnx(estimator, with_lengths=False, dtype=dtype)
    double = onnx.TensorProto.DOUBLE
    assert model.graph.input[0].type.tensor_type.elem_type == double
    assert model.graph.output[0].type.tensor_type.elem_type == double
    assert {t.data_type for t in model.graph.initializer} == {double, onnx.TensorProto.INT64}
    X = np.random.default_rng(4).normal(size=(3, 5, N_FEATURES))
    (got,) = ReferenceEvaluator(model).run(None, {"X": X})
    assert got.dtype == np.float64 and got.shape == (3, 5, 2)
    assert_allclose(got, estimator.predict(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("estimator_class, n_outputs, shape", [
    (RNNRegressor, 1, (5,)),
    (RNNRegressor, 3, (5, 3)),
    (RNNStepRegressor, None, (5, 7)),
    (RNNStepRegressor, 1, (5, 7, 1)),
    (RNNStepRegressor, 3, (5, 7, 3)),
])
def test_predictions_have_predicts_shape(estimator_class, n_outputs, shape):
    estimator = _fit(estimator_class, n_outputs=n_outputs, cell="gru",
                     hidden_layer_sizes=(3,))
    X = np.stack(_sequences([7] * 5, seed=5))
    got = _run(_session(to_onnx(estimator)), X, np.full(5, 7))["predictions"]
    assert got.shape == estimator.predict(X).shape == shape
    assert_allclose(got, estimator.predict(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]),
    np.array([False, True]),
    np.array([-2.0, 0.0, 4.0]),
    np.array([-(2**40), 0, 2**40]),
], ids=["str", "bool", "float", "int"])
@pytest.mark.parametrize("estimator_class", [RNNClassifier, RNNStepClassifier])
def test_label_holds_the_class_labels(estimator_class, labels):
    X = _sequences([4, 2, 5, 3, 4, 5, 2, 3], seed=6)
    rng = np.random.default_rng(7)
    if estimator_class is RNNClassifier:
        y = labels[np.arange(len(X)) % len(labels)]
    else:
        y = [labels[rng.permutation(np.arange(len(x)) % len(labels))] for x in X]
    estimator = estimator_class(cell="rnn", hidden_layer_sizes=(3,), max_iter=1,
                                random_state=0).fit(X, y)
    X_padded, lengths = _padded(X)
    got = _run(_session(to_onnx(estimator)), X_padded, lengths)["label"]
    expected = estimator.predict(X)
    if estimator_class is RNNStepClassifier:
        got, expected = _valid(got, lengths), np.concatenate(expected)
    assert got.tolist() == expected.tolist()
    assert {type(v) for v in got.tolist()} == {type(v) for v in expected.tolist()}


def test_inputs_outputs_and_metadata():
    estimator = _fit(RNNStepClassifier, cell="lstm", hidden_layer_sizes=(3,))
    model = to_onnx(estimator)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {value.name: value for value in model.graph.input}
    outputs = {value.name: value for value in model.graph.output}
    assert dims(inputs["X"]) == ["batch", "time", N_FEATURES]
    assert dims(inputs["lengths"]) == ["batch"]
    assert inputs["lengths"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert list(outputs) == ["label", "probabilities"]
    assert dims(outputs["label"]) == ["batch", "time"]
    assert dims(outputs["probabilities"]) == ["batch", "time", 3]
    assert model.producer_name == "cbptt"
    assert model.graph.name == "RNNStepClassifier"
    # One LSTM node per layer, nothing of training.
    assert [n.op_type for n in model.graph.node].count("LSTM") == 1
    onnx.checker.check_model(model, full_check=True)


def test_export_leaves_the_estimator_as_it_was():
    estimator = _fit(RNNClassifier, cell="lstm", hidden_layer_sizes=(3, 2),
                     bidirectional=True)
    weights = {name: value.copy() for name, value in estimator.weights_.items()}
    params = estimator.get_params()
    to_onnx(estimator)
    assert estimator.get_params() == params
    assert weights.keys() == estimator.weights_.keys()
    for name, value in weights.items():
        assert_array_equal(estimator.weights_[name], value)
        assert estimator.weights_[name].dtype == value.dtype


def test_dropout_is_training_only():
    estimator = _fit(RNNClassifier, cell="gru", hidden_layer_sizes=(4, 3), dropout=0.5)
    assert {n.op_type for n in to_onnx(estimator).graph.node}.isdisjoint({"Dropout"})
    X = _sequences([3, 5], seed=8)
    X_padded, lengths = _padded(X)
    got = _run(_session(to_onnx(estimator)), X_padded, lengths)
    _check_same_predictions(estimator, got, X, lengths)


# -- input averaging (downsample_) ----------------------------------------------

POOLED_HEADS = [head for head in HEADS if head[1] is not None]


@pytest.mark.parametrize("estimator_class, pooling", POOLED_HEADS,
                         ids=[f"{cls.__name__}-{pool}" for cls, pool in POOLED_HEADS])
@pytest.mark.parametrize("window", [2, 3])
def test_downsample_averages_the_input_as_predict(estimator_class, pooling, window):
    estimator = _fit(estimator_class, pooling, cell="gru", hidden_layer_sizes=(4, 3),
                     bidirectional=True, downsample=window)
    assert estimator.downsample_ == window
    session = _session(to_onnx(estimator))
    # Last windows of 1 and 2 steps (and whole ones), a sequence shorter than
    # a window, 8 steps (not a multiple of 3), padding filled with noise.
    X = _sequences([7, 1, 5, 8, 3, 6], seed=10)
    X_padded, lengths = _padded(X)
    _check_same_predictions(estimator, _run(session, X_padded, lengths), X, lengths)
    # Without "lengths": every sequence has all 7 steps, the last window
    # averages 7 - 6 = 1 (window 2 or 3) of them.
    session = _session(to_onnx(estimator, with_lengths=False))
    X = _sequences([7] * 3, seed=11)
    _check_same_predictions(estimator, _run(session, np.stack(X)), X, [7] * 3)


@pytest.mark.parametrize("estimator_class, pooling", [(RNNClassifier, "max"),
                                                      (RNNRegressor, "mean")])
def test_downsample_auto_on_long_sequences(estimator_class, pooling):
    rng = np.random.default_rng(12)
    # Slow series (random walks): "auto" averages windows of them.
    X = [np.cumsum(s, axis=0) / 10 for s in _sequences(rng.integers(200, 231, size=6),
                                                       seed=13)]
    estimator = estimator_class(cell="lstm", hidden_layer_sizes=(3,), pooling=pooling,
                                max_iter=1, random_state=0)
    estimator.fit(X, _targets(estimator_class, X, seed=14))
    assert estimator.downsample_ == 2  # 230 // 100
    X = _sequences([203, 150, 201, 38], seed=15)
    X_padded, lengths = _padded(X)
    got = _run(_session(to_onnx(estimator)), X_padded, lengths)
    _check_same_predictions(estimator, got, X, lengths)
    # The model differs from one that reads every step.
    estimator.downsample_ = 1
    every_step = _run(_session(to_onnx(estimator)), X_padded, lengths)
    name = "probabilities" if estimator_class is RNNClassifier else "predictions"
    assert np.abs(every_step[name] - got[name]).max() > 1e-3


@pytest.mark.parametrize("opset", [14, 18])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_downsample_at_the_oldest_and_a_newer_opset(opset, with_lengths):
    estimator = _fit(RNNRegressor, "mean", cell="rnn", hidden_layer_sizes=(3,),
                     downsample=3)
    model = to_onnx(estimator, opset=opset, with_lengths=with_lengths)
    X = _sequences([5, 2, 4] if with_lengths else [5, 5], seed=16)
    X_padded, lengths = _padded(X)
    got = _run(_session(model), X_padded, lengths if with_lengths else None)
    _check_same_predictions(estimator, got, X, lengths)


def test_downsample_in_float64():
    from onnx.reference import ReferenceEvaluator

    estimator = _fit(RNNRegressor, "max", cell="lstm", hidden_layer_sizes=(3,),
                     downsample=2, dtype="float64")
    model = to_onnx(estimator, with_lengths=False, dtype="float64")
    X = np.random.default_rng(17).normal(size=(3, 5, N_FEATURES))
    (got,) = ReferenceEvaluator(model).run(None, {"X": X})
    assert got.dtype == np.float64
    assert_allclose(got, estimator.predict(X), rtol=1e-10, atol=1e-12)


def test_no_averaging_without_downsample():
    # downsample_ = 1 (here 'auto' on short sequences) and the per-step
    # estimators (no downsample_) feed X to the first layer as it is.
    for estimator in (_fit(RNNClassifier, "mean", cell="rnn", hidden_layer_sizes=(3,)),
                      _fit(RNNStepRegressor, cell="rnn", hidden_layer_sizes=(3,))):
        assert getattr(estimator, "downsample_", 1) == 1
        nodes = to_onnx(estimator).graph.node
        assert not {"Pad", "Reshape"} & {n.op_type for n in nodes[:3]}
        assert "Pad" not in {n.op_type for n in nodes}
        assert nodes[0].op_type == "Transpose" and list(nodes[0].input) == ["X"]


# -- errors ---------------------------------------------------------------------

@pytest.mark.parametrize("estimator_class", [RNNClassifier, RNNRegressor,
                                             RNNStepClassifier, RNNStepRegressor])
def test_unfitted(estimator_class):
    with pytest.raises(NotFittedError, match="not fitted"):
        to_onnx(estimator_class())


@pytest.mark.parametrize("estimator", [
    LogisticRegression(),
    make_pipeline(FunctionTransformer(), RNNClassifier()),
    "model.onnx",
], ids=["LogisticRegression", "Pipeline", "str"])
def test_not_a_cbptt_estimator(estimator):
    with pytest.raises(TypeError, match="exports a fitted RNNClassifier.*; got "
                                        f"{type(estimator).__name__}"):
        to_onnx(estimator)


@pytest.mark.parametrize("opset", [13, 10**6, "17", 17.0, True])
def test_bad_opset(opset):
    estimator = _fit(RNNClassifier, cell="rnn", hidden_layer_sizes=(3,))
    with pytest.raises(ValueError, match=r"opset must be an integer from 14 to \d+"):
        to_onnx(estimator, opset=opset)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, "float128", None, "garbage"])
def test_bad_dtype(dtype):
    estimator = _fit(RNNClassifier, cell="rnn", hidden_layer_sizes=(3,))
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        to_onnx(estimator, dtype=dtype)


def test_bad_with_lengths():
    estimator = _fit(RNNClassifier, cell="rnn", hidden_layer_sizes=(3,))
    with pytest.raises(TypeError, match="with_lengths must be True or False; got 'yes'"):
        to_onnx(estimator, with_lengths="yes")


def test_parameters_changed_after_fit():
    estimator = _fit(RNNRegressor, cell="gru", hidden_layer_sizes=(3,))
    estimator.set_params(hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match="no longer match its fitted weights_"):
        to_onnx(estimator)


def test_labels_beyond_int64():
    X = _sequences([3, 4, 2, 3], seed=9)
    y = np.array([2**63, 2**63 + 1, 2**63, 2**63 + 1], dtype=np.uint64)
    estimator = RNNClassifier(cell="rnn", hidden_layer_sizes=(2,), max_iter=1).fit(X, y)
    with pytest.raises(TypeError, match="do not fit in int64"):
        to_onnx(estimator)


def test_missing_onnx_names_the_extra(monkeypatch):
    estimator = _fit(RNNClassifier, cell="rnn", hidden_layer_sizes=(3,))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails
    with pytest.raises(ImportError, match=r"pip install cbptt\[onnx\]"):
        to_onnx(estimator)


def test_import_cbptt_does_not_import_onnx(tmp_path):
    code = ("import sys, cbptt; "
            "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.stdout.strip() == "[]"
