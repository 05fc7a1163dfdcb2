"""Sample weights at the edges of float32's range, and what every entry
point says of the same input.

The loss is a ratio of weighted sums, so scaling every weight alike changes
nothing; weights that float64 holds must not vanish, overflow or change the
fit when training runs in float32.
"""

import numpy as np
import pytest

from cbptt import RNNClassifier, RNNRegressor, loss_and_grad

try:
    from reference import init_weights
except ImportError:  # pragma: no cover - tests imported as a package
    from tests.reference import init_weights


def _data(n=48, T=5, D=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D)).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


@pytest.mark.parametrize("scale", [1e-50, 1e-39, 1e300])
@pytest.mark.parametrize("estimator", [RNNClassifier, RNNRegressor])
def test_weight_scale_does_not_change_a_float32_fit(estimator, scale):
    X, y = _data()
    target = y if estimator is RNNClassifier else y.astype(float)
    weights = np.arange(1.0, len(y) + 1) % 3 + 1
    # alpha=0: the L2 penalty is divided by the minibatch's weight sum (a
    # weight of 2 is a duplicated sample, as in MLPClassifier), so it does
    # depend on the weights' scale; the data term does not.
    params = dict(hidden_layer_sizes=(6,), max_iter=3, random_state=0, shuffle=False,
                  alpha=0.0)
    with pytest.warns(Warning):  # ConvergenceWarning at max_iter=3
        reference = estimator(**params).fit(X, target, sample_weight=weights)
        scaled = estimator(**params).fit(X, target, sample_weight=weights * scale)
    assert np.all(np.isfinite(scaled.loss_curve_))
    np.testing.assert_allclose(scaled.loss_curve_, reference.loss_curve_, rtol=1e-6)
    for name in reference.weights_:
        np.testing.assert_allclose(scaled.weights_[name], reference.weights_[name],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [1e-50, 1e-39, 1e300])
def test_loss_and_grad_in_float32_does_not_depend_on_the_weights_scale(scale):
    X, y = _data(n=10)
    weights = init_weights(1, "gru", 2, [4], 2)
    sample_weight = np.linspace(1, 2, len(y))
    expected = loss_and_grad(weights, X, y, cell="gru", sample_weight=sample_weight)
    value, grads = loss_and_grad(weights, X, y, cell="gru",
                                 sample_weight=sample_weight * scale)
    assert value > 0 and value == pytest.approx(expected[0], rel=1e-6)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[1][name], rtol=1e-5, atol=1e-8)


def test_every_entry_point_takes_boolean_sample_weights():
    X, y = _data(n=10)
    weights = init_weights(1, "gru", 2, [4], 2)
    mask = np.arange(len(y)) % 2 == 0
    value, _ = loss_and_grad(weights, X, y, cell="gru", sample_weight=mask)
    assert value == pytest.approx(loss_and_grad(weights, X[mask], y[mask], cell="gru")[0],
                                  rel=1e-6)
    with pytest.warns(Warning):
        RNNClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(X, y, sample_weight=mask)


def test_every_entry_point_rejects_a_boolean_truncation():
    X, y = _data(n=10)
    weights = init_weights(1, "gru", 2, [4], 2)
    message = "bptt_truncate must be None or an integer >= 1; got True"
    with pytest.raises(ValueError, match=message):
        loss_and_grad(weights, X, y, cell="gru", bptt_truncate=True)
    with pytest.raises(ValueError, match=message):
        RNNClassifier(bptt_truncate=True).fit(X, y)
