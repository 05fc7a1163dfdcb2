"""Behaviour of cbptt.RNNClassifier as a scikit-learn classifier over sequences.

The headline: it learns scikit-learn's digits read as 8 rows of 8 pixels (8
time steps) with its default parameters. The rest checks the contract users
rely on: Pipelines, grid search, pickling, determinism, ragged and univariate
input, labels of any type, the training precision, fitted attributes, the
training options (schedules, early stopping, warm starts, class weights,
downsampling), that inputs are never modified, and bit-identical results for
any number of threads. Everything except the digits test runs on tiny data in
well under a second each.
"""

import contextlib
import io
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler
from sklearn.utils.validation import check_is_fitted

from cbptt import RNNClassifier, loss_and_grad
from cbptt._base import AUTO_KEPT, auto_patience, variance_kept
from cbptt._sequences import check_sequences

WEIGHT_NAMES = (
    "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_out", "bias_out",
)

# Tiny, fast models for everything but the digits test.
FAST = dict(cell="rnn", hidden_layer_sizes=(8,), max_iter=5, random_state=0)
# What the tests that compare a fit with an exact float64 computation
# (loss_and_grad, a NumPy optimizer step, an identity of updates) assume:
# double precision, and the last-state head that loss_and_grad reads.
EXACT = dict(dtype="float64", pooling="last")
# The digits subset is learned in 5 epochs with these settings (the score
# thresholds below were set with them); minibatches of 64 keep it fast.
DIGITS_FAST = dict(FAST, pooling="last", learning_rate="constant",
                   learning_rate_init=0.01, batch_size=64)


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    # Short max_iter is on purpose here; tests that want the warning use
    # pytest.warns, which overrides this filter.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _easy(n=60, T=5, D=2, seed=0, dtype=np.float64):
    """Class = sign of the mean of feature 0: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D)).astype(dtype)
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    return X, y


def _ragged(n=40, D=2, seed=0, min_len=2, max_len=9):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    X = [rng.normal(size=(t, D)) for t in lengths]
    y = np.array([int(x[:, 0].sum() > 0) for x in X])
    return X, y


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def _to_sequences(X):
    """(n, 64) digit images -> (n, 8, 8) sequences of pixel rows in [0, 1]."""
    return np.asarray(X).reshape(-1, 8, 8) / 16.0


# -- the headline ------------------------------------------------------------
@pytest.mark.parametrize("params", [{}, {"cell": "lstm"}], ids=["defaults", "lstm"])
def test_learns_digits_with_default_parameters(digits, params):
    # The Elman cell reaches 0.951 here too (docs, "Choosing a cell"): too
    # close to the bar for a test that must not depend on BLAS rounding.
    X, y = digits
    X = _to_sequences(X)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    clf = RNNClassifier(random_state=0, **params).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95


# -- scikit-learn integration ---------------------------------------------------
def _digits_subset(digits, n=300):
    X, y = digits
    return X[:n], y[:n]


def _digits_pipeline(**params):
    # Scale pixels to [0, 1], then each image becomes 8 steps of 8 pixels.
    # (np.reshape, not a test-module function: joblib workers must unpickle it.)
    return make_pipeline(
        MinMaxScaler(),
        FunctionTransformer(np.reshape, kw_args={"shape": (-1, 8, 8)}),
        RNNClassifier(**{**DIGITS_FAST, **params}),
    )


def test_pipeline_equals_manual_steps(digits):
    X, y = _digits_subset(digits)
    pipe = _digits_pipeline().fit(X, y)
    X_seq = MinMaxScaler().fit_transform(X).reshape(-1, 8, 8)
    manual = RNNClassifier(**DIGITS_FAST).fit(X_seq, y)
    assert_array_equal(pipe.predict(X), manual.predict(X_seq))
    assert_array_equal(pipe.predict_proba(X), manual.predict_proba(X_seq))
    assert pipe.score(X, y) > 0.5


def test_grid_search_in_parallel_matches_cross_val_score(digits):
    X, y = _digits_subset(digits)
    pipe = _digits_pipeline()
    grid = GridSearchCV(
        pipe, {"rnnclassifier__hidden_layer_sizes": [(4,), (8,)]}, cv=3, n_jobs=2
    ).fit(X, y)
    assert grid.best_params_["rnnclassifier__hidden_layer_sizes"] in [(4,), (8,)]
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_score_ > 0.3  # 10 classes: chance is 0.1
    # Worker processes (fewer threads each) give the same numbers as in-process.
    scores = cross_val_score(pipe, X, y, cv=3)
    index = grid.cv_results_["params"].index({"rnnclassifier__hidden_layer_sizes": (8,)})
    assert grid.cv_results_["mean_test_score"][index] == pytest.approx(scores.mean(),
                                                                       abs=1e-12)


def test_pickle_round_trip():
    X, y = _easy()
    clf = RNNClassifier(**FAST).fit(X, y)
    clf2 = pickle.loads(pickle.dumps(clf))
    assert_array_equal(clf2.predict_proba(X), clf.predict_proba(X))
    assert _weights_equal(clf2.weights_, clf.weights_)


def test_clone_is_unfitted_with_equal_params():
    X, y = _easy()
    clf = RNNClassifier(**FAST, solver="sgd", clip_norm=None).fit(X, y)
    cloned = clone(clf)
    assert cloned.get_params() == clf.get_params()
    assert not hasattr(cloned, "weights_")
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)
    with pytest.raises(NotFittedError):
        cloned.predict(X)


# -- determinism ---------------------------------------------------------------
def test_same_random_state_same_model():
    X, y = _easy()
    a = RNNClassifier(**FAST).fit(X, y)
    b = RNNClassifier(**FAST).fit(X, y)
    assert _weights_equal(a.weights_, b.weights_)
    assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ == b.loss_curve_


def test_different_random_state_different_model():
    X, y = _easy()
    a = RNNClassifier(**{**FAST, "random_state": 0}).fit(X, y)
    b = RNNClassifier(**{**FAST, "random_state": 1}).fit(X, y)
    for name in WEIGHT_NAMES:
        if name.startswith("weight"):
            assert not np.array_equal(a.weights_[name], b.weights_[name]), name


@pytest.mark.parametrize("n_threads", [2, None])
def test_thread_count_does_not_change_the_result(n_threads):
    # 150 samples, batches of 96 rows: several 32-row chunks per minibatch,
    # plus a short last batch.
    X, y = _easy(n=150, T=4)
    params = dict(FAST, batch_size=96, max_iter=3)
    one = RNNClassifier(**params, n_threads=1).fit(X, y)
    many = RNNClassifier(**params, n_threads=n_threads).fit(X, y)
    assert _weights_equal(one.weights_, many.weights_)
    assert_array_equal(one.predict_proba(X), many.predict_proba(X))


# -- input forms -----------------------------------------------------------------
def test_ragged_list_trains_and_predicts():
    X, y = _ragged()
    clf = RNNClassifier(**FAST).fit(X, y)
    assert clf.n_features_in_ == 2
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert np.all(np.isfinite(proba))
    # Sequences longer and shorter than any seen at fit are fine.
    rng = np.random.default_rng(1)
    others = [rng.normal(size=(1, 2)), rng.normal(size=(30, 2)), rng.normal(size=(5, 2))]
    assert clf.predict(others).shape == (3,)
    assert clf.predict_proba(rng.normal(size=(4, 25, 2))).shape == (4, 2)


def test_ragged_prediction_equals_one_by_one():
    X, y = _ragged()
    clf = RNNClassifier(**FAST).fit(X, y)
    together = clf.predict_proba(X)
    alone = np.vstack([clf.predict_proba(seq[np.newaxis]) for seq in X])
    assert_allclose(together, alone, rtol=1e-12, atol=1e-15)
    assert_array_equal(clf.predict(X), np.concatenate([clf.predict([s]) for s in X]))


def test_zero_padded_array_is_not_a_ragged_list():
    # In a 3-D array every step counts, zeros included; a list carries lengths.
    X, y = _ragged(min_len=2, max_len=6)
    clf = RNNClassifier(**FAST).fit(X, y)
    padded = np.zeros((len(X), max(len(s) for s in X), 2))
    for i, seq in enumerate(X):
        padded[i, : len(seq)] = seq
    assert not np.allclose(clf.predict_proba(padded), clf.predict_proba(X))
    full = [i for i, seq in enumerate(X) if len(seq) == padded.shape[1]]
    assert full  # sequences without padding agree
    assert_allclose(clf.predict_proba(padded)[full], clf.predict_proba(X)[full],
                    rtol=1e-12)


def test_2d_input_is_univariate_sequences():
    X, y = _easy(D=1)
    X2 = X[:, :, 0]
    a = RNNClassifier(**FAST).fit(X2, y)
    b = RNNClassifier(**FAST).fit(X2[:, :, np.newaxis], y)
    assert a.n_features_in_ == 1
    assert _weights_equal(a.weights_, b.weights_)
    assert_array_equal(a.predict_proba(X2), b.predict_proba(X2[:, :, np.newaxis]))
    assert_array_equal(a.predict(X2), b.predict(X2))
    # A list of 1-D arrays is univariate too.
    assert_array_equal(a.predict(list(X2)), a.predict(X2))


def test_string_labels():
    X, _ = _easy(n=60)
    labels = np.array(["cat", "dog", "bird"])
    y = labels[np.arange(60) % 3]
    clf = RNNClassifier(**FAST).fit(X, y)
    assert_array_equal(clf.classes_, ["bird", "cat", "dog"])
    pred = clf.predict(X)
    assert set(pred) <= set(labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-10, atol=1e-12)
    assert_array_equal(pred, clf.classes_[np.argmax(proba, axis=1)])


@pytest.mark.parametrize("X_dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_parameter_decides_the_precision_whatever_the_data(dtype, X_dtype):
    # The network trains in `dtype` (float32 by default) whatever X holds: a
    # fit equals the fit on X cast to that dtype first. Predictions come back
    # in X's floating dtype (float64 for integers), as scikit-learn's do.
    X, y = _easy()
    X = np.round(X * 3).astype(X_dtype)
    params = FAST if dtype == "float32" else dict(FAST, dtype=dtype)
    clf = RNNClassifier(**params).fit(X, y)
    for name in WEIGHT_NAMES:
        assert clf.weights_[name].dtype == dtype, name
    assert clf._optimizer.state_a.dtype == dtype
    cast = RNNClassifier(**params).fit(X.astype(dtype), y)
    assert _weights_equal(clf.weights_, cast.weights_)
    predicted = np.float32 if X_dtype == np.float32 else np.float64
    for method in ("predict_proba", "predict_log_proba"):
        output = getattr(clf, method)(X)
        assert output.dtype == predicted, method
        assert np.all(np.isfinite(output)), method
    exact = dtype == "float64" and predicted == np.float64
    assert_allclose(clf.predict_proba(X), cast.predict_proba(X.astype(dtype)),
                    rtol=1e-12 if exact else 1e-5)
    assert_array_equal(clf.predict(X), cast.predict(X.astype(dtype)))


def test_default_dtype_is_float32():
    assert RNNClassifier().dtype == "float32"
    X, y = _easy()
    clf = RNNClassifier(**FAST).fit(X, y)  # float64 data
    assert all(w.dtype == np.float32 for w in clf.weights_.values())
    assert clf.predict_proba(X).dtype == np.float64


# -- fitted attributes and reporting ---------------------------------------------
@pytest.mark.parametrize("cell, n_gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_fitted_attributes(cell, n_gates):
    X, y = _easy(n=60, T=5, D=3)
    y = np.arange(60) % 3
    clf = RNNClassifier(cell=cell, hidden_layer_sizes=7, max_iter=4,
                        random_state=0).fit(X, y)
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.n_features_in_ == 3 and isinstance(clf.n_features_in_, int)
    H, D, C, G = 7, 3, 3, n_gates
    expected = {
        "weight_ih_l0": (G * H, D), "weight_hh_l0": (G * H, H), "bias_ih_l0": (G * H,),
        "bias_hh_l0": (G * H,), "weight_out": (C, H), "bias_out": (C,),
    }
    assert isinstance(clf.weights_, dict)
    assert {k: v.shape for k, v in clf.weights_.items()} == expected
    assert all(isinstance(v, np.ndarray) for v in clf.weights_.values())
    assert clf.n_iter_ == 4 and isinstance(clf.n_iter_, int)
    assert isinstance(clf.loss_curve_, list) and len(clf.loss_curve_) == clf.n_iter_
    assert isinstance(clf.loss_, float) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None
    assert clf.best_validation_score_ is None
    assert clf.t_ == clf.n_iter_ * len(X)
    assert clf.downsample_ == 1  # 5 steps: "auto" averages nothing
    assert all(w.dtype == np.float32 for w in clf.weights_.values())
    # The weights are the model: loss_and_grad on them, in the precision they
    # were trained in, with the head the estimator reads, agrees with
    # predict_proba.
    loss, _ = loss_and_grad(clf.weights_, X.astype(np.float32), y, cell=cell,
                            output=clf.pooling)
    proba = clf.predict_proba(X)
    assert loss == pytest.approx(-np.mean(np.log(proba[np.arange(60), y])), rel=1e-5)


def test_convergence_warning_when_max_iter_is_hit():
    X, y = _easy()
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        RNNClassifier(**{**FAST, "max_iter": 2}).fit(X, y)


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _easy()
    clf = RNNClassifier(**{**FAST, "max_iter": 3}, verbose=True).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == clf.n_iter_ == 3
    assert all("loss" in line for line in lines)


def test_early_stopping_attributes():
    X, y = _easy(n=80)
    clf = RNNClassifier(**{**FAST, "max_iter": 6}, early_stopping=True,
                        validation_fraction=0.25).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert all(0.0 <= s <= 1.0 for s in clf.validation_scores_)
    assert clf.best_loss_ is None
    assert len(clf.loss_curve_) == clf.n_iter_


def test_early_stopping_stops_before_max_iter():
    # 0.25 of 80 samples: 20 validation samples, the fewest it accepts.
    X, y = _easy(n=80)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf = RNNClassifier(hidden_layer_sizes=(8,), random_state=0, early_stopping=True,
                            validation_fraction=0.25, n_iter_no_change=2,
                            max_iter=200).fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == clf.n_iter_


def test_early_stopping_on_a_small_validation_split_warns_and_trains_on_all():
    # 0.1 of 80 samples would be 8 validation samples: too few for their
    # score to tell progress from noise. The fit says so and is the fit
    # without early stopping, on all 80 samples.
    X, y = _easy(n=80)
    clf = RNNClassifier(**FAST, early_stopping=True, validation_fraction=0.1)
    with pytest.warns(UserWarning, match=r"validation_fraction=0.1 of 80 samples is 8 "
                      r"validation samples, too few to tell progress from noise \(at "
                      r"least 20 are needed\); training on all 80 samples without "
                      r"early stopping"):
        clf.fit(X, y)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.n_iter_ == FAST["max_iter"] and clf.t_ == clf.n_iter_ * 80
    plain = RNNClassifier(**FAST).fit(X, y)
    assert _weights_equal(clf.weights_, plain.weights_)
    assert clf.loss_curve_ == plain.loss_curve_


# -- training options ------------------------------------------------------------
def test_partial_fit():
    X, y = _easy()
    clf = RNNClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1])
    assert clf.n_iter_ == 1
    for expected in range(2, 6):
        clf.partial_fit(X, y)
        assert clf.n_iter_ == expected
    assert len(clf.loss_curve_) == 5
    assert clf.t_ == 5 * len(X)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X, np.where(y == 1, 7, 0))
    assert clf.n_iter_ == 5  # the failed call trained nothing


def test_partial_fit_classes_may_be_absent_from_a_batch():
    X, y = _easy()
    clf = RNNClassifier(**FAST).partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict_proba(X).shape == (len(X), 3)


def test_warm_start_continues_from_previous_weights():
    X, y = _easy()
    clf = RNNClassifier(**{**FAST, "max_iter": 3}, warm_start=True).fit(X, y)
    first = {k: v.copy() for k, v in clf.weights_.items()}
    curve = list(clf.loss_curve_)
    clf.set_params(max_iter=1)
    clf.fit(X, y)
    assert clf.n_iter_ == 4
    assert clf.loss_curve_[:3] == curve and len(clf.loss_curve_) == 4
    assert not _weights_equal(clf.weights_, first)
    fresh = RNNClassifier(**{**FAST, "max_iter": 1}).fit(X, y)
    assert not _weights_equal(clf.weights_, fresh.weights_)
    # One more epoch from the first fit's weights: closer to them than a fresh start.
    dist = lambda a, b: sum(np.sum((a[k] - b[k]) ** 2) for k in a)  # noqa: E731
    assert dist(clf.weights_, first) < dist(fresh.weights_, first)


def test_warm_start_false_restarts():
    X, y = _easy()
    clf = RNNClassifier(**FAST).fit(X, y)
    clf.fit(X, y)
    assert clf.n_iter_ == FAST["max_iter"]
    assert _weights_equal(clf.weights_, RNNClassifier(**FAST).fit(X, y).weights_)


def test_warm_start_may_switch_early_stopping_on():
    X, y = _easy(n=80)
    clf = RNNClassifier(**FAST, warm_start=True).fit(X, y)
    clf.set_params(early_stopping=True, validation_fraction=0.25, max_iter=3)
    clf.fit(X, y)
    assert clf.n_iter_ == FAST["max_iter"] + 3
    assert len(clf.loss_curve_) == clf.n_iter_
    assert len(clf.validation_scores_) == 3  # scored from the switch on
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_warm_start_with_early_stopping_keeps_the_previous_best_weights():
    # A warm-started fit under early stopping replaces the weights only with
    # those of an epoch that beats the weights it started from (the previous
    # fit's best), both scored on this fit's validation split.
    X, y = _easy(n=80)
    clf = RNNClassifier(**dict(FAST, cell="gru", max_iter=15), early_stopping=True,
                        validation_fraction=0.25, warm_start=True).fit(X, y)
    best = {k: v.copy() for k, v in clf.weights_.items()}
    best_score, n_iter = clf.best_validation_score_, clf.n_iter_
    # A learning rate far too large: three epochs that all score worse.
    clf.set_params(learning_rate_init=1.0, max_iter=3)
    clf.fit(X, y)
    assert clf.n_iter_ == n_iter + 3 and len(clf.validation_scores_) == n_iter + 3
    assert max(clf.validation_scores_[n_iter:]) < clf.best_validation_score_
    assert clf.best_validation_score_ >= best_score - 0.25  # another split
    assert _weights_equal(clf.weights_, best)


def test_weights_assigned_by_hand_predict_and_train_further():
    # A model trained elsewhere: weights_, classes_ and n_features_in_ set on
    # an unfitted estimator, which has no training history.
    X, y = _easy()
    donor = RNNClassifier(**FAST).fit(X, y)

    def by_hand(**params):
        clf = RNNClassifier(**{**FAST, **params})
        clf.weights_ = {k: v.copy() for k, v in donor.weights_.items()}
        clf.classes_ = donor.classes_.copy()
        clf.n_features_in_ = donor.n_features_in_
        return clf

    clf = by_hand()
    assert_array_equal(clf.predict_proba(X), donor.predict_proba(X))
    assert_array_equal(clf.predict(X), donor.predict(X))
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 1 and clf.t_ == len(X)
    warm = by_hand(warm_start=True, max_iter=1).fit(X, y)
    assert warm.n_iter_ == 1 and len(warm.loss_curve_) == 1
    # Both took one epoch from the assigned weights with a fresh optimizer.
    assert _weights_equal(warm.weights_, clf.weights_)
    assert not _weights_equal(clf.weights_, donor.weights_)
    fresh = RNNClassifier(**{**FAST, "max_iter": 1}).fit(X, y)
    dist = lambda a, b: sum(np.sum((a[k] - b[k]) ** 2) for k in a)  # noqa: E731
    assert dist(clf.weights_, donor.weights_) < dist(fresh.weights_, donor.weights_)


def test_sample_weight_equals_duplication_in_the_loss():
    rng = np.random.default_rng(0)
    H, D, C = 4, 3, 2
    weights = {
        "weight_ih_l0": rng.normal(size=(H, D)), "weight_hh_l0": rng.normal(size=(H, H)) / 2,
        "bias_ih_l0": rng.normal(size=H), "bias_hh_l0": rng.normal(size=H),
        "weight_out": rng.normal(size=(C, H)), "bias_out": rng.normal(size=C),
    }
    X = rng.normal(size=(3, 5, D))
    y = np.array([0, 1, 1])
    loss_w, grads_w = loss_and_grad(weights, X, y, sample_weight=[2.0, 1.0, 1.0])
    loss_d, grads_d = loss_and_grad(weights, X[[0, 0, 1, 2]], y[[0, 0, 1, 2]])
    assert loss_w == pytest.approx(loss_d, rel=1e-12)
    for name in weights:
        assert_allclose(grads_w[name], grads_d[name], rtol=1e-10, atol=1e-14)
    # A zero weight removes the sample.
    loss_z, grads_z = loss_and_grad(weights, X, y, sample_weight=[0.0, 1.0, 1.0])
    loss_r, grads_r = loss_and_grad(weights, X[1:], y[1:])
    assert loss_z == pytest.approx(loss_r, rel=1e-12)
    for name in weights:
        assert_allclose(grads_z[name], grads_r[name], rtol=1e-10, atol=1e-14)


def test_fit_with_zero_weights_equals_fit_without_those_samples():
    # Full batches (30 samples, and the 20 that weigh) and no shuffling: the
    # updates depend on the weighted loss only; float64 to see it to 1e-9.
    X, y = _easy(n=30)
    sw = np.ones(30)
    sw[::3] = 0.0
    params = dict(FAST, shuffle=False, dtype="float64")
    weighted = RNNClassifier(**params, batch_size=30).fit(X, y, sample_weight=sw)
    removed = RNNClassifier(**params, batch_size=20).fit(X[sw > 0], y[sw > 0])
    for name in WEIGHT_NAMES:
        assert_allclose(weighted.weights_[name], removed.weights_[name], rtol=1e-9,
                        atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "params",
    [
        dict(solver="adam"),
        dict(solver="sgd", nesterovs_momentum=True),
        dict(solver="sgd", nesterovs_momentum=False),
        dict(solver="sgd", momentum=0.0),
        dict(solver="rmsprop", learning_rate_init=0.003),
        dict(solver="sgd", learning_rate="constant"),
        dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5),
        dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=1, tol=10.0),
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_solvers_and_schedules_reduce_the_loss(params):
    X, y = _easy()
    params = {"learning_rate_init": 0.05, **params}
    clf = RNNClassifier(**{**FAST, "max_iter": 8}, **params).fit(X, y)
    assert np.all(np.isfinite(clf.loss_curve_))
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop"])
def test_adaptive_schedule_lowers_the_rate_instead_of_stopping(solver):
    # tol so large that every epoch but the first counts as "no
    # improvement": with n_iter_no_change=1 the rate is divided by 5 after
    # epochs 3 and 5 of 6. Every solver follows the schedule.
    X, y = _easy()
    params = dict(FAST, max_iter=6, solver=solver, learning_rate_init=0.01,
                  n_iter_no_change=1, tol=10.0)
    clf = RNNClassifier(**params, learning_rate="adaptive").fit(X, y)
    assert clf.n_iter_ == 6
    assert clf._optimizer.learning_rate == pytest.approx(0.01 / 25, rel=1e-12)
    const = RNNClassifier(**params, learning_rate="constant").fit(X, y)
    assert const.n_iter_ == 3  # the constant schedule stops instead
    assert const._optimizer.learning_rate == 0.01


@pytest.mark.parametrize(
    "params, steps_per_epoch, patience",
    [
        (dict(batch_size=20), 3, 67),                  # ceil(200 / 3) epochs
        (dict(batch_size=3), 20, 10),                  # 10 epochs of 20 steps
        (dict(batch_size=2), 30, 10),                  # no fewer than 10
        (dict(batch_size=20, n_iter_no_change=4), 3, 4),   # an int is epochs
    ],
)
def test_auto_patience_counts_optimizer_steps(params, steps_per_epoch, patience):
    # tol so large that no epoch after the first improves: a constant rate
    # stops when patience + 1 of them have not, and the verbose message
    # names the patience.
    X, y = _easy(n=60, T=8)
    clf = RNNClassifier(**{**FAST, "max_iter": 500}, learning_rate="constant", tol=10.0,
                        verbose=True, **params)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        clf.fit(X, y)
    assert clf._optimizer.t == steps_per_epoch * clf.n_iter_
    assert clf.n_iter_ == patience + 2
    assert f"for {patience} consecutive epochs. Stopping." in out.getvalue()


def test_auto_patience_is_10_epochs_or_200_steps():
    assert [auto_patience(s) for s in (1, 3, 19, 20, 21, 1000)] == [200, 67, 11, 10, 10, 10]


@pytest.mark.parametrize("solver", ["adam", "rmsprop"])
def test_invscaling_schedule_applies_to_adaptive_solvers(solver):
    # learning_rate_init / (n_samples_seen + 1) ** power_t, set after each
    # epoch: the second epoch of two steps with a smaller rate.
    X, y = _easy()
    params = dict(FAST, max_iter=2, solver=solver, learning_rate_init=0.01, power_t=0.25)
    clf = RNNClassifier(**params, learning_rate="invscaling").fit(X, y)
    assert clf._optimizer.learning_rate == pytest.approx(
        0.01 * (2 * len(X) + 1) ** -0.25, rel=1e-12)
    const = RNNClassifier(**params, learning_rate="constant").fit(X, y)
    assert not _weights_equal(clf.weights_, const.weights_)
    # The first epoch ran at learning_rate_init under both schedules.
    one = [RNNClassifier(**dict(params, max_iter=1), learning_rate=schedule).fit(X, y)
           for schedule in ("invscaling", "constant")]
    assert _weights_equal(one[0].weights_, one[1].weights_)


def test_clip_norm_bounds_each_update():
    # SGD without momentum or L2, one full batch: an epoch moves the weights
    # by -lr * clip(grad). Two learning rates differ by exactly one clipped
    # gradient, whose norm is clip_norm (in float64, to see it to 1e-6).
    X, y = _easy(n=30)
    params = dict(FAST, max_iter=1, solver="sgd", momentum=0.0, alpha=0.0,
                  clip_norm=1e-3, batch_size=30, dtype="float64")
    a = RNNClassifier(**params, learning_rate_init=1.0).fit(X, y)
    b = RNNClassifier(**params, learning_rate_init=2.0).fit(X, y)
    diff = np.concatenate([(a.weights_[k] - b.weights_[k]).ravel() for k in WEIGHT_NAMES])
    assert np.linalg.norm(diff) == pytest.approx(1e-3, rel=1e-6)
    unclipped = RNNClassifier(**{**params, "clip_norm": None}).fit(X, y)
    assert not _weights_equal(unclipped.weights_, a.weights_)


def test_tiny_clip_norm_still_trains():
    X, y = _easy()
    one = RNNClassifier(**{**FAST, "max_iter": 1}, clip_norm=1e-6).fit(X, y)
    two = RNNClassifier(**{**FAST, "max_iter": 2}, clip_norm=1e-6).fit(X, y)
    assert not _weights_equal(one.weights_, two.weights_)
    assert all(np.all(np.isfinite(v)) for v in two.weights_.values())


def test_truncated_bptt_differs_from_full():
    # Truncation applies to the last-state head (pooled heads refuse it).
    X, y = _easy(T=6)
    params = dict(FAST, pooling="last")
    full = RNNClassifier(**params).fit(X, y)
    truncated = RNNClassifier(**params, bptt_truncate=1).fit(X, y)
    assert not _weights_equal(full.weights_, truncated.weights_)
    # Truncation longer than the sequences is full BPTT.
    long = RNNClassifier(**params, bptt_truncate=100).fit(X, y)
    assert _weights_equal(full.weights_, long.weights_)


def test_relu_fits():
    X, y = _easy()
    clf = RNNClassifier(**{**FAST, "max_iter": 8}, nonlinearity="relu").fit(X, y)
    assert all(np.all(np.isfinite(v)) for v in clf.weights_.values())
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    tanh = RNNClassifier(**{**FAST, "max_iter": 8}).fit(X, y)
    assert not _weights_equal(clf.weights_, tanh.weights_)


# -- class weights -------------------------------------------------------------------
def _imbalanced(n=60):
    """Three classes of 36, 16 and 8 samples, labelled by strings."""
    X, _ = _easy(n=n)
    y = np.array(["a"] * 36 + ["b"] * 16 + ["c"] * 8)
    return X, y


def test_balanced_class_weight_is_its_sample_weight():
    # n_samples / (n_classes * count of the sample's class), by hand.
    X, y = _imbalanced()
    counts = {label: np.sum(y == label) for label in "abc"}
    by_hand = np.array([len(y) / (3 * counts[label]) for label in y])
    balanced = RNNClassifier(**FAST, class_weight="balanced").fit(X, y)
    weighted = RNNClassifier(**FAST).fit(X, y, sample_weight=by_hand)
    assert _weights_equal(balanced.weights_, weighted.weights_)
    assert balanced.loss_curve_ == weighted.loss_curve_
    unweighted = RNNClassifier(**FAST).fit(X, y)
    assert not _weights_equal(balanced.weights_, unweighted.weights_)


def test_class_weight_dict_multiplies_sample_weight():
    X, y = _imbalanced()
    class_weight = {"a": 0.5, "b": 2.0, "c": 3.0}
    per_sample = np.array([class_weight[label] for label in y])
    a = RNNClassifier(**FAST, class_weight=class_weight).fit(X, y)
    b = RNNClassifier(**FAST).fit(X, y, sample_weight=per_sample)
    assert _weights_equal(a.weights_, b.weights_)
    sw = np.linspace(0.5, 2.0, len(y))
    a = RNNClassifier(**FAST, class_weight=class_weight).fit(X, y, sample_weight=sw)
    b = RNNClassifier(**FAST).fit(X, y, sample_weight=sw * per_sample)
    assert _weights_equal(a.weights_, b.weights_)
    # partial_fit takes a dict too.
    a = RNNClassifier(**FAST, class_weight=class_weight).partial_fit(X, y, classes=list("abc"))
    b = RNNClassifier(**FAST).partial_fit(X, y, classes=list("abc"), sample_weight=per_sample)
    assert _weights_equal(a.weights_, b.weights_)


def test_partial_fit_refuses_balanced_class_weight():
    X, y = _imbalanced()
    clf = RNNClassifier(**FAST, class_weight="balanced")
    with pytest.raises(ValueError, match=r"class_weight='balanced' is not supported by "
                       r"partial_fit.*compute_class_weight\('balanced'"):
        clf.partial_fit(X, y, classes=list("abc"))
    assert not hasattr(clf, "weights_") and not hasattr(clf, "classes_")


def test_class_weight_naming_an_unknown_class():
    # "d" is not a class, and class "c" has no weight: a misspelt label.
    X, y = _imbalanced()
    clf = RNNClassifier(**FAST, class_weight={"a": 1.0, "b": 2.0, "d": 3.0})
    with pytest.raises(ValueError, match=r"The classes, \['c'\], are not in class_weight"):
        clf.fit(X, y)
    assert not hasattr(clf, "weights_")


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf])
def test_class_weight_must_be_finite_and_non_negative(weight):
    X, y = _imbalanced()
    clf = RNNClassifier(**FAST, class_weight={"a": weight, "b": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match="class_weight must give every class a finite, "
                       "non-negative weight"):
        clf.fit(X, y)
    assert not hasattr(clf, "weights_")


def test_balanced_class_weight_counts_samples_by_their_weight():
    # Integer sample weights are repeated samples, for the class frequencies
    # of "balanced" as for the loss.
    X, y = _imbalanced()
    repeats = np.where(y == "c", 3, 1)
    a = RNNClassifier(**FAST, class_weight="balanced").fit(X, y, sample_weight=repeats)
    counts = {label: np.sum(repeats[y == label]) for label in "abc"}
    by_hand = repeats * np.array([repeats.sum() / (3 * counts[label]) for label in y])
    b = RNNClassifier(**FAST).fit(X, y, sample_weight=by_hand)
    assert _weights_equal(a.weights_, b.weights_)


# -- downsampling ----------------------------------------------------------------------
def _window_means(sequences, window):
    """Each sequence's steps averaged over windows of `window` steps, the
    last window over the steps it has: the sum, divided by the count in the
    sequence's dtype."""
    return [
        np.stack([seq[s:s + window].sum(axis=0) / seq.dtype.type(len(seq[s:s + window]))
                  for s in range(0, len(seq), window)])
        for seq in sequences
    ]


