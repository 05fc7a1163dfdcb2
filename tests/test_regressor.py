"""Behaviour of cbptt.RNNRegressor as a scikit-learn regressor over sequences.

The headlines: it recovers sequence-level quantities (the mean and the slope of
a noisy series, one or both at once) with its default network, and a pooled
head ("max", "mean") learns from evidence at the start of long sequences
where the last-state head does not. The rest checks the contract users rely
on, as tests/test_classifier.py does for the classifier: ragged input,
sample weights, partial_fit, warm start, early stopping on R^2, reporting,
pickling, determinism across thread counts, dtypes, Pipelines and grid
search, PyTorch weight names, downsampling, and bad input (the right
exception, with words that say what was wrong, and nothing the user passed
modified).

The network trains in float32 by default; tests of exact values (a loss
recomputed by ``loss_and_grad``, weights equal to those of an equivalent fit)
ask for ``dtype="float64"``.
"""

import copy
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from cbptt import RNNClassifier, RNNRegressor, loss_and_grad

# Tiny, fast models for everything but the learning tests.
FAST = dict(cell="rnn", hidden_layer_sizes=(8,), max_iter=5, random_state=0)


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    # Short max_iter is on purpose here; tests that want the warning use
    # pytest.warns, which overrides this filter.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _easy(n=60, T=5, D=2, seed=0, dtype=np.float64, n_outputs=1):
    """Targets: the mean of feature 0 (and the max of feature 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D)).astype(dtype)
    y = np.c_[X[:, :, 0].mean(axis=1), X[:, :, 1].max(axis=1)].astype(np.float64)
    return X, (y[:, 0] if n_outputs == 1 else y[:, :n_outputs])


def _ragged(n=40, D=2, seed=0, min_len=2, max_len=9):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    X = [rng.normal(size=(t, D)) for t in lengths]
    y = np.array([x[:, 0].mean() for x in X])
    return X, y


def _padded(X):
    """A list of (T_i, D) sequences -> zero-padded (n, max T_i, D) array, lengths."""
    lengths = np.array([len(s) for s in X])
    padded = np.zeros((len(X), lengths.max(), X[0].shape[1]))
    for i, seq in enumerate(X):
        padded[i, : len(seq)] = seq
    return padded, lengths


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _half_mse(pred, y):
    """The regressor's loss without L2: mean over samples of 0.5 * mean over
    outputs of the squared error."""
    shape = (len(y), -1)
    return 0.5 * np.mean((np.reshape(pred, shape) - np.reshape(y, shape)) ** 2)


# -- the headlines -------------------------------------------------------------
def _series(n, T=20, seed=0):
    """Noisy lines: level + slope * t + noise. Targets: each series' own mean
    and least-squares slope (computed from the noisy values themselves)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(-1.0, 1.0, T)
    level, slope = rng.normal(size=(2, n, 1))
    X = level + slope * t + 0.5 * rng.normal(size=(n, T))
    targets = np.c_[X.mean(axis=1), np.polyfit(t, X.T, 1)[0]]
    return X[:, :, np.newaxis], targets


@pytest.mark.parametrize("pooling", ["max", "last"])
@pytest.mark.parametrize("outputs", ["mean", "mean_and_slope"])
def test_learns_the_mean_and_slope_of_noisy_series(pooling, outputs):
    # The default network (GRU, 64 units, pooling="max") and the last-state
    # head; only max_iter is lowered (from 200) to keep the test fast. With
    # data seeds and random_state 0..1, every held-out R^2, overall and per
    # output, was >= 0.988 (the lowest: the slope with the last-state head,
    # data seed 1, random_state 1; with data seed 0, tested here, >= 0.993).
    X, targets = _series(500)
    y = targets[:, 0] if outputs == "mean" else targets
    X_train, X_test, y_train, y_test = X[:300], X[300:], y[:300], y[300:]
    reg = RNNRegressor(pooling=pooling, max_iter=40, random_state=0).fit(X_train, y_train)
    pred = reg.predict(X_test)
    assert pred.shape == y_test.shape
    assert reg.n_outputs_ == (1 if outputs == "mean" else 2)
    assert reg.score(X_test, y_test) >= 0.95
    assert np.all(r2_score(y_test, pred, multioutput="raw_values") >= 0.95)


