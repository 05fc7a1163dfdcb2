"""Property-based tests of training: generated data, targets, sample weights
and settings at fit and partial_fit, for every estimator.

Why: test_properties.py guards what predict and loss_and_grad accept; a fit
reads more (targets, sample weights, hyperparameters) and runs the optimizer,
where an odd dtype, memory layout, shape or bound could surface as a crash,
a NaN or an unrelated exception. For any generated call, each estimator
either raises a ValueError or TypeError with a message, or fits a model
whose predictions are finite (probabilities normalised) and agree between
the array and list forms of the same sequences; no RuntimeWarning escapes,
and nothing the caller passed is modified. Networks are tiny, examples
bounded and the search derandomized, so a run takes seconds and is the same
every time.
"""

import copy
import itertools
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cbptt import (  # noqa: E402
    RNNClassifier,
    RNNRegressor,
    RNNStepClassifier,
    RNNStepRegressor,
)

ESTIMATORS = (RNNClassifier, RNNRegressor, RNNStepClassifier, RNNStepRegressor)
CLASSIFIERS = (RNNClassifier, RNNStepClassifier)
PER_STEP = (RNNStepClassifier, RNNStepRegressor)


def _settings(max_examples):
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def _tiny(cls, **params):
    """A network small enough that a fit takes a millisecond or two."""
    model = cls(hidden_layer_sizes=(3,), max_iter=1, random_state=0, n_threads=1)
    return model.set_params(**params)


@pytest.fixture(scope="module")
def memmap_dir(tmp_path_factory):
    # Module-scoped: hypothesis reuses it across examples.
    return tmp_path_factory.mktemp("memmaps")


_memmap_names = itertools.count()


# -- what the caller passed, before and after ----------------------------------

def _snapshot(value):
    """A deep copy of value and the writeable flag of each array in it."""
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    if isinstance(value, np.ndarray):
        copied = copy.deepcopy(value) if value.dtype == object else np.array(value)
        return copied, value.flags.writeable
    return copy.deepcopy(value)


def _assert_unchanged(before, after, where="input"):
    if isinstance(after, (list, tuple)):
        assert type(before) is type(after) and len(before) == len(after), where
        for i, (b, a) in enumerate(zip(before, after)):
            _assert_unchanged(b, a, f"{where}[{i}]")
    elif isinstance(after, np.ndarray):
        copied, writeable = before
        assert after.flags.writeable == writeable, f"{where}: writeable flag changed"
        assert after.dtype == copied.dtype and after.shape == copied.shape, where
        if after.dtype == object:
            for b, a in zip(copied.ravel(), after.ravel()):
                _assert_unchanged(_snapshot(b), a, f"{where} (an element)")
        else:  # bit for bit: NaN payloads and -0.0 too
            assert np.array(after).tobytes() == copied.tobytes(), f"{where} modified"
    elif isinstance(after, float) and after != after:
        assert before != before, where
    else:
        assert type(before) is type(after) and before == after, where


# -- outcomes ------------------------------------------------------------------