def test_downsample_is_a_fit_on_window_means():
    # Lengths 4 to 13, windows of 3: most sequences end in a partial window.
    X, y = _ragged(n=40, min_len=4, max_len=13)
    X = [seq.astype(np.float32) for seq in X]
    averaged = _window_means(X, 3)
    assert {len(s) % 3 for s in X} == {0, 1, 2}
    windowed = RNNClassifier(**FAST, downsample=3).fit(X, y)
    by_hand = RNNClassifier(**FAST, downsample=1).fit(averaged, y)
    assert windowed.downsample_ == 3 and by_hand.downsample_ == 1
    assert _weights_equal(windowed.weights_, by_hand.weights_)
    assert windowed.loss_curve_ == by_hand.loss_curve_
    # predict averages the same windows, on sequences of any length.
    rng = np.random.default_rng(1)
    new = [rng.normal(size=(t, 2)).astype(np.float32) for t in (1, 2, 7, 30)]
    assert_array_equal(windowed.predict_proba(new),
                       by_hand.predict_proba(_window_means(new, 3)))


def _random_walks(lengths, rng, n_features=1):
    """Series that change slowly: window means keep almost all their variance."""
    return [np.cumsum(rng.normal(size=(t, n_features)), axis=0).astype(np.float32)
            for t in lengths]


