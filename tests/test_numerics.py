"""Sample weights at the edges of float32's range, and what every entry
point says of the same input.

The loss is a ratio of weighted sums, so scaling every weight alike changes
nothing; weights that float64 holds must not vanish, overflow or change the
fit when training runs in float32.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

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


def _overflowing_fit(lengths, dtype):
    """One epoch of SGD, one sequence per step, from ReLU weights whose
    recurrence multiplies the state by 1.5: over 208 steps the outputs reach
    1e37 (float32 holds them, so the loss is finite) and the gradient,
    a sum of 208 such products, passes float32's 3.4e38."""
    X = [np.ones((n, 1)) for n in lengths]
    y = np.arange(len(lengths)) % 2
    clf = RNNClassifier(cell="rnn", nonlinearity="relu", hidden_layer_sizes=2,
                        pooling="last", downsample=1, solver="sgd", learning_rate_init=1e-3,
                        learning_rate="constant", batch_size=1, shuffle=False, max_iter=1,
                        alpha=0.0, warm_start=True, dtype=dtype)
    clf.weights_ = {"weight_ih_l0": np.ones((2, 1)), "weight_hh_l0": 1.5 * np.eye(2),
                    "bias_ih_l0": np.zeros(2), "bias_hh_l0": np.zeros(2),
                    "weight_out": np.eye(2), "bias_out": np.zeros(2)}
    clf.classes_, clf.n_features_in_ = np.arange(2), 1
    start = {name: w.copy() for name, w in clf.weights_.items()}
    return clf, X, y, start


def test_a_step_whose_gradient_overflows_is_skipped_and_counted():
    clf, X, y, start = _overflowing_fit([5, 208, 5, 208], "float32")
    with pytest.warns(RuntimeWarning, match="2 of 4 optimizer steps were skipped: their "
                      "gradient overflowed float32.*dtype='float64'"):
        clf.fit(X, y)
    assert clf._optimizer.t == 2                     # the two short sequences
    assert np.isfinite(clf.loss_curve_[0])
    assert all(np.all(np.isfinite(w)) for w in clf.weights_.values())
    assert not np.array_equal(clf.weights_["weight_hh_l0"], start["weight_hh_l0"])
    # float64 holds that gradient: every step is taken, and clipped.
    clf64, X, y, _ = _overflowing_fit([5, 208, 5, 208], "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf64.fit(X, y)
    assert clf64._optimizer.t == 4


def test_a_fit_whose_every_gradient_overflows_diverges():
    clf, X, y, start = _overflowing_fit([208, 208], "float32")
    with pytest.raises(ValueError, match="Training diverged: the gradient of every "
                       "minibatch overflowed float32 at iteration 1. Lower learning_rate"):
        clf.fit(X, y)
    for name, w in clf.weights_.items():            # the model is kept as it was
        np.testing.assert_array_equal(w, start[name])


def test_a_converging_fit_does_not_warn_of_divergence():
    X, y = _data(n=200)
    with pytest.warns(Warning) as record:
        RNNClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    assert not any("diverges" in str(w.message) for w in record)
