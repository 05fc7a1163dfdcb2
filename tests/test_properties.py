"""Property-based tests: generated inputs, invariants that must always hold.

For any input, every entry point either raises a ValueError or TypeError
with a message, or returns finite, normalised results; it never modifies
what it was given; the array and list forms of the same sequences give the
same predictions; and ``loss_and_grad`` agrees with the NumPy reference.
Example counts are bounded and the search is derandomized, so a run takes
seconds and is the same every time. test_properties_fit.py holds the same
invariants for fit and partial_fit.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cbptt import RNNClassifier, RNNStepClassifier, loss_and_grad  # noqa: E402

try:
    from reference import init_weights, reference_loss_and_grad
except ImportError:  # pragma: no cover - tests imported as a package
    from tests.reference import init_weights, reference_loss_and_grad

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=list(hypothesis.HealthCheck))
N_FEATURES = 2


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6, N_FEATURES))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    with pytest.warns(Warning):  # ConvergenceWarning at max_iter=3
        return RNNClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)


def _values(dtype):
    """Finite values, extremes and non-finite ones, as a float array's entries."""
    return st.one_of(
        st.floats(-5, 5, width=32),
        st.sampled_from([0.0, 1e30, -1e30, 1e-40, np.nan, np.inf, -np.inf]),
    ).map(dtype)


@st.composite
def arrays(draw):
    """An array of 0 to 4 dimensions, of a numeric dtype, in any memory layout."""
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
    size = int(np.prod(shape))
    values = draw(st.lists(_values(np.float64), min_size=size, max_size=size))
    with np.errstate(invalid="ignore", over="ignore"):
        X = np.array(values, dtype=np.float64).reshape(shape)
        X = X.astype(dtype) if dtype is not np.bool_ else X > 0
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided" and X.ndim:
        X = np.repeat(X, 2, axis=0)[::2]
    elif layout == "readonly":
        X.setflags(write=False)
    return X


def _copy(value):
    return [np.array(v, copy=True) for v in value] if isinstance(value, list) else \
        np.array(value, copy=True)


def _unchanged(before, after):
    if isinstance(before, list):
        return all(np.array_equal(b, a, equal_nan=True) for b, a in zip(before, after))
    return np.array_equal(before, after, equal_nan=before.dtype.kind == "f")


@pytest.mark.filterwarnings("error::RuntimeWarning")   # an error, not a warning too
@SETTINGS
@given(X=arrays())
def test_predict_gives_a_clear_error_or_normalised_probabilities(fitted, X):
    before = _copy(X)
    try:
        proba = fitted.predict_proba(X)
    except (ValueError, TypeError) as error:
        assert str(error)
    else:
        assert proba.ndim == 2 and proba.shape[1] == 2
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert _unchanged(before, X)


@st.composite
def ragged(draw):
    """A list of 1 to 6 sequences of 1 to 7 steps with N_FEATURES features."""
    lengths = draw(st.lists(st.integers(1, 7), min_size=1, max_size=6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(length, N_FEATURES)).astype(dtype) for length in lengths]


@SETTINGS
@given(sequences=ragged())
def test_list_and_padded_forms_give_the_same_predictions(fitted, sequences):
    before = _copy(sequences)
    from_list = fitted.predict_proba(sequences)
    # Each sequence alone is the same sequence: the list form pads nothing
    # into the computation.
    alone = np.concatenate([fitted.predict_proba(seq[np.newaxis]) for seq in sequences])
    np.testing.assert_allclose(from_list, alone, rtol=1e-5, atol=1e-7)
    assert _unchanged(before, sequences)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@SETTINGS
@given(sequences=ragged(), weights=st.lists(st.sampled_from([0.0, 1e-3, 1.0, 7.0]),
                                              min_size=6, max_size=6))
def test_step_classifier_fits_or_explains(sequences, weights):
    labels = [(seq[:, 0] > 0).astype(int) for seq in sequences]
    sample_weight = np.array(weights[: len(sequences)])
    before = _copy(sequences), _copy(labels), sample_weight.copy()
    try:
        with np.errstate(all="ignore"):
            model = RNNStepClassifier(hidden_layer_sizes=(4,), max_iter=2,
                                      random_state=0).fit(sequences, labels,
                                                          sample_weight=sample_weight)
    except ValueError as error:
        assert str(error)
    else:
        predictions = model.predict(sequences)
        assert [len(p) for p in predictions] == [len(s) for s in sequences]
        assert np.all(np.isfinite(np.concatenate(model.predict_proba(sequences))))
    assert _unchanged(before[0], sequences) and _unchanged(before[1], labels)
    assert np.array_equal(before[2], sample_weight)


@st.composite
def problems(draw):
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    hidden = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))
    bidirectional = draw(st.booleans())
    output = draw(st.sampled_from(["last", "mean", "max", "sequence"]))
    loss = draw(st.sampled_from(["cross_entropy", "squared_error"]))
    n, T, C = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    truncate = None
    if not bidirectional and output in ("last", "sequence"):
        truncate = draw(st.one_of(st.none(), st.integers(1, 6)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, cell, N_FEATURES, hidden, C, bidirectional=bidirectional)
    X = rng.normal(size=(n, T, N_FEATURES))
    lengths = rng.integers(1, T + 1, size=n)
    shape = (n, T) if output == "sequence" else (n,)
    y = rng.integers(0, C, size=shape) if loss == "cross_entropy" else \
        rng.normal(size=shape + (C,))
    return weights, X, y, dict(cell=cell, lengths=lengths, bptt_truncate=truncate,
                               sample_weight=rng.uniform(0.1, 2, n), output=output,
                               loss=loss)


@SETTINGS
@given(problem=problems())
def test_loss_and_grad_matches_the_reference(problem):
    weights, X, y, kwargs = problem
    value, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_value, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert value == pytest.approx(ref_value, rel=1e-10)
    for name in ref_grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-8, atol=1e-12)