@pytest.mark.parametrize("n_timesteps, window", [(199, 1), (250, 2), (420, 4)])
def test_downsample_auto_averages_slow_series_over_n_timesteps_over_100(n_timesteps,
                                                                        window):
    rng = np.random.default_rng(0)
    # The longest sequence decides: the others are shorter.
    X = _random_walks((n_timesteps, 60, 90, 120) * 3, rng)
    y = np.arange(12) % 2
    params = dict(FAST, hidden_layer_sizes=(4,), max_iter=1)
    clf = RNNClassifier(**params).fit(X, y)
    assert clf.downsample == "auto" and clf.downsample_ == window
    # Sequences four times longer at predict keep the fitted window.
    long = [rng.normal(size=(4 * n_timesteps, 1)).astype(np.float32) for _ in range(3)]
    by_hand = RNNClassifier(**params, downsample=1)
    by_hand.weights_, by_hand.classes_, by_hand.n_features_in_ = (
        clf.weights_, clf.classes_, clf.n_features_in_)
    assert_array_equal(clf.predict_proba(long),
                       by_hand.predict_proba(_window_means(long, window)))


def test_downsample_auto_halves_the_window_until_it_keeps_the_variance():
    rng = np.random.default_rng(1)
    steps = np.arange(420)[:, None]
    # A wave of period 20: windows of 4 keep 88% of its variance, of 2 98%.
    wave = [np.sin(2 * np.pi * (steps + rng.integers(20)) / 20).astype(np.float32)
            for _ in range(6)]
    X, lengths = check_sequences(wave)
    assert variance_kept(X, lengths, 4) < AUTO_KEPT <= variance_kept(X, lengths, 2)
    params = dict(FAST, hidden_layer_sizes=(4,), max_iter=1)
    assert RNNClassifier(**params).fit(wave, np.arange(6) % 2).downsample_ == 2
    # White noise, or one fast channel beside a slow one, keeps every step.
    noise = [rng.normal(size=(450, 1)).astype(np.float32) for _ in range(6)]
    mixed = [np.hstack([slow, fast]) for slow, fast in zip(_random_walks([450] * 6, rng),
                                                            noise)]
    for X in (noise, mixed):
        assert RNNClassifier(**params).fit(X, np.arange(6) % 2).downsample_ == 1


