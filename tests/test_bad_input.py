"""Bad input to RNNClassifier and loss_and_grad: the right exception, with words
that say what was wrong, and nothing the user passed is modified on the way.

Each case asserts the exception type and (part of) its message. No case may
crash the process, return NaN silently, or leave NaN weights in the estimator.
"""

import copy
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from cbptt import RNNClassifier, loss_and_grad

rng = np.random.default_rng(0)
N, T, D = 20, 5, 2
X3 = rng.normal(size=(N, T, D))
Y = np.arange(N) % 2
RAGGED = [rng.normal(size=(t, D)) for t in rng.integers(1, 8, size=N)]


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _clf(**params):
    return RNNClassifier(**{"cell": "rnn", "hidden_layer_sizes": 4, "max_iter": 2,
                            "random_state": 0, **params})


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _clf().fit(X3, Y)


def _snapshot(value):
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if sparse.issparse(value):
        return value.copy()
    return np.array(value, copy=True)


def _assert_unchanged(value, before):
    if isinstance(value, (list, tuple)):
        assert len(value) == len(before)
        for v, b in zip(value, before):
            _assert_unchanged(v, b)
    elif isinstance(value, dict):
        assert value.keys() == before.keys()
        for k in value:
            _assert_unchanged(value[k], before[k])
    elif sparse.issparse(value):
        assert (value != before).nnz == 0
    else:
        assert_array_equal(value, before)  # NaN == NaN here
        assert np.asarray(value).dtype == before.dtype


def _raises_unchanged(exc, match, func, *args, **kwargs):
    """func(*args, **kwargs) raises exc matching `match`; the args are unchanged."""
    before_args = [_snapshot(a) for a in args]
    before_kwargs = {k: _snapshot(v) for k, v in kwargs.items() if v is not None}
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)
    for a, b in zip(args, before_args):
        _assert_unchanged(a, b)
    for k, b in before_kwargs.items():
        _assert_unchanged(kwargs[k], b)


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


def _ragged_with(index, step, value):
    X = [s.copy() for s in RAGGED]
    X[index][min(step, len(X[index]) - 1), 0] = value
    return X


# -- non-finite values ---------------------------------------------------------
@pytest.mark.parametrize("value, words", [(np.nan, "Input X contains NaN"),
                                          (np.inf, "Input X contains infinity"),
                                          (-np.inf, "Input X contains infinity")])
def test_non_finite_array_at_fit_and_predict(fitted, value, words):
    X = _with(X3, (3, 2, 1), value)
    _raises_unchanged(ValueError, words, _clf().fit, X, Y)
    _raises_unchanged(ValueError, words, fitted.predict, X)
    _raises_unchanged(ValueError, words, fitted.predict_proba, X)
    X2 = _with(X3[:, :, 0], (0, 0), value)
    _raises_unchanged(ValueError, words, _clf().fit, X2, Y)


_NAN_SKIPPED = "predict skips the NaN and returns a finite, wrong probability: "


@pytest.mark.parametrize("dtype, pooling", [
    ("float64", "last"),
    ("float64", "mean"),
    pytest.param("float64", "max", marks=pytest.mark.xfail(
        strict=True, reason=_NAN_SKIPPED + "the max over the steps passes over NaN")),
    pytest.param("float32", "last", marks=pytest.mark.xfail(
        strict=True, reason=_NAN_SKIPPED + "the float32 forward pass maps NaN to a "
        "finite state")),
])
def test_assume_finite_skips_the_input_check_but_never_returns_nan(dtype, pooling):
    # As in scikit-learn, assume_finite=True skips the scan of X; a NaN that
    # gets through is still caught where it comes out, never returned. X is
    # in the training dtype: no cast stands between the NaN and the kernels.
    from sklearn import config_context

    from cbptt._sequences import check_sequences

    params = dict(dtype=dtype, pooling=pooling)
    fitted = _clf(**params).fit(X3, Y)
    X = _with(X3, (3, 2, 1), np.nan).astype(dtype)
    with config_context(assume_finite=True):
        X_checked, _ = check_sequences(X)
        assert np.isnan(X_checked[3, 2, 1])
        _raises_unchanged(ValueError, "loss became non-finite", _clf(**params).fit, X, Y)
        _raises_unchanged(ValueError, "output is not finite", fitted.predict_proba, X)