def _fits_or_explains(call, errors=(ValueError, TypeError)):
    """call()'s result, or None when it raised one of errors with a message.
    UserWarnings (ConvergenceWarning among them) are fine; a RuntimeWarning
    (numerics leaking out, or noise next to an error) is not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("always", RuntimeWarning)
        try:
            result = call()
        except errors as error:
            assert str(error).strip(), f"{type(error).__name__} without a message"
            result = None
    leaked = [f"{w.category.__name__}: {w.message}" for w in caught
              if issubclass(w.category, RuntimeWarning)]
    assert not leaked, leaked
    return result


def _train(model, method, X, y, sample_weight=None, classes=(0, 1)):
    """fit, or partial_fit twice (the second call continues the first)."""
    if method == "fit":
        return model.fit(X, y, sample_weight=sample_weight)
    extra = {"classes": classes} if isinstance(model, CLASSIFIERS) else {}
    for _ in range(2):
        model.partial_fit(X, y, sample_weight=sample_weight, **extra)
    return model


def _per_sequence(model, X):
    """[(prediction, probabilities or None)] of each sequence of X."""
    predictions = model.predict(X)
    probabilities = (model.predict_proba(X) if isinstance(model, CLASSIFIERS)
                     else [None] * len(predictions))
    return [(np.asarray(p), None if q is None else np.asarray(q))
            for p, q in zip(predictions, probabilities)]


def _assert_valid(model, outputs, lengths):
    assert len(outputs) == len(lengths)
    for (prediction, proba), length in zip(outputs, lengths):
        if isinstance(model, PER_STEP):
            assert len(prediction) == length
        if isinstance(model, CLASSIFIERS):
            assert np.all(np.isin(prediction, model.classes_))
            assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
            np.testing.assert_allclose(proba.sum(axis=-1), 1, rtol=1e-5)
        else:
            assert np.all(np.isfinite(prediction))


def _assert_same_outputs(outputs, other):
    assert len(outputs) == len(other)
    for (p, q), (p_other, q_other) in zip(outputs, other):
        if q is None:  # regressors: the values; classifiers: the probabilities
            np.testing.assert_allclose(p_other, p, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(q_other, q, rtol=1e-5, atol=1e-7)


def _check_predictions(model, X):
    """A fitted model's predictions for X are finite and normalised, one per
    sequence (or step), and the same for X's list of sequences (an array
    X) or for each sequence alone (a list X); or predict explains."""
    outputs = _fits_or_explains(lambda: _per_sequence(model, X), errors=ValueError)
    if outputs is None:
        return
    if isinstance(X, np.ndarray) and X.dtype != object:
        _assert_valid(model, outputs, [X.shape[1]] * X.shape[0])
        other = _per_sequence(model, list(X))
    else:
        sequences = list(X)
        _assert_valid(model, outputs, [len(seq) for seq in sequences])
        other = [out for seq in sequences for out in _per_sequence(model, [seq])]
    _assert_same_outputs(outputs, other)


def _targets(cls, lengths, seed, as_list=False):
    """Targets for sequences of these lengths: both classes present where
    there are two steps (or sequences) to carry them."""
    rng = np.random.default_rng(seed)
    n, T = len(lengths), max(lengths, default=0)
    if cls is RNNClassifier:
        return (np.arange(n) + seed) % 2
    if cls is RNNRegressor:
        return rng.normal(size=n)
    if cls is RNNStepClassifier:
        y = (np.arange(n * T).reshape(n, T) + seed) % 2
    else:
        y = rng.normal(size=(n, T))
    return [row[:length] for row, length in zip(y, lengths)] if as_list else y


# -- X as an array: dtypes, values, shapes, layouts ----------------------------

EXTREMES = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e300, -1e300, 5e-324, 1e-310,
            1e-40, 0.0, -0.0]
BAD_OBJECTS = [None, "x", "2.5", [1.0, 2.0], np.array([1.0, 2.0]), 1j, True]
BAD_STRINGS = ["abc", "", "nan", "inf", "1e999", "1,5"]
LAYOUTS = ["C", "F", "every other step", "every other feature", "negative strides",
           "read-only", "memmap"]


DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint8", "bool", "object",
          "str"]


@st.composite
def arrays(draw, dtype):
    """(X, layout): X mostly 3-D, sometimes 2-D (univariate), 1-D or 4-D, 0 to
    5 of each axis, of the dtype; a few entries extreme, non-finite or (in
    object and string arrays) not numbers at all."""
    ndim = draw(st.sampled_from([3, 3, 3, 2, 2, 1, 4]))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    empty = draw(st.sampled_from([None, None, None, 0, 1, 2]))
    if empty is not None and empty < ndim:
        shape[empty] = 0
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = rng.normal(size=shape)
    pool = {"object": EXTREMES + BAD_OBJECTS, "str": BAD_STRINGS}.get(dtype, EXTREMES)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        pool = [info.min, info.max]
    odd = draw(st.lists(st.sampled_from(pool), max_size=2 if X.size else 0))
    where = [draw(st.integers(0, X.size - 1)) for _ in odd]
    with np.errstate(all="ignore"):
        if dtype == "bool":
            X = X > 0
        elif dtype.startswith(("int", "uint")):
            X = np.clip(np.round(X * 3), 0 if dtype == "uint8" else -9, 9).astype(dtype)
        else:
            X = X.astype(dtype)
        flat = X.reshape(-1)  # a view: X is C-contiguous here
        for index, value in zip(where, odd):
            if dtype == "object":
                flat[index] = value
            else:
                flat[index] = np.asarray(value).astype(dtype)
    return X, draw(st.sampled_from(LAYOUTS))


def _lay_out(X, layout, directory):
    """X's values in the given memory layout."""
    if layout == "F":
        return np.asfortranarray(X)
    if layout.startswith("every other"):
        axis = 1 if layout.endswith("step") else 2
        if X.ndim > axis:
            every_other = (slice(None),) * axis + (slice(None, None, 2),)
            return np.repeat(X, 2, axis=axis)[every_other]
    if layout == "negative strides":
        return np.flip(np.flip(X).copy())
    if layout == "memmap" and X.size and X.dtype.kind in "biuf":
        path = directory / f"X{next(_memmap_names)}.dat"
        X.tofile(path)
        return np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)
    if layout in ("read-only", "memmap"):
        X = X.copy()
        X.setflags(write=False)
    return X


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(10)
@given(data=st.data(), method=st.sampled_from(["fit", "partial_fit"]),
       weighted=st.booleans())