def test_variance_kept_against_window_means_repeated_over_their_steps():
    rng = np.random.default_rng(2)
    sequences = [np.column_stack([rng.normal(size=t).cumsum(), rng.normal(size=t),
                                  np.full(t, 3.0)]).astype(np.float32)
                 for t in (7, 12, 3, 10)]
    X, lengths = check_sequences(sequences)
    for window in (2, 3, 5):
        steps = np.concatenate(sequences).astype(np.float64)
        fitted = np.concatenate([np.repeat(m, window, axis=0)[:len(s)] for s, m in
                                 zip(sequences, _window_means(sequences, window))])
        varies = slice(0, 2)   # the third channel is constant: it keeps all
        expected = 1 - (((steps - fitted)[:, varies] ** 2).sum(axis=0)
                        / ((steps - steps.mean(axis=0))[:, varies] ** 2).sum(axis=0))
        assert_allclose(variance_kept(X, lengths, window), [*expected, 1.0], rtol=1e-5)
    # Scaled near the dtype's largest values, with no overflow warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_allclose(variance_kept(X * np.float32(1e37), lengths, 2),
                        variance_kept(X, lengths, 2), rtol=1e-5)
        assert_allclose(variance_kept(X.astype(np.float64) * 1e307, lengths, 2),
                        variance_kept(X, lengths, 2), rtol=1e-5)