@pytest.mark.parametrize("value, words", [(np.nan, r"Input X\[4\] contains NaN"),
                                          (np.inf, r"Input X\[4\] contains infinity")])
def test_non_finite_list_at_fit_and_predict(fitted, value, words):
    X = _ragged_with(4, 0, value)
    _raises_unchanged(ValueError, words, _clf().fit, X, Y)
    _raises_unchanged(ValueError, words, fitted.predict, X)
    _raises_unchanged(ValueError, words, _clf().partial_fit, X, Y, classes=[0, 1])


def test_non_finite_y_and_sample_weight():
    # The labels are checked before anything casts them: an error, no
    # RuntimeWarning from a cast of NaN on the way.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (np.nan, np.inf):
            _raises_unchanged(ValueError, "y contains NaN or infinity; class labels must "
                              "be finite", _clf().fit, X3, np.where(Y == 1, value, 0.0))
    sw = np.ones(N)
    sw[2] = np.nan
    _raises_unchanged(ValueError, "sample_weight contains NaN", _clf().fit, X3, Y,
                      sample_weight=sw)


# -- shapes ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "X, words",
    [
        (np.zeros(N), r"2-D or 3-D, got an array with 1 dimension.*Reshape your data"),
        (np.zeros((N, T, D, 2)), r"2-D or 3-D, got an array with 4 dimension"),
        (np.float64(3.0), r"2-D or 3-D, got an array with 0 dimension"),
    ],
    ids=["1d", "4d", "scalar"],
)
def test_wrong_dimensionality(fitted, X, words):
    _raises_unchanged(ValueError, words, _clf().fit, X, Y)
    _raises_unchanged(ValueError, words, fitted.predict, X)