def test_any_array_fits_or_explains(memmap_dir, cls, dtype, data, method, weighted):
    X, layout = data.draw(arrays(dtype))
    X = _lay_out(X, layout, memmap_dir)
    n = X.shape[0] if X.ndim else 0
    T = X.shape[1] if X.ndim > 1 else 1
    y = _targets(cls, [T] * n, seed=n)
    sample_weight = np.linspace(0.5, 2.0, n) if weighted else None
    before = _snapshot([X, y, sample_weight])
    model = _fits_or_explains(lambda: _train(_tiny(cls), method, X, y, sample_weight))
    if model is not None:
        assert all(np.all(np.isfinite(w)) for w in model.weights_.values())
        _check_predictions(model, X)
    _assert_unchanged(before, [X, y, sample_weight])


# -- X as a list of sequences -------------------------------------------------

@st.composite
def sequence_lists(draw):
    """(X, lengths): 1 to 5 sequences of 0 to 5 steps (0: empty), as arrays,
    1-D arrays (univariate), nested lists, a tuple or a 1-D object array; now
    and then one of them is bad (non-finite, a string, None, a scalar, 3-D,
    another number of features)."""
    lengths = draw(st.lists(st.sampled_from([1, 2, 3, 4, 5, 0]), min_size=1, max_size=5))
    n_features = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "int64", "bool"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    seqs = [rng.normal(size=(length, n_features)) for length in lengths]
    seqs = [seq > 0 if dtype == "bool" else (seq * 3).astype(dtype) for seq in seqs]
    form = draw(st.sampled_from(["arrays", "univariate", "nested lists", "tuple",
                                 "object array"]))
    if form == "univariate":
        seqs = [seq[:, 0] for seq in seqs]
    bad = draw(st.sampled_from([None] * 6 + ["nan", "inf", "string", "None", "scalar",
                                             "3-D", "features"]))
    if bad is not None:
        i = draw(st.integers(0, len(seqs) - 1))
        seqs[i] = {
            "nan": lambda s: np.where(np.arange(s.size).reshape(s.shape) == 0, np.nan, s),
            "inf": lambda s: np.full(s.shape, np.inf),
            "string": lambda s: "not a sequence",
            "None": lambda s: None,
            "scalar": lambda s: 1.5,
            "3-D": lambda s: s.reshape((1,) + s.shape),
            "features": lambda s: np.ones((len(s), n_features + 1)),
        }[bad](seqs[i])
    if form == "nested lists":
        seqs = [seq.tolist() if isinstance(seq, np.ndarray) else seq for seq in seqs]
    elif form == "tuple":
        seqs = tuple(seqs)
    elif form == "object array":
        as_array = np.empty(len(seqs), dtype=object)
        for i, seq in enumerate(seqs):
            as_array[i] = seq
        seqs = as_array
    return seqs, lengths


@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(40)
@given(case=sequence_lists(), method=st.sampled_from(["fit", "partial_fit"]))
def test_any_list_of_sequences_fits_or_explains(cls, case, method):
    X, lengths = case
    y = _targets(cls, lengths, seed=len(lengths), as_list=True)
    before = _snapshot([X, y])
    model = _fits_or_explains(lambda: _train(_tiny(cls), method, X, y))
    if model is not None:
        assert min(lengths) > 0, "an empty sequence was accepted"
        # (Per-step predictions for an object array of sequences: see
        # test_object_array_of_sequences_per_step.)
        as_read = list(X) if cls in PER_STEP and isinstance(X, np.ndarray) else X
        _check_predictions(model, as_read)
    _assert_unchanged(before, [X, y])


# -- labels and targets --------------------------------------------------------