def test_partial_fit_keeps_the_window_and_a_warm_start_follows_downsample():
    X, y = _easy(n=40, T=12)
    clf = RNNClassifier(**FAST, downsample=2, warm_start=True).fit(X, y)
    clf.set_params(downsample=3)
    clf.partial_fit(X, y)       # continues the weights trained on windows of 2
    assert clf.downsample_ == 2
    clf.fit(X, y)               # a warm-started fit takes the parameter as it is
    assert clf.downsample_ == 3


# -- inputs are never modified ------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_not_modified(dtype):
    X, y = _easy(n=40, dtype=dtype)
    X_lists, _ = _ragged(n=40)
    X_lists = [s.astype(dtype) for s in X_lists]
    sw = np.linspace(0.5, 2.0, 40)
    X_strided = np.asfortranarray(X)
    cases = [X, X_strided, X_lists, X[:, :, 0]]
    for data in cases:
        before_X = [np.copy(s) for s in data] if isinstance(data, list) else data.copy()
        before_y, before_sw = y.copy(), sw.copy()
        clf = RNNClassifier(**FAST).fit(data, y, sample_weight=sw)
        clf.predict_proba(data)
        clf.partial_fit(data, y, sample_weight=sw)
        if isinstance(data, list):
            assert all(np.array_equal(a, b) and a.dtype == b.dtype
                       for a, b in zip(data, before_X))
        else:
            assert_array_equal(data, before_X)
            assert data.dtype == before_X.dtype
        assert_array_equal(y, before_y)
        assert_array_equal(sw, before_sw)