def _early_evidence(n, seed, k=5):
    """Ragged float32 sequences of 100..150 steps of N(0, 1) noise; the target
    is set by the first k steps only: sqrt(k) * their mean (unit variance).
    Below 200 steps, downsample="auto" leaves the steps as they are."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(t, 1)).astype(np.float32)
         for t in rng.integers(100, 151, size=n)]
    value = np.array([np.sqrt(k) * x[:k, 0].mean() for x in X])
    return X, value


# Held-out scores over seeds 0..7 of _early_evidence(600) with these settings
# (400 sequences to train, 200 to test):
#   RNNRegressor R^2:   last -0.22..-0.08, mean 0.40..0.91,  max 0.956..0.977
#   RNNClassifier acc:  last 0.49..0.535,  mean 0.785..0.86, max 0.88..0.965
# "last" has to carry the first steps through 95+ steps of noise and learns
# nothing in 40 epochs; the max head learns reliably. The mean head must
# learn to latch the early value into its state (the mean dilutes the first
# steps ~25-fold) and does so for some seeds only, so for it only the margin
# over "last" is asserted (smallest seen: 0.62 in R^2, 0.25 in accuracy).
EARLY = dict(cell="gru", hidden_layer_sizes=16, max_iter=40)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_head_regressor_learns_early_evidence_in_long_sequences(seed):
    X, value = _early_evidence(600, seed)
    scores = {}
    for pooling in ("last", "mean", "max"):
        reg = RNNRegressor(**EARLY, pooling=pooling, random_state=seed).fit(X[:400],
                                                                           value[:400])
        scores[pooling] = reg.score(X[400:], value[400:])
    assert scores["max"] >= 0.9, scores
    assert scores["last"] <= 0.3, scores
    assert scores["max"] - scores["last"] >= 0.6, scores
    assert scores["mean"] - scores["last"] >= 0.5, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_head_classifier_learns_early_evidence_in_long_sequences(seed):
    X, value = _early_evidence(600, seed)
    label = value > 0
    scores = {}
    for pooling in ("last", "mean", "max"):
        clf = RNNClassifier(**EARLY, pooling=pooling, random_state=seed).fit(X[:400],
                                                                            label[:400])
        scores[pooling] = clf.score(X[400:], label[400:])
    assert scores["last"] <= 0.65, scores  # chance is about 0.5
    assert scores["max"] >= 0.85, scores
    assert scores["max"] - scores["last"] >= 0.25, scores
    assert scores["mean"] - scores["last"] >= 0.1, scores


# -- scikit-learn integration ----------------------------------------------------
def _univariate(n=150, T=10, seed=0):
    """2-D X (univariate sequences) and y = 3 * the mean of each sequence."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T))
    return X, 3.0 * X.mean(axis=1)


def _pipeline(**params):
    # A 2-D X is univariate sequences: the scaler standardizes each step.
    return make_pipeline(
        StandardScaler(),
        RNNRegressor(**{**FAST, "max_iter": 20, **params}),
    )


def test_pipeline_equals_manual_steps():
    X, y = _univariate()
    pipe = _pipeline().fit(X, y)
    X_scaled = StandardScaler().fit_transform(X)
    manual = RNNRegressor(**{**FAST, "max_iter": 20}).fit(X_scaled, y)
    assert_array_equal(pipe.predict(X), manual.predict(X_scaled))
    assert pipe.score(X, y) == pytest.approx(r2_score(y, pipe.predict(X)), abs=1e-12)
    assert pipe.score(X, y) > 0.3


def test_grid_search_over_pooling_in_parallel_matches_cross_val_score():
    # The target is each sequence's mean: the mean head is the right one
    # (measured 3-fold R^2: last 0.80, mean 0.85, max 0.56).
    X, y = _univariate()
    pipe = _pipeline()
    grid = GridSearchCV(pipe, {"rnnregressor__pooling": ["last", "mean", "max"]}, cv=3,
                        n_jobs=2).fit(X, y)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_params_ == {"rnnregressor__pooling": "mean"}
    assert grid.best_score_ > 0.7
    assert grid.best_estimator_[-1].pooling == "mean"
    # Worker processes (fewer threads each) give the same numbers as in-process.
    scores = cross_val_score(_pipeline(pooling="mean"), X, y, cv=3)
    assert grid.best_score_ == pytest.approx(scores.mean(), abs=1e-12)


def test_pickle_round_trip():
    X, y = _easy(n_outputs=2)
    reg = RNNRegressor(**FAST, pooling="max").fit(X, y)
    reg2 = pickle.loads(pickle.dumps(reg))
    assert_array_equal(reg2.predict(X), reg.predict(X))
    assert _weights_equal(reg2.weights_, reg.weights_)
    assert reg2.n_outputs_ == 2 and reg2.pooling == "max"


def test_clone_get_params_and_set_params():
    X, y = _easy()
    reg = RNNRegressor(**FAST, pooling="mean", solver="sgd", clip_norm=None).fit(X, y)
    params = reg.get_params()
    assert params["pooling"] == "mean"
    defaults = RNNRegressor().get_params()
    assert (defaults["pooling"], defaults["downsample"], defaults["dtype"]) == (
        "max", "auto", "float32")
    cloned = clone(reg)
    assert cloned.get_params() == params
    assert not hasattr(cloned, "weights_")
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)
    with pytest.raises(NotFittedError):
        cloned.predict(X)
    cloned.set_params(pooling="max").fit(X, y)
    assert cloned.pooling == "max"
    assert not np.allclose(cloned.predict(X), reg.predict(X))