def _labels(kind, size, rng):
    codes = rng.integers(0, 3, size=size)
    codes.flat[: min(2, size)] = [0, 1][: min(2, size)]  # at least 2 classes
    if kind == "int":
        return codes - 1
    if kind == "huge int":
        return np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max])[codes]
    if kind == "uint64":
        return codes.astype(np.uint64) * np.uint64(2**62)
    if kind == "bool":
        return codes > 0
    if kind == "str":
        return np.array(["cat", "dog", "émeu"])[codes]
    if kind == "object str":
        return np.array(["cat", "dog", "émeu"], dtype=object)[codes]
    if kind == "integral float":
        return codes * 2.0
    if kind == "non-integral float":
        return codes + 0.5
    if kind == "one class":
        return np.full(size, 7)
    if kind == "mixed types":
        return np.array([1, "a", 2.5], dtype=object)[codes]
    if kind == "with None":
        return np.array(["a", None, "b"], dtype=object)[codes]
    raise AssertionError(kind)


VALID_LABELS = ["int", "huge int", "uint64", "bool", "str", "object str",
                "integral float"]
LABEL_KINDS = VALID_LABELS + ["non-integral float", "one class", "mixed types",
                              "with None"]


@pytest.mark.parametrize("cls", CLASSIFIERS)
@_settings(40)
@given(kind=st.sampled_from(LABEL_KINDS), n=st.integers(2, 5), T=st.integers(1, 3),
       method=st.sampled_from(["fit", "partial_fit"]), as_list=st.booleans())
def test_labels_of_any_type(cls, kind, n, T, method, as_list):
    """Labels of any orderable type with 2 or more classes train a model
    whose classes_ and predictions are those labels; floats with fractions
    are refused as continuous, as scikit-learn does; so is one class, unless
    partial_fit is told the others."""
    rng = np.random.default_rng(n * 10 + T)
    X = rng.normal(size=(n, T, 2))
    y = _labels(kind, n if cls is RNNClassifier else n * T, rng)
    if cls is RNNStepClassifier:
        y = y.reshape(n, T)
        y = list(y) if as_list else y
    valid = np.concatenate([np.ravel(v) for v in y]) if as_list else np.ravel(y)
    classes = valid if kind != "one class" else np.array([7, 8])
    before = _snapshot([X, y, classes])
    model = _fits_or_explains(lambda: _train(_tiny(cls), method, X, y, classes=classes))
    _assert_unchanged(before, [X, y, classes])
    if kind in VALID_LABELS or (kind == "one class" and method == "partial_fit"):
        assert model is not None, f"{kind} labels were refused"
        np.testing.assert_array_equal(model.classes_, np.unique(classes))
        _check_predictions(model, X)
    else:
        assert model is None, f"{kind} labels were accepted"


@pytest.mark.parametrize("cls", [RNNRegressor, RNNStepRegressor])
@_settings(30)
@given(values=st.lists(st.sampled_from([0.0, 1.0, -2.5, 1e30, -1e30, 1e300, 5e-324,
                                        np.nan, np.inf, "1.5", "x", True, None]),
                       min_size=3, max_size=3),
       dtype=st.sampled_from([None, "float32", "float64", "int64", "object"]),
       n_outputs=st.sampled_from([None, 1, 2]),
       method=st.sampled_from(["fit", "partial_fit"]))
def test_regression_targets_of_any_kind(cls, values, dtype, n_outputs, method):
    n, T = 3, 2
    X = np.random.default_rng(0).normal(size=(n, T, 2))
    shape = (n,) if cls is RNNRegressor else (n, T)
    if n_outputs is not None:
        shape += (n_outputs,)
    y = np.array([values[i % 3] for i in range(int(np.prod(shape)))], dtype=object)
    with np.errstate(all="ignore"):
        try:
            y = y.reshape(shape).astype(dtype) if dtype else y.reshape(shape)
        except (ValueError, TypeError, OverflowError):  # not representable so
            y = y.reshape(shape)
    before = _snapshot([X, y])
    model = _fits_or_explains(lambda: _train(_tiny(cls), method, X, y))
    _assert_unchanged(before, [X, y])
    if model is not None:
        _check_predictions(model, X)


# -- sample weights ------------------------------------------------------------

