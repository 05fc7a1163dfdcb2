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


@pytest.mark.parametrize("solver", ["adam", "rmsprop"])
def test_epsilon_below_float32s_range_is_named(solver):
    # The network trains in float32 by default whatever X's dtype, so float64
    # data does not help; dtype="float64" does.
    X, y = _data()
    for data in (X, X.astype(np.float64)):
        with pytest.raises(ValueError, match=r"epsilon=1e-50 is below the smallest normal "
                           r"float32 \(1.18e-38\).*or set dtype='float64'"):
            RNNClassifier(solver=solver, epsilon=1e-50, max_iter=1).fit(data, y)
    with pytest.warns(Warning):  # float64 holds it: trains (ConvergenceWarning)
        clf = RNNClassifier(solver=solver, epsilon=1e-50, max_iter=1, hidden_layer_sizes=(4,),
                            dtype="float64").fit(X, y)
    assert all(np.all(np.isfinite(w)) for w in clf.weights_.values())


def test_an_overflowing_l2_penalty_is_named():
    X, y = _data()
    with pytest.raises(ValueError, match=r"alpha=10000000000.0 divided by the sample weights' "
                       r"scale \(1e-40\) overflows float32"):
        RNNClassifier(alpha=1e10, max_iter=1).fit(X, y, sample_weight=np.full(len(y), 1e-40))


def test_a_growing_loss_warns_that_the_fit_diverges():
    # A learning rate far too large without clipping: the loss stays finite
    # but ends far above where it started; the fit must say so. A constant
    # rate (the warning names it as given) and the last-state head, whose
    # loss grows the fastest here.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 10, 3))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = RNNClassifier(hidden_layer_sizes=(16,), learning_rate_init=20.0, solver="sgd",
                        learning_rate="constant", pooling="last", batch_size=64,
                        clip_norm=None, random_state=0, max_iter=50)
    with pytest.warns(Warning) as record:
        clf.fit(X, y)
    messages = [str(w.message) for w in record]
    assert any("the optimization diverges. Lower learning_rate_init (now 20)" in m
               for m in messages), messages
    assert clf.loss_curve_[-1] > 2 * clf.loss_curve_[0]


def test_a_converging_fit_does_not_warn_of_divergence():
    X, y = _data(n=200)
    with pytest.warns(Warning) as record:
        RNNClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    assert not any("diverges" in str(w.message) for w in record)