# -- determinism ---------------------------------------------------------------
def test_same_random_state_same_model():
    X, y = _easy(n_outputs=2)
    a = RNNRegressor(**FAST).fit(X, y)
    b = RNNRegressor(**FAST).fit(X, y)
    assert _weights_equal(a.weights_, b.weights_)
    assert_array_equal(a.predict(X), b.predict(X))
    assert a.loss_curve_ == b.loss_curve_
    c = RNNRegressor(**{**FAST, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.weights_["weight_hh_l0"], c.weights_["weight_hh_l0"])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_thread_count_does_not_change_the_result(pooling):
    # 150 samples, batches of 96 rows: several 32-row chunks per minibatch,
    # plus a short last batch.
    X, y = _easy(n=150, T=4, n_outputs=2)
    params = dict(FAST, batch_size=96, max_iter=3, pooling=pooling)
    one = RNNRegressor(**params, n_threads=1).fit(X, y)
    two = RNNRegressor(**params, n_threads=2).fit(X, y)
    assert _weights_equal(one.weights_, two.weights_)
    assert one.loss_curve_ == two.loss_curve_
    assert_array_equal(one.predict(X), two.predict(X))


# -- input forms -----------------------------------------------------------------
def test_ragged_list_trains_and_predicts():
    X, y = _ragged()
    reg = RNNRegressor(**FAST).fit(X, y)
    assert reg.n_features_in_ == 2 and reg.n_outputs_ == 1
    pred = reg.predict(X)
    assert pred.shape == (len(X),)
    assert np.all(np.isfinite(pred))
    # Sequences longer and shorter than any seen at fit are fine.
    rng = np.random.default_rng(1)
    others = [rng.normal(size=(1, 2)), rng.normal(size=(30, 2)), rng.normal(size=(5, 2))]
    assert reg.predict(others).shape == (3,)
    assert reg.predict(rng.normal(size=(4, 25, 2))).shape == (4,)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_ragged_prediction_equals_one_by_one(pooling):
    X, y = _ragged()
    reg = RNNRegressor(**FAST, pooling=pooling).fit(X, y)
    together = reg.predict(X)
    alone = np.concatenate([reg.predict(seq[np.newaxis]) for seq in X])
    assert_allclose(together, alone, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_ragged_list_is_the_padded_array_with_lengths(pooling):
    # A list carries each sequence's length: the fitted model's predictions
    # on the list give the loss that loss_and_grad computes on the padded
    # array with those lengths (padding excluded from the mean and the max),
    # whatever the padding holds; on the padded array WITHOUT lengths every
    # step counts and the predictions differ.
    X, y = _ragged(min_len=2, max_len=6)
    reg = RNNRegressor(**FAST, pooling=pooling, dtype="float64").fit(X, y)
    padded, lengths = _padded(X)
    expected = _half_mse(reg.predict(X), y)
    options = dict(cell="rnn", lengths=lengths, output=pooling, loss="squared_error")
    loss, _ = loss_and_grad(reg.weights_, padded, y, **options)
    assert loss == pytest.approx(expected, rel=1e-12)
    garbage = padded + 1e3 * (np.arange(padded.shape[1]) >= lengths[:, None])[:, :, None]
    loss, _ = loss_and_grad(reg.weights_, garbage, y, **options)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert not np.allclose(reg.predict(padded), reg.predict(X))
    full = lengths == padded.shape[1]
    assert full.any()  # sequences without padding agree
    assert_allclose(reg.predict(padded)[full], reg.predict(X)[full], rtol=1e-12)


def test_2d_input_is_univariate_sequences():
    X, y = _easy(D=2)
    X2 = X[:, :, 0]
    a = RNNRegressor(**FAST).fit(X2, y)
    b = RNNRegressor(**FAST).fit(X2[:, :, np.newaxis], y)
    assert a.n_features_in_ == 1
    assert _weights_equal(a.weights_, b.weights_)
    assert_array_equal(a.predict(X2), b.predict(X2[:, :, np.newaxis]))
    assert_array_equal(a.predict(list(X2)), a.predict(X2))


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("X_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_decides_the_precision_and_x_the_predictions(dtype, X_dtype, n_outputs):
    # The network trains in `dtype` whatever X holds; predictions come back
    # in X's dtype, as scikit-learn's regressors return them.
    X, y = _easy(dtype=X_dtype, n_outputs=n_outputs)  # y is float64 either way
    reg = RNNRegressor(**FAST, dtype=dtype).fit(X, y)
    assert all(w.dtype == np.dtype(dtype) for w in reg.weights_.values())
    pred = reg.predict(X)
    assert pred.dtype == X_dtype
    assert pred.shape == y.shape
    assert np.all(np.isfinite(pred))
    assert np.isfinite(reg.score(X, y))
    # X of the other dtype at predict: the same model, the answer in its dtype.
    other = np.float64 if X_dtype == np.float32 else np.float32
    assert reg.predict(X.astype(other)).dtype == other
    assert_allclose(reg.predict(X.astype(other)), pred, rtol=1e-5, atol=1e-6)


def test_float64_data_trains_the_float32_model_of_its_cast():
    # By default float64 X is cast to float32 before training: the same
    # model, bit for bit, as from the user's own float32 copy.
    X, y = _easy()
    from64 = RNNRegressor(**FAST).fit(X, y)
    from32 = RNNRegressor(**FAST).fit(X.astype(np.float32), y)
    assert _weights_equal(from64.weights_, from32.weights_)
    assert from64.loss_curve_ == from32.loss_curve_
    assert_array_equal(from64.predict(X), from32.predict(X.astype(np.float32)))


def test_float32_and_float64_train_to_nearly_the_same_model():
    X, y = _easy()
    r32 = RNNRegressor(**FAST).fit(X, y)
    r64 = RNNRegressor(**FAST, dtype="float64").fit(X, y)
    assert r32.weights_["weight_out"].dtype == np.float32
    assert r64.weights_["weight_out"].dtype == np.float64
    assert_allclose(r32.predict(X), r64.predict(X), rtol=0, atol=1e-3)
    assert not np.array_equal(r32.predict(X), r64.predict(X))


def test_partial_fit_continues_in_its_dtype_with_data_of_another():
    X, y = _easy()
    for dtype in ["float32", "float64"]:
        reg = RNNRegressor(**FAST, dtype=dtype).partial_fit(X, y)
        reg.partial_fit(X.astype(np.float32), y)
        reg.partial_fit(X, y)
        assert reg.n_iter_ == 3
        assert all(w.dtype == np.dtype(dtype) for w in reg.weights_.values())


def test_integer_targets_and_input():
    X, y = _easy()
    X_int = np.round(X * 3).astype(np.int64)
    y_int = np.round(y * 3).astype(int)
    reg = RNNRegressor(**FAST).fit(X_int, y_int)
    assert reg.weights_["weight_hh_l0"].dtype == np.float32
    assert reg.predict(X_int).dtype == np.float64
    reg64 = RNNRegressor(**FAST, dtype="float64").fit(X_int, y_int)
    assert reg64.weights_["weight_hh_l0"].dtype == np.float64
    assert reg64.predict(X_int).dtype == np.float64


def _window_means(seq, k):
    """A (T, D) sequence averaged by hand over windows of k steps; the last
    window averages the steps it has."""
    return np.array([seq[start : start + k].mean(axis=0) for start in range(0, len(seq), k)])


def test_downsample_is_the_model_of_inputs_averaged_by_hand():
    # Lengths 4..11 in windows of 3: the last window of most sequences is short.
    X, y = _ragged(min_len=4, max_len=11)
    by_hand = [_window_means(x, 3) for x in X]
    params = dict(FAST, dtype="float64")
    down = RNNRegressor(**params, downsample=3).fit(X, y)
    manual = RNNRegressor(**params, downsample=1).fit(by_hand, y)
    assert down.downsample_ == 3 and manual.downsample_ == 1
    for name in manual.weights_:
        assert_allclose(down.weights_[name], manual.weights_[name], rtol=1e-12,
                        atol=1e-14, err_msg=name)
    assert_allclose(down.loss_curve_, manual.loss_curve_, rtol=1e-12)
    assert_allclose(down.predict(X), manual.predict(by_hand), rtol=1e-12, atol=1e-14)
    # At predict, sequences of any length are averaged over the same windows,
    # and the 2-D form of univariate sequences too.
    rng = np.random.default_rng(1)
    others = [rng.normal(size=(t, 2)) for t in (1, 2, 7, 30)]
    others_by_hand = [_window_means(x, 3) for x in others]
    assert_allclose(down.predict(others), manual.predict(others_by_hand), rtol=1e-12,
                    atol=1e-14)
    X2 = rng.normal(size=(5, 8))
    X2_by_hand = [_window_means(x[:, np.newaxis], 3) for x in X2]
    uni = RNNRegressor(**params, downsample=3).fit(X2, y[:5])
    uni_manual = RNNRegressor(**params).fit(X2_by_hand, y[:5])
    assert_allclose(uni.predict(X2), uni_manual.predict(X2_by_hand), rtol=1e-12, atol=1e-14)


def test_downsample_auto_follows_the_longest_training_sequence():
    # n_timesteps // 100 steps per window for the longest sequence at fit (1
    # below 200 steps) when the series change slowly (random walks); the
    # window stays the one of fit at predict time.
    rng = np.random.default_rng(0)
    params = dict(FAST, hidden_layer_sizes=4, max_iter=1)
    short = [rng.normal(size=(t, 1)).cumsum(axis=0) / 10 for t in (50, 199)]
    long = [rng.normal(size=(t, 1)).cumsum(axis=0) / 10 for t in (30, 450)]
    y = np.array([0.5, -0.5])
    assert RNNRegressor(**params).fit(short, y).downsample_ == 1
    auto = RNNRegressor(**params).fit(long, y)
    assert auto.downsample_ == 4
    fixed = RNNRegressor(**params, downsample=4).fit(long, y)
    assert _weights_equal(auto.weights_, fixed.weights_)
    longer = [rng.normal(size=(1000, 1))]
    assert_array_equal(auto.predict(longer), fixed.predict(longer))
    # partial_fit fixes the window on its first call.
    stepped = RNNRegressor(**params).partial_fit(long, y)
    stepped.partial_fit(short, y)
    assert stepped.downsample_ == 4


def test_column_vector_y_is_raveled_with_a_warning():
    X, y = _easy()
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        col = RNNRegressor(**FAST).fit(X, y[:, np.newaxis])
    flat = RNNRegressor(**FAST).fit(X, y)
    assert col.n_outputs_ == 1
    assert col.predict(X).shape == (len(X),)
    assert col.weights_["weight_out"].shape == (1, 8)
    assert _weights_equal(col.weights_, flat.weights_)


# -- fitted attributes and reporting ---------------------------------------------
@pytest.mark.parametrize("cell, n_gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_fitted_attributes_and_the_loss(cell, n_gates, pooling):
    X, y = _easy(n=60, T=5, D=3, n_outputs=2)
    # float64: the loss is recomputed to 1e-10 below.
    reg = RNNRegressor(cell=cell, hidden_layer_sizes=7, pooling=pooling, max_iter=4,
                       random_state=0, dtype="float64").fit(X, y)
    H, D, C, G = 7, 3, 2, n_gates
    assert reg.n_outputs_ == 2 and isinstance(reg.n_outputs_, int)
    assert reg.n_features_in_ == 3 and isinstance(reg.n_features_in_, int)
    expected = {
        "weight_ih_l0": (G * H, D), "weight_hh_l0": (G * H, H), "bias_ih_l0": (G * H,),
        "bias_hh_l0": (G * H,), "weight_out": (C, H), "bias_out": (C,),
    }
    assert {k: v.shape for k, v in reg.weights_.items()} == expected
    assert list(reg.weights_) == list(expected)  # PyTorch's state_dict order
    assert reg.n_iter_ == 4 and isinstance(reg.n_iter_, int)
    assert reg.downsample_ == 1 and isinstance(reg.downsample_, int)  # 5 steps
    assert isinstance(reg.loss_curve_, list) and len(reg.loss_curve_) == 4
    assert isinstance(reg.loss_, float) and reg.loss_ == reg.loss_curve_[-1]
    assert reg.best_loss_ == min(reg.loss_curve_)
    assert reg.validation_scores_ is None and reg.best_validation_score_ is None
    assert reg.t_ == 4 * len(X)
    # The weights are the model, and the loss is half the mean squared error
    # (over samples and outputs): loss_and_grad on them agrees with predict.
    loss, _ = loss_and_grad(reg.weights_, X, y, cell=cell, output=pooling,
                            loss="squared_error")
    assert loss == pytest.approx(_half_mse(reg.predict(X), y), rel=1e-10)


def test_stacked_bidirectional_weight_names():
    X, y = _easy(n_outputs=2)
    reg = RNNRegressor(cell="lstm", hidden_layer_sizes=(5, 3), bidirectional=True,
                       pooling="mean", max_iter=2, random_state=0).fit(X, y)
    shapes = {k: v.shape for k, v in reg.weights_.items()}
    assert shapes["weight_ih_l0_reverse"] == (20, 2)
    assert shapes["weight_ih_l1"] == (12, 10)  # reads both directions of layer 0
    assert shapes["weight_hh_l1_reverse"] == (12, 3)
    assert shapes["weight_out"] == (2, 6)
    assert shapes["bias_out"] == (2,)
    assert len(shapes) == 2 * 2 * 4 + 2


def test_convergence_warning_when_max_iter_is_hit():
    X, y = _easy()
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        RNNRegressor(**{**FAST, "max_iter": 2}).fit(X, y)


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _easy()
    reg = RNNRegressor(**{**FAST, "max_iter": 3}, verbose=True).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == reg.n_iter_ == 3
    for k, (line, loss) in enumerate(zip(lines, reg.loss_curve_), start=1):
        assert line.startswith(f"Iteration {k}, loss = {loss:.8f}")
    # 20 of the 80 samples: enough for early stopping to score them.
    X, y = _easy(n=80)
    RNNRegressor(**{**FAST, "max_iter": 2}, verbose=True, early_stopping=True,
                 validation_fraction=0.25).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2 and all("validation score = " in line for line in lines)


class _RecordingRegressor(RNNRegressor):
    """Records the validation targets early stopping scores each epoch."""

    def _validation_metric(self, outputs, y, sample_weight):
        self.validation_targets.append(np.array(y))
        return super()._validation_metric(outputs, y, sample_weight)


def test_early_stopping_scores_r2_and_keeps_the_best_weights():
    X, y = _easy(n=80)
    y = y + 0.3 * X[:, :, 1].mean(axis=1)
    # Early stopping's mechanics on the settings the numbers below were
    # measured with: float64 (R^2 is compared to 1e-12), the last-state head,
    # one minibatch of the 60 training samples, a constant rate of 0.01.
    reg = _RecordingRegressor(cell="rnn", hidden_layer_sizes=(8,), random_state=0,
                              early_stopping=True, n_iter_no_change=3,
                              validation_fraction=0.25, max_iter=200, pooling="last",
                              dtype="float64", batch_size=60, learning_rate="constant",
                              learning_rate_init=0.01)
    reg.validation_targets = []
    reg.fit(X, y)
    assert reg.n_iter_ < 200  # stopped early
    assert len(reg.validation_scores_) == len(reg.loss_curve_) == reg.n_iter_
    assert reg.best_validation_score_ == max(reg.validation_scores_)
    assert reg.best_loss_ is None
    assert all(s <= 1.0 for s in reg.validation_scores_)
    assert reg.best_validation_score_ > 0.5
    # It went on past the best epoch, so keeping the best weights matters.
    assert reg.validation_scores_[-1] < reg.best_validation_score_
    # The validation set: 20 of the 80 samples (drawn at random, targets
    # distinct), the same every epoch. The weights kept score R^2 on it
    # exactly best_validation_score_.
    targets = reg.validation_targets[0][:, 0]
    assert len(targets) == 20
    assert all(np.array_equal(t[:, 0], targets) for t in reg.validation_targets)
    val = np.array([np.flatnonzero(y == t)[0] for t in targets])
    assert not np.array_equal(val, np.arange(60, 80))  # not the tail: random
    assert r2_score(y[val], reg.predict(X[val])) == pytest.approx(
        reg.best_validation_score_, abs=1e-12)


# -- training options ------------------------------------------------------------
def test_partial_fit():
    X, y = _easy(n_outputs=2)
    reg = RNNRegressor(hidden_layer_sizes=(8,), random_state=0)
    reg.partial_fit(X, y)
    assert reg.n_iter_ == 1 and reg.n_outputs_ == 2 and reg.n_features_in_ == 2
    # The first call is one epoch of fit.
    once = RNNRegressor(hidden_layer_sizes=(8,), random_state=0, max_iter=1).fit(X, y)
    assert _weights_equal(reg.weights_, once.weights_)
    for expected in range(2, 6):
        reg.partial_fit(X, y)
        assert reg.n_iter_ == expected
    assert len(reg.loss_curve_) == 5
    assert reg.t_ == 5 * len(X)
    assert reg.loss_curve_[-1] < reg.loss_curve_[0]
    weights = copy.deepcopy(reg.weights_)
    with pytest.raises(ValueError, match=r"y has 1 output\(s\), but this RNNRegressor "
                                         r"was trained on 2; every call to partial_fit"):
        reg.partial_fit(X, y[:, 0])
    assert reg.n_iter_ == 5  # the failed call trained nothing
    assert _weights_equal(reg.weights_, weights)


def test_warm_start_continues_from_previous_weights():
    X, y = _easy()
    reg = RNNRegressor(**{**FAST, "max_iter": 3}, warm_start=True).fit(X, y)
    first = {k: v.copy() for k, v in reg.weights_.items()}
    curve = list(reg.loss_curve_)
    reg.set_params(max_iter=1)
    reg.fit(X, y)
    assert reg.n_iter_ == 4
    assert reg.loss_curve_[:3] == curve and len(reg.loss_curve_) == 4
    assert not _weights_equal(reg.weights_, first)
    fresh = RNNRegressor(**{**FAST, "max_iter": 1}).fit(X, y)
    dist = lambda a, b: sum(np.sum((a[k] - b[k]) ** 2) for k in a)  # noqa: E731
    assert dist(reg.weights_, first) < dist(fresh.weights_, first)


def test_warm_start_false_restarts():
    X, y = _easy()
    reg = RNNRegressor(**FAST).fit(X, y)
    reg.fit(X, y)
    assert reg.n_iter_ == FAST["max_iter"]
    assert _weights_equal(reg.weights_, RNNRegressor(**FAST).fit(X, y).weights_)


@pytest.mark.parametrize("output", ["last", "mean", "max"])
def test_sample_weight_equals_duplication_in_the_loss(output):
    rng = np.random.default_rng(0)
    H, D, C = 4, 3, 2
    weights = {
        "weight_ih_l0": rng.normal(size=(H, D)), "weight_hh_l0": rng.normal(size=(H, H)) / 2,
        "bias_ih_l0": rng.normal(size=H), "bias_hh_l0": rng.normal(size=H),
        "weight_out": rng.normal(size=(C, H)), "bias_out": rng.normal(size=C),
    }
    X = rng.normal(size=(3, 5, D))
    y = rng.normal(size=(3, C))
    options = dict(output=output, loss="squared_error")
    loss_w, grads_w = loss_and_grad(weights, X, y, sample_weight=[2, 1, 3], **options)
    rows = [0, 0, 1, 2, 2, 2]
    loss_d, grads_d = loss_and_grad(weights, X[rows], y[rows], **options)
    assert loss_w == pytest.approx(loss_d, rel=1e-12)
    for name in weights:
        assert_allclose(grads_w[name], grads_d[name], rtol=1e-10, atol=1e-14)
    # A zero weight removes the sample.
    loss_z, _ = loss_and_grad(weights, X, y, sample_weight=[0.0, 1.0, 1.0], **options)
    loss_r, _ = loss_and_grad(weights, X[1:], y[1:], **options)
    assert loss_z == pytest.approx(loss_r, rel=1e-12)


def test_fit_with_integer_weights_equals_fit_on_repeated_samples():
    # One full batch per epoch (all samples) and no shuffling: the updates
    # depend on the weighted loss only, and the L2 term's divisor is the sum
    # of the weights, i.e. the repeated batch's size. SGD, whose update is
    # linear in the gradient, so rounding differences stay rounding.
    X, y = _easy(n=30, n_outputs=2)
    sw = np.tile([1, 2, 3], 10)
    rows = np.repeat(np.arange(30), sw)
    params = dict(FAST, max_iter=3, shuffle=False, solver="sgd", learning_rate_init=0.05,
                  dtype="float64")
    weighted = RNNRegressor(**params, batch_size=30).fit(X, y, sample_weight=sw)
    repeated = RNNRegressor(**params, batch_size=len(rows)).fit(X[rows], y[rows])
    for name in weighted.weights_:
        assert_allclose(weighted.weights_[name], repeated.weights_[name], rtol=1e-9,
                        atol=1e-12, err_msg=name)
    assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-10)
    unweighted = RNNRegressor(**params, batch_size=30).fit(X, y)
    assert not np.allclose(unweighted.weights_["weight_out"],
                           weighted.weights_["weight_out"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_not_modified(dtype):
    X, y = _easy(n=40, dtype=dtype, n_outputs=2)
    X_list, _ = _ragged(n=40)
    X_list = [s.astype(dtype) for s in X_list]
    sw = np.linspace(0.5, 2.0, 40)
    for data in [X, np.asfortranarray(X), X_list, X[:, :, 0]]:
        for target in [y, y[:, :1], np.asfortranarray(y)]:
            before_X = [s.copy() for s in data] if isinstance(data, list) else data.copy()
            before_y, before_sw = target.copy(), sw.copy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataConversionWarning)
                reg = RNNRegressor(**FAST).fit(data, target, sample_weight=sw)
                reg.predict(data)
                reg.score(data, target)
                reg.partial_fit(data, target, sample_weight=sw)
            if isinstance(data, list):
                assert all(np.array_equal(a, b) and a.dtype == b.dtype
                           for a, b in zip(data, before_X))
            else:
                assert_array_equal(data, before_X)
                assert data.dtype == before_X.dtype
            assert_array_equal(target, before_y)
            assert target.dtype == before_y.dtype
            assert_array_equal(sw, before_sw)


# -- bad input -------------------------------------------------------------------
_rng = np.random.default_rng(0)
N, T, D = 20, 5, 2
X3 = _rng.normal(size=(N, T, D))
Y1 = _rng.normal(size=N)
Y2 = _rng.normal(size=(N, 2))
RAGGED = [_rng.normal(size=(t, D)) for t in _rng.integers(1, 8, size=N)]


def _reg(**params):
    return RNNRegressor(**{"cell": "rnn", "hidden_layer_sizes": 4, "max_iter": 2,
                           "random_state": 0, **params})


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _reg().fit(X3, Y2)


def _snapshot(value):
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    return np.array(value, copy=True)


def _assert_unchanged(value, before):
    if isinstance(value, (list, tuple)):
        assert len(value) == len(before)
        for v, b in zip(value, before):
            _assert_unchanged(v, b)
    else:
        assert_array_equal(value, before)  # NaN == NaN here
        assert np.asarray(value).dtype == before.dtype


def _raises_unchanged(exc, match, func, *args, **kwargs):
    """func(*args, **kwargs) raises exc matching `match`; the args are unchanged,
    and an estimator that was not fitted before is not fitted after."""
    before_args = [_snapshot(a) for a in args]
    before_kwargs = {k: _snapshot(v) for k, v in kwargs.items() if v is not None}
    owner = getattr(func, "__self__", None)
    was_fitted = hasattr(owner, "weights_")
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)
    for a, b in zip(args, before_args):
        _assert_unchanged(a, b)
    for k, b in before_kwargs.items():
        _assert_unchanged(kwargs[k], b)
    if owner is not None and not was_fitted:
        assert not hasattr(owner, "weights_") and not hasattr(owner, "n_outputs_")


@pytest.mark.parametrize("value, words", [(np.nan, "Input y contains NaN"),
                                          (np.inf, "Input y contains infinity"),
                                          (-np.inf, "Input y contains infinity")])
@pytest.mark.parametrize("y", [Y1, Y2], ids=["1d", "2d"])
def test_non_finite_y(fitted, y, value, words):
    bad = y.copy()
    bad[(3,) if y.ndim == 1 else (3, 1)] = value
    _raises_unchanged(ValueError, words, _reg().fit, X3, bad)
    _raises_unchanged(ValueError, words, _reg().partial_fit, X3, bad)
    # score: scikit-learn's r2_score checks y, with its own words.
    _raises_unchanged(ValueError, words.replace("y ", ""), fitted.score, X3, bad)


@pytest.mark.parametrize("X", [X3, RAGGED], ids=["array", "list"])
def test_y_of_the_wrong_length(X):
    words = f"X has {N} sequences but y has {N - 1} targets"
    _raises_unchanged(ValueError, words, _reg().fit, X, Y1[:-1])
    _raises_unchanged(ValueError, words, _reg().fit, X, Y2[:-1])
    _raises_unchanged(ValueError, words, _reg().partial_fit, X, Y1[:-1])


def test_y_with_three_dimensions():
    words = r"y must have shape \(n_samples,\) or \(n_samples, n_outputs\); got 3 dim"
    _raises_unchanged(ValueError, words, _reg().fit, X3, Y2[:, :, np.newaxis])
    _raises_unchanged(ValueError, words, _reg().partial_fit, X3, Y2[:, :, np.newaxis])


def test_y_none():
    _raises_unchanged(ValueError, "RNNRegressor requires y to be passed, but the target "
                      "y is None", _reg().fit, X3, None)


def test_y_with_zero_outputs():
    _raises_unchanged(ValueError, r"Found array with 0 feature\(s\) \(shape=\(20, 0\)\)",
                      _reg().fit, X3, np.zeros((N, 0)))


def test_string_y():
    words = "dtype='numeric' is not compatible with arrays of bytes/strings"
    _raises_unchanged(ValueError, words, _reg().fit, X3, np.array(["1.5", "2"] * (N // 2)))
    _raises_unchanged(ValueError, words, _reg().fit, X3, ["a"] * N)


def test_y_too_large_for_float32():
    y = np.full(N, 1e39)  # finite in float64, infinite in float32
    words = (r"y has values too large for float32, the precision the network "
             r"trains in\. .*or set dtype='float64'")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the error, not "overflow"
        # float64 X trains in float32 too, by default.
        for X in [X3, X3.astype(np.float32)]:
            _raises_unchanged(ValueError, words, _reg().fit, X, y)
    _raises_unchanged(ValueError, words, _reg().partial_fit,
                      [s.astype(np.float32) for s in RAGGED], y)
    # The same y is fine in float64, whatever X's dtype.
    for X in [X3, X3.astype(np.float32)]:
        assert np.all(np.isfinite(_reg(dtype="float64").fit(X, y).predict(X)))


def test_x_too_large_for_float32():
    X = X3.copy()
    X[4, 2, 1] = 1e39  # finite in float64, infinite in float32
    words = (r"X has values too large for float32, the precision the network "
             r"computes in .*or set dtype='float64'")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _raises_unchanged(ValueError, words, _reg().fit, X, Y1)
        _raises_unchanged(ValueError, words, _reg().partial_fit, list(X), Y1)
        fitted = _reg().fit(X3, Y1)
        _raises_unchanged(ValueError, words, fitted.predict, X)
    # In float64 the same X trains and predicts.
    reg = _reg(dtype="float64").fit(X, Y1)
    assert np.all(np.isfinite(reg.predict(X)))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_bptt_truncate_with_a_pooled_head(pooling):
    words = (f"bptt_truncate cannot be combined with pooling='{pooling}'.*Use "
             "bptt_truncate=None or pooling='last'")
    _raises_unchanged(ValueError, words, _reg(pooling=pooling, bptt_truncate=3).fit, X3, Y1)
    _raises_unchanged(ValueError, words,
                      _reg(pooling=pooling, bptt_truncate=3).partial_fit, X3, Y2)
    # loss_and_grad names its own parameter.
    weights = _reg(pooling=pooling).fit(X3, Y1).weights_
    _raises_unchanged(ValueError,
                      f"bptt_truncate cannot be combined with output='{pooling}'",
                      loss_and_grad, weights, X3, Y1, output=pooling,
                      loss="squared_error", bptt_truncate=3)
    # With the last-state head it trains; the default head is pooled.
    _reg(pooling="last", bptt_truncate=3).fit(X3, Y1)
    _raises_unchanged(ValueError, "bptt_truncate cannot be combined with pooling='max'",
                      _reg(bptt_truncate=3).fit, X3, Y1)


def test_predict_and_score_before_fit():
    for method, args in [("predict", (X3,)), ("score", (X3, Y1))]:
        _raises_unchanged(NotFittedError, "This RNNRegressor instance is not fitted yet",
                          getattr(_reg(), method), *args)


def test_feature_count_at_predict_differs_from_fit(fitted):
    words = "X has 3 features, but RNNRegressor is expecting 2 features"
    _raises_unchanged(ValueError, words, fitted.predict, np.zeros((4, T, 3)))
    _raises_unchanged(ValueError, words, fitted.predict, [np.zeros((2, 3))] * 3)
    _raises_unchanged(ValueError, "X has 1 features, but RNNRegressor is expecting 2",
                      fitted.predict, np.zeros((4, T)))
    reg = copy.deepcopy(fitted)
    _raises_unchanged(ValueError, words, reg.partial_fit, np.zeros((N, T, 3)), Y2)
    assert reg.n_iter_ == fitted.n_iter_


def test_bad_sample_weight():
    _raises_unchanged(ValueError, r"sample_weight.shape == \(3,\), expected \(20,\)",
                      _reg().fit, X3, Y1, sample_weight=np.ones(3))
    _raises_unchanged(ValueError, "Negative values in data passed to `sample_weight`",
                      _reg().fit, X3, Y1, sample_weight=-np.ones(N))
    # (Recent scikit-learn says so itself, before cbptt's own check.)
    _raises_unchanged(ValueError, "Sample weights must contain at least one non-zero "
                      "number|sample_weight must have a positive sum",
                      _reg().fit, X3, Y1, sample_weight=np.zeros(N))