def test_sequence_with_wrong_dimensionality_in_a_list():
    X = [np.zeros((3, 2, 2)), np.zeros((4, 2, 2))] * (N // 2)
    _raises_unchanged(ValueError, r"Sequence X\[0\] has 3 dimensions", _clf().fit, X, Y)


@pytest.mark.parametrize("X", [X3, RAGGED], ids=["array", "list"])
def test_y_of_the_wrong_length(X):
    _raises_unchanged(ValueError, f"X has {N} sequences but y has {N - 1} targets",
                      _clf().fit, X, Y[:-1])


def test_y_2d():
    _raises_unchanged(ValueError, "y should be a 1d array", _clf().fit, X3,
                      np.c_[Y, Y])


def test_sample_weight_of_the_wrong_length():
    _raises_unchanged(ValueError, r"sample_weight.shape == \(3,\), expected \(20,\)",
                      _clf().fit, X3, Y, sample_weight=np.ones(3))


@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_early_stopping_validation_split_with_zero_weight(estimator, monkeypatch):
    # Every validation sample weighs 0: an error that says so before
    # training, not a division by zero when the first epoch is scored.
    from cbptt import RNNRegressor

    cls = RNNClassifier if estimator == "classifier" else RNNRegressor
    monkeypatch.setattr(cls, "_validation_split",
                        lambda self, y, rng: (np.arange(10), np.arange(10, N)))
    sample_weight = np.r_[np.ones(10), np.zeros(N - 10)]
    y = Y if estimator == "classifier" else Y.astype(float)
    model = cls(early_stopping=True, random_state=0, max_iter=2)
    _raises_unchanged(ValueError, "Every sample of the early-stopping validation split "
                      "has sample_weight 0", model.fit, X3, y, sample_weight=sample_weight)


def test_object_arrays_get_the_answers_of_their_lists():
    # A 1-D object array of sequences is a list of sequences; complex values
    # inside an object array get the complex-data message.
    sequences = np.empty(N, dtype=object)
    for i in range(N):
        sequences[i] = X3[i, : 2 + i % 3]
    clf = _clf(max_iter=2)
    with pytest.warns(ConvergenceWarning):
        clf.fit(sequences, Y)
    assert_array_equal(clf.predict(sequences), clf.predict(list(sequences)))
    complex_X = X3.astype(object)
    complex_X[0, 0, 0] = 1 + 1j
    _raises_unchanged(ValueError, "Complex data not supported", _clf().fit, complex_X, Y)


def test_single_class():
    _raises_unchanged(ValueError, "at least 2 classes.*got 1 class", _clf().fit, X3,
                      np.zeros(N))
    _raises_unchanged(ValueError, "classes must contain at least 2 labels",
                      _clf().partial_fit, X3, Y, classes=[0])


def test_continuous_y():
    _raises_unchanged(ValueError, "Unknown label type: continuous", _clf().fit, X3,
                      rng.normal(size=N))


@pytest.mark.parametrize(
    "X, words",
    [
        (np.zeros((0, T, D)), r"Found array with 0 sample\(s\)"),
        (np.zeros((0, T)), r"Found array with 0 sample\(s\)"),
        ([], "Found 0 sequences in X"),
    ],
    ids=["3d", "2d", "list"],
)
def test_empty_dataset(fitted, X, words):
    _raises_unchanged(ValueError, words, _clf().fit, X, np.zeros(0))
    _raises_unchanged(ValueError, words, fitted.predict, X)


def test_zero_length_sequences():
    X = [s.copy() for s in RAGGED]
    X[3] = np.zeros((0, D))
    _raises_unchanged(ValueError, r"Sequence X\[3\] is empty \(0 time steps\)",
                      _clf().fit, X, Y)
    _raises_unchanged(ValueError, r"shape \(20, 0, 2\).*at least one time step",
                      _clf().fit, np.zeros((N, 0, D)), Y)
    _raises_unchanged(ValueError, r"shape \(20, 5, 0\).*one feature",
                      _clf().fit, np.zeros((N, T, 0)), Y)


def test_sequences_with_different_feature_counts():
    X = [s.copy() for s in RAGGED]
    X[5] = np.zeros((len(X[5]), D + 1))
    _raises_unchanged(ValueError, r"same number of features: X\[0\] has 2 and X\[5\] has 3",
                      _clf().fit, X, Y)
    # Same length, different feature count: still recognised as a list of sequences.
    X = [np.zeros((3, 2)), np.zeros((3, 3))]
    _raises_unchanged(ValueError, "same number of features", _clf().fit, X, [0, 1])


def test_feature_count_at_predict_differs_from_fit(fitted):
    words = "X has 3 features, but RNNClassifier is expecting 2 features"
    _raises_unchanged(ValueError, words, fitted.predict, np.zeros((4, T, 3)))
    _raises_unchanged(ValueError, words, fitted.predict_proba, [np.zeros((2, 3))] * 3)
    _raises_unchanged(ValueError, "X has 1 features, but RNNClassifier is expecting 2",
                      fitted.predict, np.zeros((4, T)))
    _raises_unchanged(ValueError, "X has 3 features, but RNNClassifier is expecting 2",
                      copy.deepcopy(fitted).partial_fit, np.zeros((N, T, 3)), Y)


# -- types -----------------------------------------------------------------------
def test_strings_in_X(fitted):
    words = "could not convert string to float"
    X = np.array([["a", "b"]] * N)
    _raises_unchanged(ValueError, words, _clf().fit, X, Y)
    _raises_unchanged(ValueError, words, fitted.predict, X[:, :, None])
    _raises_unchanged(ValueError, words, _clf().fit,
                      [np.array(["a", "b"]), np.array(["c"])] * (N // 2), Y)


def test_complex_X(fitted):
    words = "Complex data not supported"
    _raises_unchanged(ValueError, words + ": X has dtype complex128", _clf().fit,
                      X3 + 1j, Y)
    _raises_unchanged(ValueError, words, fitted.predict, X3 + 1j)
    X = [s + 0j for s in RAGGED]
    _raises_unchanged(ValueError, words + r": X\[0\] has dtype complex128",
                      _clf().fit, X, Y)


@pytest.mark.parametrize("container", [sparse.csr_matrix, sparse.csr_array])
def test_sparse_X(fitted, container):
    X = container(np.ones((N, T)))
    _raises_unchanged(TypeError, "Sparse data was passed for X, but dense data is "
                      "required", _clf().fit, X, Y)
    _raises_unchanged(TypeError, "dense data is required", fitted.predict, X)
    _raises_unchanged(TypeError, "Sparse data was passed for a sequence in X",
                      _clf().fit, [container(np.ones((3, D)))] * N, Y)


def test_predict_before_fit():
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        args = (X3, Y) if method == "score" else (X3,)
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(_clf(), method)(*args)


def test_unknown_labels_after_fit():
    clf = _clf(warm_start=True).fit(X3, Y)
    _raises_unchanged(ValueError, r"y contains labels \[2\] not in classes_",
                      clf.fit, X3, Y + 1)
    _raises_unchanged(ValueError, r"y contains labels \[5\] not in classes_",
                      _clf().partial_fit(X3, Y, classes=[0, 1]).partial_fit, X3,
                      np.where(Y == 1, 5, 0))


def test_partial_fit_classes():
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        _clf().partial_fit(X3, Y)
    clf = _clf().partial_fit(X3, Y, classes=[0, 1])
    with pytest.raises(ValueError, match="differs from the classes of the previous"):
        clf.partial_fit(X3, Y, classes=[0, 1, 2])


def test_negative_or_zero_sample_weight():
    _raises_unchanged(ValueError, "Negative values in data passed to `sample_weight`",
                      _clf().fit, X3, Y, sample_weight=np.r_[-1.0, np.ones(N - 1)])
    _raises_unchanged(ValueError, "at least one non-zero", _clf().fit, X3, Y,
                      sample_weight=np.zeros(N))


def test_early_stopping_on_too_few_samples_warns_and_trains_on_all():
    clf = _clf(early_stopping=True)
    X, y = X3[:6], Y[:6]
    before = _snapshot([X, y])
    with pytest.warns(UserWarning, match=r"early_stopping=True: validation_fraction=0.1 "
                      r"of 6 samples is 1 validation samples, too few to tell progress "
                      r"from noise.*training on all 6 samples without early stopping. "
                      r"Raise validation_fraction or pass more data."):
        clf.fit(X, y)
    _assert_unchanged([X, y], before)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.t_ == clf.n_iter_ * 6


def test_early_stopping_validation_split_leaving_nothing_to_train_on():
    # ceil(0.99 * 6) = 6 validation samples of 6.
    _raises_unchanged(ValueError, "validation_fraction=0.99 of 6 samples leaves none for "
                      "training. Lower validation_fraction.",
                      _clf(early_stopping=True, validation_fraction=0.99).fit, X3[:6], Y[:6])


# -- parameters ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, value",
    [
        ("solver", "foo"),
        ("hidden_layer_sizes", 0),
        ("hidden_layer_sizes", (0,)),
        ("hidden_layer_sizes", ()),
        ("hidden_layer_sizes", (4.5,)),
        ("hidden_layer_sizes", "ab"),
        ("learning_rate_init", -1),
        ("learning_rate_init", 0),
        ("learning_rate", "fast"),
        ("batch_size", 0),
        ("batch_size", "big"),
        ("clip_norm", 0),
        ("clip_norm", -1.0),
        ("bptt_truncate", 0),
        ("nonlinearity", "sigmoid"),
        ("cell", "foo"),
        ("n_threads", 0),
        ("max_iter", 0),
        ("alpha", -1.0),
        ("momentum", 1.5),
        ("beta_1", 1.0),
        ("validation_fraction", 1.0),
        ("tol", -1.0),
        ("n_iter_no_change", 0),
        ("n_iter_no_change", "never"),
        ("shuffle", "yes"),
    ],
)
def test_invalid_parameter_is_named(name, value):
    clf = RNNClassifier(**{name: value})
    with pytest.raises(ValueError, match=re.escape(name)):
        clf.fit(X3, Y)
    assert not hasattr(clf, "weights_")


@pytest.mark.parametrize(
    "params, words",
    [
        (dict(cell="lstm", nonlinearity="relu"),
         r"nonlinearity='relu' applies to cell='rnn' only; the LSTM cell"),
        (dict(cell="gru", nonlinearity="relu"),
         r"nonlinearity='relu' applies to cell='rnn' only; the GRU cell"),
        (dict(bidirectional=True, bptt_truncate=2),
         r"bptt_truncate cannot be combined with a bidirectional network"),
        (dict(bptt_truncate=2),  # the default head pools over the steps
         r"bptt_truncate cannot be combined with pooling='max'.*pooling='last'"),
        (dict(pooling="mean", bptt_truncate=2),
         r"bptt_truncate cannot be combined with pooling='mean'"),
        (dict(hidden_layer_sizes=(4, 0)), r"hidden_layer_sizes"),
        (dict(hidden_layer_sizes=(4, -2)), r"hidden_layer_sizes"),
        (dict(hidden_layer_sizes=(2,) * 17), r"hidden_layer_sizes has 17 layers; at most 16"),
        (dict(dropout=1.0), r"dropout"),
        (dict(dropout=-0.1), r"dropout"),
        (dict(bidirectional="yes"), r"bidirectional"),
    ],
)
def test_invalid_architecture(params, words):
    clf = RNNClassifier(**{"max_iter": 1, **params})
    _raises_unchanged(ValueError, words, clf.fit, X3, Y)
    assert not hasattr(clf, "weights_")


def test_values_too_large_for_the_training_dtype(fitted):
    # 1e39 is a float64 but beyond float32, the default training precision:
    # an error naming the remedy, at fit and at predict.
    X = _with(X3, (3, 2, 1), 1e39)
    words = (r"X has values too large for float32, the precision the network computes "
             r"in \(at most 3.4e\+38 in magnitude\).*or set dtype='float64'")
    _raises_unchanged(ValueError, words, _clf().fit, X, Y)
    _raises_unchanged(ValueError, words, fitted.predict_proba, X)
    _raises_unchanged(ValueError, words, _clf().partial_fit, X, Y, classes=[0, 1])
    clf = _clf(dtype="float64").fit(X, Y)
    assert np.all(np.isfinite(clf.predict_proba(X)))


def test_batch_size_larger_than_the_data_warns():
    with pytest.warns(UserWarning, match="batch_size=100 larger than the number of "
                      "training samples"):
        _clf(batch_size=100).fit(X3, Y)


# -- divergence ------------------------------------------------------------------
DIVERGING = dict(solver="sgd", learning_rate_init=1e6, clip_norm=None,
                 nonlinearity="relu", max_iter=50)
DIVERGED_WORDS = r"(?s)Training diverged.*learning_rate_init.*clip_norm"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_diverging_fit_raises_and_keeps_no_nan_weights(dtype):
    X = X3.astype(dtype)
    clf = _clf(**DIVERGING)
    _raises_unchanged(ValueError, DIVERGED_WORDS, clf.fit, X, Y)
    assert not hasattr(clf, "weights_") or all(
        np.all(np.isfinite(w)) for w in clf.weights_.values()
    )
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_diverging_warm_start_keeps_the_previous_model():
    clf = _clf(nonlinearity="relu", warm_start=True).fit(X3, Y)
    before = {k: v.copy() for k, v in clf.weights_.items()}
    n_iter, curve = clf.n_iter_, list(clf.loss_curve_)
    clf.set_params(**DIVERGING)
    with pytest.raises(ValueError, match=DIVERGED_WORDS):
        clf.fit(X3, Y)
    for name, value in clf.weights_.items():
        assert_array_equal(value, before[name])
    assert clf.n_iter_ == n_iter and clf.loss_curve_ == curve
    assert np.all(np.isfinite(clf.predict_proba(X3)))


def test_diverging_partial_fit():
    clf = _clf(**DIVERGING)
    with pytest.raises(ValueError, match=DIVERGED_WORDS):
        for _ in range(10):
            clf.partial_fit(X3, Y, classes=[0, 1])
    assert not hasattr(clf, "weights_") or all(
        np.all(np.isfinite(w)) for w in clf.weights_.values()
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_finite_output_at_predict_is_an_error(dtype):
    # Weights that overflow a ReLU network: predict must not return NaN.
    clf = _clf(nonlinearity="relu", dtype=dtype).fit(X3, Y)
    big = np.sqrt(np.finfo(dtype).max)  # squared in two steps: beyond the range
    clf.weights_["weight_hh_l0"][...] = big * np.eye(4)
    clf.weights_["weight_ih_l0"][...] = 1.0
    clf.weights_["weight_out"][...] = [[1, -1, 1, -1], [-1, 1, -1, 1]]
    X = np.ones((2, T, D))
    for method in ("predict", "predict_proba", "predict_log_proba"):
        _raises_unchanged(ValueError, "output is not finite", getattr(clf, method), X)


# -- loss_and_grad -----------------------------------------------------------------
H, C = 4, 3


def _weights(dtype=np.float64):
    r = np.random.default_rng(1)
    return {
        "weight_ih_l0": r.normal(size=(H, D)).astype(dtype),
        "weight_hh_l0": (r.normal(size=(H, H)) / 2).astype(dtype),
        "bias_ih_l0": r.normal(size=H).astype(dtype),
        "bias_hh_l0": r.normal(size=H).astype(dtype),
        "weight_out": r.normal(size=(C, H)).astype(dtype),
        "bias_out": r.normal(size=C).astype(dtype),
    }


Y3 = np.arange(N) % C


def test_loss_and_grad_accepts_good_input():
    loss, grads = loss_and_grad(_weights(), X3, Y3)
    assert np.isfinite(loss)
    assert {k: v.shape for k, v in grads.items()} == {
        k: v.shape for k, v in _weights().items()
    }


@pytest.mark.parametrize(
    "change, exc, words",
    [
        (lambda w: w.pop("bias_out"), ValueError,
         r"wrong keys: missing \['bias_out'\], unexpected \[\]"),
        (lambda w: w.update(foo=np.zeros(2)), ValueError,
         r"wrong keys: missing \[\], unexpected \['foo'\]"),
        (lambda w: w.pop("weight_hh_l0"), ValueError, "needs 'weight_hh_l0'"),
        (lambda w: w.pop("weight_out"), ValueError, "needs 'weight_hh_l0'.*'weight_out'"),
        (lambda w: w.update(weight_ih_l0=np.zeros((H, D + 1))), ValueError,
         r"weights\['weight_ih_l0'\] has shape \(4, 3\); expected \(4, 2\)"),
        (lambda w: w.update(bias_ih_l0=np.zeros(H + 1)), ValueError,
         r"weights\['bias_ih_l0'\] has shape \(5,\); expected \(4,\)"),
        (lambda w: w.update(bias_out=np.zeros(C + 1)), ValueError,
         r"weights\['bias_out'\] has shape \(4,\); expected \(3,\)"),
        (lambda w: w.update(bias_out=1.0), ValueError,
         r"weights\['bias_out'\] has shape \(\); expected \(3,\)"),
        (lambda w: w.update(weight_hh_l0=np.zeros(H)), ValueError,
         r"weights\['weight_hh_l0'\] has shape \(4,\); for cell='rnn' it must be"),
        (lambda w: w.update(bias_hh_l0=np.array(["a"] * H)), ValueError,
         r"weights\['bias_hh_l0'\] must hold real numbers"),
        (lambda w: w.update(bias_out=np.zeros(C) + 1j), ValueError,
         r"weights\['bias_out'\] must hold real numbers"),
        (lambda w: w["bias_ih_l0"].__setitem__(0, np.nan), ValueError,
         r"weights\['bias_ih_l0'\] contains NaN or infinity"),
    ],
    ids=["missing", "unknown", "no-hh", "no-out", "shape-ih", "shape-bias",
         "shape-out", "scalar", "hh-1d", "strings", "complex", "nan"],
)
def test_loss_and_grad_bad_weights(change, exc, words):
    weights = _weights()
    change(weights)
    _raises_unchanged(exc, words, loss_and_grad, weights, X3, Y3)


@pytest.mark.parametrize("weights", [None, [1.0, 2.0], "weights"])
def test_loss_and_grad_weights_not_a_dict(weights):
    with pytest.raises(TypeError, match="weights must be a dict"):
        loss_and_grad(weights, X3, Y3)


@pytest.mark.parametrize(
    "X, words",
    [
        (X3[:, :, 0], r"X must be a 3-D array.*got 2 dimension"),
        (X3[..., None], r"X must be a 3-D array.*got 4 dimension"),
        ([X3[0], X3[1, :3]], "pad them to one length and pass lengths"),
        (np.full((N, T, D), "a"), "could not convert string to float"),
        (X3 + 1j, "Complex data not supported"),
        (X3[:0], r"Found array with 0 sample\(s\)"),
        (_with(X3, (1, 2, 0), np.nan), "Input X contains NaN"),
        (_with(X3, (1, 2, 0), np.inf), "Input X contains infinity"),
    ],
    ids=["2d", "4d", "ragged", "strings", "complex", "empty", "nan", "inf"],
)
def test_loss_and_grad_bad_X(X, words):
    y = Y3[: len(X)] if len(X) else Y3[:0]
    _raises_unchanged(ValueError, words, loss_and_grad, _weights(), X, y)


@pytest.mark.parametrize(
    "y, words",
    [
        (Y3 + 1, r"integer class indices in \[0, 3\)"),
        (Y3 - 1, r"integer class indices in \[0, 3\)"),
        (Y3.astype(float), "integer class indices"),
        (Y3.astype(str), "integer class indices"),
        (Y3[:-1], r"y must have shape \(20,\); got \(19,\)"),
        (Y3[:, None], r"y must have shape \(20,\); got \(20, 1\)"),
    ],
    ids=["too-large", "negative", "float", "strings", "short", "2d"],
)
def test_loss_and_grad_bad_y(y, words):
    _raises_unchanged(ValueError, words, loss_and_grad, _weights(), X3, y)


LENGTHS = np.array([5, 3, 1, 4, 2] * 4)


@pytest.mark.parametrize(
    "lengths, words",
    [
        (np.r_[0, LENGTHS[1:]], r"lengths must lie in \[1, 5\].*got values in \[0, 5\]"),
        (np.r_[6, LENGTHS[1:]], r"lengths must lie in \[1, 5\].*got values in \[1, 6\]"),
        (np.r_[-1, LENGTHS[1:]], r"lengths must lie in \[1, 5\]"),
        (LENGTHS[:3], r"lengths must have shape \(20,\).*got shape \(3,\)"),
        (LENGTHS[:, None], r"lengths must have shape \(20,\).*got shape \(20, 1\)"),
        (np.r_[1.5, LENGTHS[1:]], "lengths must be integers"),
        (np.r_[np.nan, LENGTHS[1:]], "lengths must be integers"),
        (np.array(["a"] * N), "lengths must be integers"),
    ],
    ids=["zero", "too-long", "negative", "short", "2d", "fraction", "nan", "strings"],
)
def test_loss_and_grad_bad_lengths(lengths, words):
    _raises_unchanged(ValueError, words, loss_and_grad, _weights(), X3, Y3,
                      lengths=lengths)


@pytest.mark.parametrize(
    "sample_weight, words",
    [
        (np.r_[-1.0, np.ones(N - 1)], "sample_weight must be finite and non-negative"),
        (np.r_[np.nan, np.ones(N - 1)], "sample_weight must be finite and non-negative"),
        (np.r_[np.inf, np.ones(N - 1)], "sample_weight must be finite and non-negative"),
        (np.zeros(N), "at least one sample with positive weight"),
        (np.ones(N - 1), r"sample_weight must be a numeric array of shape \(20,\)"),
        (np.array(["a"] * N), r"sample_weight must be a numeric array"),
    ],
    ids=["negative", "nan", "inf", "zero", "short", "strings"],
)
def test_loss_and_grad_bad_sample_weight(sample_weight, words):
    _raises_unchanged(ValueError, words, loss_and_grad, _weights(), X3, Y3,
                      sample_weight=sample_weight)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(cell="foo"), r"cell must be one of"),
        (dict(nonlinearity="sigmoid"), r"nonlinearity must be one of"),
        (dict(bptt_truncate=0), r"bptt_truncate must be None or an integer >= 1"),
        (dict(bptt_truncate=1.5), r"bptt_truncate must be None or an integer >= 1"),
        (dict(n_threads=0), r"n_threads must be None or an integer >= 1"),
    ],
)
def test_loss_and_grad_bad_options(kwargs, words):
    _raises_unchanged(ValueError, words, loss_and_grad, _weights(), X3, Y3, **kwargs)


