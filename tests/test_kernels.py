"""The Cython kernels against the NumPy reference BPTT, and their invariants.

The reference (tests/reference.py) is itself checked by finite differences and
PyTorch autograd; here the kernels must agree with it: float64 to ~1e-10
relative, float32 to ~1e-4, with ragged lengths, truncation and sample
weights, and bit-identically for any number of threads.
"""

import numpy as np
import pytest

from cbptt import RNNClassifier, loss_and_grad
from cbptt._kernels._utils import tanh_float32

try:
    from reference import init_weights, reference_loss_and_grad
except ImportError:  # pragma: no cover - when tests is imported as a package
    from tests.reference import init_weights, reference_loss_and_grad


def _problem(seed, n=7, T=6, D=3, H=5, C=4, ragged=True, weighted=False):
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, "rnn", D, [H], C, scale=0.6)
    X = rng.normal(size=(n, T, D))
    y = rng.integers(0, C, size=n)
    lengths = rng.integers(1, T + 1, size=n) if ragged else None
    sample_weight = rng.uniform(0.1, 2.0, size=n) if weighted else None
    return weights, X, y, lengths, sample_weight


def _max_relative_error(grads, expected):
    return max(
        np.max(np.abs(grads[k] - expected[k])) / (np.max(np.abs(expected[k])) + 1e-300)
        for k in expected
    )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bptt_truncate", [None, 1, 3])
def test_float64_matches_reference(nonlinearity, ragged, weighted, bptt_truncate):
    weights, X, y, lengths, sw = _problem(0, ragged=ragged, weighted=weighted)
    kwargs = dict(nonlinearity=nonlinearity, lengths=lengths,
                  bptt_truncate=bptt_truncate, sample_weight=sw)
    loss, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_loss, ref_grads = reference_loss_and_grad(weights, X, y, cell="rnn", **kwargs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert set(grads) == set(weights)
    for name in weights:
        assert grads[name].shape == weights[name].shape
        assert grads[name].dtype == np.float64
    assert _max_relative_error(grads, ref_grads) < 1e-10


def test_many_chunks_and_ties_match_reference():
    # More rows than one chunk (32), many equal lengths: chunking and the
    # stable sort by length must not change the result.
    weights, X, y, lengths, sw = _problem(1, n=150, T=9, D=2, H=6, C=3, weighted=True)
    loss, grads = loss_and_grad(weights, X, y, lengths=lengths, sample_weight=sw)
    ref_loss, ref_grads = reference_loss_and_grad(
        weights, X, y, cell="rnn", lengths=lengths, sample_weight=sw
    )
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


def test_float32_close_to_float64():
    weights, X, y, lengths, _ = _problem(2, n=40, T=12, D=4, H=16, C=5)
    loss64, grads64 = loss_and_grad(weights, X, y, lengths=lengths)
    loss32, grads32 = loss_and_grad(weights, X.astype(np.float32), y, lengths=lengths)
    assert all(g.dtype == np.float32 for g in grads32.values())
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert _max_relative_error(grads32, grads64) < 1e-4


def test_padding_content_never_matters():
    weights, X, y, lengths, _ = _problem(3, n=9)
    X_nan = X.copy()
    for i, length in enumerate(lengths):
        X_nan[i, length:] = np.nan
    expected = loss_and_grad(weights, X, y, lengths=lengths)
    loss, grads = loss_and_grad(weights, X_nan, y, lengths=lengths)
    assert loss == expected[0]
    for name in grads:
        np.testing.assert_array_equal(grads[name], expected[1][name])


def test_truncation_longer_than_sequences_is_full_bptt():
    weights, X, y, lengths, _ = _problem(4)
    full = loss_and_grad(weights, X, y, lengths=lengths)
    truncated = loss_and_grad(weights, X, y, lengths=lengths, bptt_truncate=X.shape[1])
    for name in full[1]:
        np.testing.assert_array_equal(full[1][name], truncated[1][name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_bit_identical_for_any_thread_count(dtype):
    weights, X, y, lengths, sw = _problem(5, n=200, T=10, D=3, H=24, C=4, weighted=True)
    X = X.astype(dtype)
    results = [
        loss_and_grad(weights, X, y, lengths=lengths, sample_weight=sw, n_threads=k)
        for k in (1, 2, 4)
    ]
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for name in grads:
            np.testing.assert_array_equal(grads[name], results[0][1][name])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_bit_identical_for_any_thread_count():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 7, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    fits = [
        RNNClassifier(hidden_layer_sizes=(12,), batch_size=128, max_iter=3,
                      random_state=0, n_threads=k).fit(X, y)
        for k in (1, 2, 4)
    ]
    for fit in fits[1:]:
        for name in fit.weights_:
            np.testing.assert_array_equal(fit.weights_[name], fits[0].weights_[name])


def test_float32_tanh_within_6_ulp():
    x = np.concatenate([
        np.linspace(-20, 20, 400_001),
        np.geomspace(1e-38, 20, 20_000),
        -np.geomspace(1e-38, 20, 20_000),
        [0.0, np.float32(np.finfo(np.float32).max), -np.float32(np.finfo(np.float32).max)],
    ]).astype(np.float32)
    out = np.empty_like(x)
    tanh_float32(x, out)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - exact) / ulp) < 6
    assert np.max(np.abs(out)) <= 1.0
    assert np.all(np.sign(out) == np.sign(x))