def _weights(kind, n):
    ones = np.ones(n)
    return {
        "ones": ones, "one zero": np.r_[0.0, ones[1:]], "all zero": 0 * ones,
        "negative": np.r_[-1.0, ones[1:]], "nan": np.r_[np.nan, ones[1:]],
        "inf": np.r_[np.inf, ones[1:]], "wrong length": np.ones(n + 1),
        "bool": np.arange(n) % 2 == 0, "all false": np.zeros(n, dtype=bool),
        "huge": ones * 1e300, "tiny": ones * 1e-300, "subnormal": ones * 5e-324,
        "mixed scales": np.geomspace(1e-300, 1e300, n), "2-D": ones[:, None],
        "list": [1.0] * n, "int": np.arange(1, n + 1), "scalar": 2.0,
        "numeric strings": np.array(["1.5"] * n), "strings": np.array(["x"] * n),
        "float32": ones.astype(np.float32), "object": ones.astype(object),
    }[kind]


VALID_WEIGHTS = ["ones", "one zero", "bool", "huge", "list", "int", "scalar", "float32",
                 "object"]
WEIGHT_KINDS = VALID_WEIGHTS + ["all zero", "negative", "nan", "inf", "wrong length",
                                "all false", "tiny", "subnormal", "mixed scales", "2-D",
                                "numeric strings", "strings"]


@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(40)
@given(kind=st.sampled_from(WEIGHT_KINDS), n=st.integers(2, 5),
       dtype=st.sampled_from(["float32", "float64"]),
       method=st.sampled_from(["fit", "partial_fit"]))
def test_sample_weights_of_any_kind(cls, kind, n, dtype, method):
    X = np.random.default_rng(n).normal(size=(n, 3, 2)).astype(dtype)
    y = _targets(cls, [3] * n, seed=0)
    sample_weight = _weights(kind, n)
    before = _snapshot([X, y, sample_weight])
    model = _fits_or_explains(lambda: _train(_tiny(cls), method, X, y, sample_weight))
    _assert_unchanged(before, [X, y, sample_weight])
    if kind in VALID_WEIGHTS:
        assert model is not None, f"{kind} sample weights were refused"
    if model is not None:
        _check_predictions(model, X)


@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(25)
@given(weights=st.lists(st.integers(0, 3), min_size=2, max_size=5).filter(any),
       exponent=st.integers(-60, 60), dtype=st.sampled_from(["float32", "float64"]))
def test_equivalent_sample_weights_train_the_same_model(cls, weights, exponent, dtype):
    """Without the L2 penalty (whose strength is relative to the weights'
    sum), weights scaled by a power of two, as integers, or 0/1 as booleans
    give bit-identical fits: the loss is a ratio of weighted sums."""
    n = len(weights)
    X = np.random.default_rng(n).normal(size=(n, 3, 2)).astype(dtype)
    y = _targets(cls, [3] * n, seed=1)
    weights = np.array(weights)

    def fitted(sample_weight):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _tiny(cls, alpha=0.0, max_iter=2).fit(X, y, sample_weight).weights_

    reference = fitted(weights.astype(np.float64))
    for other in (weights, np.ldexp(weights.astype(np.float64), exponent)):
        for name, value in fitted(other).items():
            np.testing.assert_array_equal(value, reference[name], err_msg=name)
    binary = weights > 0
    reference = fitted(binary.astype(np.float64))
    for name, value in fitted(binary).items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)


# -- hyperparameters at their bounds ---------------------------------------------

BOUNDS = {
    "learning_rate_init": [1e-300, 1e-8, 1.0, 1e3, 1e300],
    "epsilon": [1e-300, 1e-38, 1e-30, 1e10],
    "alpha": [0.0, 1e3, 1e30, 1e300],
    "solver": ["adam", "sgd", "rmsprop"],
    "learning_rate": ["constant", "invscaling", "adaptive"],
    "power_t": [0.0, 50.0],
    "momentum": [0.0, 1.0],
    "nesterovs_momentum": [False],
    "beta_1": [0.0, 0.999999],
    "beta_2": [0.0, 1 - 1e-16],
    "rho": [0.0, 1 - 1e-16],
    "batch_size": [1, 2, 1000],
    "clip_norm": [None, 1e-300, 1e-30, 1e300],
    "bptt_truncate": [1, 2],
    "dropout": [0.5, 0.999999, 1 - 1e-16],
    "max_iter": [1, 2],
    "n_threads": [1, 2],
    "early_stopping": [True],
    "validation_fraction": [1e-9, 0.5, 1 - 1e-9],
    "tol": [0.0, 1e300],
    "n_iter_no_change": [1],
    "shuffle": [False],
    "cell": ["rnn", "lstm", "gru"],
    "nonlinearity": ["relu"],
    "bidirectional": [True],
    "hidden_layer_sizes": [(1,), (2, 2)],
}