def test_loss_and_grad_gated_cell_rejects_relu():
    _raises_unchanged(ValueError, r"applies to cell='rnn' only", loss_and_grad,
                      _weights(), X3, Y3, cell="lstm", nonlinearity="relu")


def test_loss_and_grad_weights_of_another_cell():
    # Elman-shaped weights (H rows) given as an LSTM (4 H rows expected).
    _raises_unchanged(ValueError, r"weights\['weight_hh_l0'\] has shape \(4, 4\); for "
                      r"cell='lstm' it must be \(4 \* H, H\)", loss_and_grad,
                      _weights(), X3, Y3, cell="lstm")


def test_loss_and_grad_non_square_recurrent_weights():
    weights = _weights()
    weights["weight_hh_l0"] = np.zeros((H, H + 1))
    _raises_unchanged(ValueError, r"weights\['weight_hh_l0'\] has shape", loss_and_grad,
                      weights, X3, Y3)


def test_loss_and_grad_truncation_with_bidirectional_weights():
    weights = _weights()
    weights.update({f"{k}_reverse": v for k, v in weights.items() if k.endswith("_l0")})
    weights["weight_out"] = np.zeros((weights["weight_out"].shape[0],
                                      2 * weights["weight_out"].shape[1]))
    loss_and_grad(weights, X3, Y3)  # bidirectional weights are fine on their own
    _raises_unchanged(ValueError, r"bptt_truncate cannot be combined with a bidirectional",
                      loss_and_grad, weights, X3, Y3, bptt_truncate=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_and_grad_padding_content_never_matters(dtype):
    X_zero = X3.astype(dtype)
    X_nan = X_zero.copy()
    X_junk = X_zero.copy()
    for i, length in enumerate(LENGTHS):
        X_zero[i, length:] = 0.0
        X_nan[i, length:] = np.nan
        X_junk[i, length:] = np.inf if i % 2 else 1e30
    before = X_nan.copy()
    ref_loss, ref_grads = loss_and_grad(_weights(dtype), X_zero, Y3, lengths=LENGTHS)
    for X in (X_nan, X_junk):
        loss, grads = loss_and_grad(_weights(dtype), X, Y3, lengths=LENGTHS)
        assert np.isfinite(loss)
        assert loss == ref_loss
        for name in ref_grads:
            assert np.all(np.isfinite(grads[name]))
            assert_array_equal(grads[name], ref_grads[name])
    assert_array_equal(X_nan, before)  # the padding NaNs are still there


def test_loss_and_grad_nan_in_valid_steps_with_lengths():
    X = X3.copy()
    for i, length in enumerate(LENGTHS):
        X[i, length:] = np.nan
    X[1, LENGTHS[1] - 1, 0] = np.nan  # the last valid step of sequence 1
    _raises_unchanged(ValueError, "NaN or infinity within the valid steps",
                      loss_and_grad, _weights(), X, Y3, lengths=LENGTHS)


def test_loss_and_grad_non_finite_result_is_an_error():
    weights = _weights()
    weights["weight_hh_l0"][...] = 1e100 * np.eye(H)
    weights["weight_ih_l0"][...] = 1.0
    _raises_unchanged(ValueError, "not finite", loss_and_grad, weights,
                      np.ones((2, T, D)), np.array([0, 1]), nonlinearity="relu")