def _reference_step(solver, opt, weights, grads, t):
    """One optimizer step in NumPy, as scikit-learn and PyTorch define it;
    ``opt`` holds the state (updated in place)."""
    lr = opt["learning_rate_init"]
    for name in weights:
        g = grads[name]
        if solver == "adam":
            b1, b2 = opt["beta_1"], opt["beta_2"]
            opt["m"][name] = b1 * opt["m"][name] + (1 - b1) * g
            opt["v"][name] = b2 * opt["v"][name] + (1 - b2) * g * g
            step = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            weights[name] = weights[name] - step * opt["m"][name] / (
                np.sqrt(opt["v"][name]) + opt["epsilon"])
        elif solver == "rmsprop":
            rho = opt["rho"]
            opt["v"][name] = rho * opt["v"][name] + (1 - rho) * g * g
            weights[name] = weights[name] - lr * g / (np.sqrt(opt["v"][name]) + opt["epsilon"])
        else:
            mu = opt["momentum"]
            opt["m"][name] = mu * opt["m"][name] - lr * g
            if opt["nesterovs_momentum"]:
                weights[name] = weights[name] + mu * opt["m"][name] - lr * g
            else:
                weights[name] = weights[name] + opt["m"][name]


@pytest.mark.parametrize("solver, options", [
    ("adam", dict(beta_1=0.8, beta_2=0.99, epsilon=1e-6)),
    ("rmsprop", dict(rho=0.8, epsilon=1e-6)),
    ("sgd", dict(momentum=0.7, nesterovs_momentum=True)),
    ("sgd", dict(momentum=0.7, nesterovs_momentum=False)),
])
@pytest.mark.parametrize("alpha, clip_norm", [(0.0, None), (0.05, 0.1)])
def test_each_step_matches_a_numpy_optimizer(solver, options, alpha, clip_norm):
    # Full-batch partial_fit: each call is one step. From the state left by
    # the first, three more steps must match the solver's textbook update
    # of the gradient that loss_and_grad reports, plus L2 on the weight
    # matrices (not the biases), clipped to clip_norm.
    X, y = _easy(n=24)
    params = dict(FAST, **EXACT, solver=solver, learning_rate="constant",
                  learning_rate_init=0.05, alpha=alpha, clip_norm=clip_norm,
                  batch_size=24, shuffle=False, **options)
    clf = RNNClassifier(**params)
    clf.partial_fit(X, y, classes=[0, 1])
    weights = {k: v.copy() for k, v in clf.weights_.items()}
    names = list(weights)
    state = clf._optimizer
    opt = dict(params, m={}, v={})
    offset = 0
    for name in names:  # the flat state vectors, in the weights' order
        size = weights[name].size
        opt["m" if solver != "rmsprop" else "v"][name] = (
            state.state_a[offset:offset + size].reshape(weights[name].shape).copy())
        if solver == "adam":
            opt["v"][name] = state.state_b[offset:offset + size].reshape(
                weights[name].shape).copy()
        offset += size
    assert offset == state.state_a.size
    for t in range(2, 5):
        _, grads = loss_and_grad(weights, X, clf.classes_.searchsorted(y), cell="rnn")
        for name in names:
            if name.startswith("weight"):
                grads[name] = grads[name] + alpha / len(X) * weights[name]
        norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
        if clip_norm is not None and norm > clip_norm:
            grads = {k: g * (clip_norm / norm) for k, g in grads.items()}
        _reference_step(solver, opt, weights, grads, t)
        clf.partial_fit(X, y)
        for name in names:
            assert_allclose(clf.weights_[name], weights[name], rtol=1e-9, atol=1e-12,
                            err_msg=f"{name}, step {t}")


def test_the_estimators_share_their_common_defaults():
    # The scikit-learn idiom writes each estimator's signature out in full
    # (BaseRNN, RNNClassifier for class_weight, the per-step base without
    # pooling); the parameters they share must keep the same defaults.
    import inspect

    from cbptt._base import BaseRNN
    from cbptt._step import _StepRNN

    def defaults(cls):
        return {name: p.default for name, p in inspect.signature(cls).parameters.items()}

    base = defaults(BaseRNN)
    for cls in (RNNClassifier, _StepRNN):
        shared = defaults(cls).keys() & base.keys()
        assert shared == base.keys() - ({"pooling", "downsample"} if cls is _StepRNN
                                        else set())
        assert {name: defaults(cls)[name] for name in shared} == {
            name: base[name] for name in shared}