@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(60)
@given(params=st.fixed_dictionaries({}, optional={
           name: st.sampled_from(values) for name, values in BOUNDS.items()}),
       pooling=st.sampled_from(["last", "mean", "max"]),
       dtype=st.sampled_from(["float32", "float64"]),
       method=st.sampled_from(["fit", "partial_fit"]))
def test_hyperparameters_at_their_bounds_fit_or_explain(cls, params, pooling, dtype,
                                                         method):
    """Each setting at a bound fits a model with finite weights and outputs,
    or is a ValueError that names the trouble (a "Training diverged" for an
    absurd learning rate); never NaN weights kept, never another exception."""
    if cls not in PER_STEP:
        params["pooling"] = pooling
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 4, 2)).astype(dtype)
    y = _targets(cls, [4] * 8, seed=0)
    model = _tiny(cls).set_params(**params)
    fitted = _fits_or_explains(lambda: _train(model, method, X, y), errors=ValueError)
    # A failed fit keeps no NaN weights either.
    assert all(np.all(np.isfinite(w)) for w in getattr(model, "weights_", {}).values())
    if fitted is not None:
        _check_predictions(fitted, X)


# -- the same model, whatever the form of the data or the thread count ----------

@pytest.mark.parametrize("cls", ESTIMATORS)
@_settings(25)
@given(n=st.integers(1, 6), T=st.integers(1, 4), univariate=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]),
       cell=st.sampled_from(["rnn", "lstm", "gru"]),
       bidirectional=st.booleans(), seed=st.integers(0, 2**16))
def test_array_list_and_thread_count_train_the_same_model(cls, n, T, univariate, dtype,
                                                          cell, bidirectional, seed):
    """An (n, T, D) array, (n, T) for univariate sequences, and the list of
    its sequences (with per-step targets as a list too) are the same data;
    one or two threads compute the same sums (fixed chunks)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, 1 if univariate else 2)).astype(dtype)
    y = _targets(cls, [T] * n, seed=seed)
    if cls in CLASSIFIERS and n * (T if cls in PER_STEP else 1) < 2:
        return  # a single label: one class, refused
    forms = [(X, y, 1), (list(X), list(y) if cls in PER_STEP else y, 1), (X, y, 2)]
    if univariate:
        forms.append((X[:, :, 0], y, 1))
    fits = []
    for X_form, y_form, n_threads in forms:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fits.append(_tiny(cls, cell=cell, bidirectional=bidirectional, max_iter=2,
                              n_threads=n_threads).fit(X_form, y_form).weights_)
    for other in fits[1:]:
        for name, value in other.items():
            np.testing.assert_array_equal(value, fits[0][name], err_msg=name)


# -- defects the generated cases found, held fixed -----------------------------------

@pytest.mark.parametrize("cls", ESTIMATORS)
def test_invscaling_with_a_large_power_t(cls):
    X = np.random.default_rng(0).normal(size=(8, 4, 2))
    y = _targets(cls, [4] * 8, seed=0)
    model = _tiny(cls, solver="sgd", learning_rate="invscaling", power_t=400.0)
    fitted = _fits_or_explains(lambda: model.fit(X, y), errors=ValueError)
    if fitted is not None:
        _check_predictions(fitted, X)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("cls", CLASSIFIERS)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_labels_raise_without_a_runtime_warning(cls, value):
    X = np.random.default_rng(0).normal(size=(4, 3, 2))
    y = np.array([0.0, 1.0, value, 0.0])
    if cls is RNNStepClassifier:
        y = np.repeat(y[:, None], 3, axis=1)
    with pytest.raises(ValueError, match="NaN|infinity"):
        _tiny(cls).fit(X, y)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_sample_weights_whose_sum_overflows(cls):
    X = np.random.default_rng(0).normal(size=(6, 3, 2))
    y = _targets(cls, [3] * 6, seed=0)
    model = _tiny(cls).fit(X, y, sample_weight=np.full(6, 1e308))
    _check_predictions(model, X)


@pytest.mark.parametrize("cls", PER_STEP)
def test_object_array_of_sequences_per_step(cls):
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(1, 1)), rng.normal(size=(2, 1))]
    X = np.empty(2, dtype=object)
    X[0], X[1] = sequences
    y = _targets(cls, [1, 2], seed=0, as_list=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = _tiny(cls).fit(X, y)
    assert [len(p) for p in model.predict(X)] == [1, 2]
    assert model.score(X, y) == model.score(sequences, y)
