"""SequenceScaler: the statistics of the valid steps, the forms of
input and output, sample weights, pipelines, scikit-learn's checks and the
messages of bad input."""

import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    estimator_checks_generator,
    parametrize_with_checks,
)

from cbptt import RNNClassifier
from cbptt.preprocessing import SequenceScaler


def _ragged(rng, n=7, n_features=3, dtype=np.float64):
    """Sequences of 1 to 9 steps, features on different scales."""
    scale = np.array([1.0, 10.0, 0.01, 5.0])[:n_features]
    return [(rng.normal(loc=3.0, size=(rng.integers(1, 10), n_features)) * scale)
            .astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_array_matches_standard_scaler_on_the_steps(dtype):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(6, 5, 3)) * [1.0, 100.0, 0.1] + 7).astype(dtype)
    scaler = SequenceScaler().fit(X)
    reference = StandardScaler().fit(X.reshape(-1, 3).astype(np.float64))
    np.testing.assert_allclose(scaler.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.var_, reference.var_, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, reference.scale_, rtol=1e-12)
    assert scaler.mean_.dtype == np.float64 and scaler.n_steps_seen_ == 30

    Z = scaler.transform(X)
    assert Z.shape == X.shape and Z.dtype == dtype
    np.testing.assert_allclose(
        Z.reshape(-1, 3), reference.transform(X.reshape(-1, 3).astype(np.float64)),
        rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 0)
    np.testing.assert_allclose(Z.reshape(-1, 3).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.reshape(-1, 3).std(axis=0), 1, rtol=1e-5)


def test_ragged_list_counts_valid_steps_only():
    rng = np.random.default_rng(1)
    X = _ragged(rng)
    steps = np.concatenate(X)
    scaler = SequenceScaler().fit(X)
    reference = StandardScaler().fit(steps)
    np.testing.assert_allclose(scaler.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.var_, reference.var_, rtol=1e-12)
    assert scaler.n_steps_seen_ == len(steps)
    # The zeros that pad the sequences to one length would shift the mean.
    padded = np.zeros((len(X), max(map(len, X)), 3))
    for i, seq in enumerate(X):
        padded[i, : len(seq)] = seq
    assert not np.allclose(SequenceScaler().fit(padded).mean_, scaler.mean_)

    Z = scaler.transform(X)
    assert isinstance(Z, list) and [z.shape for z in Z] == [x.shape for x in X]
    expected = np.split(reference.transform(steps), np.cumsum([len(x) for x in X])[:-1])
    for z, e in zip(Z, expected):
        np.testing.assert_allclose(z, e, rtol=1e-12, atol=1e-12)


def test_univariate_forms():
    rng = np.random.default_rng(2)
    X_2d = rng.normal(loc=5, scale=3, size=(4, 6))     # 4 univariate sequences
    scaler = SequenceScaler().fit(X_2d)
    assert scaler.n_features_in_ == 1
    np.testing.assert_allclose(scaler.mean_, [X_2d.mean()])
    np.testing.assert_allclose(scaler.scale_, [X_2d.std()])
    Z = scaler.transform(X_2d)
    assert Z.shape == (4, 6)
    np.testing.assert_allclose(Z, (X_2d - X_2d.mean()) / X_2d.std())

    X_list = [rng.normal(size=n) for n in (3, 8, 1)]    # 1-D arrays: one feature
    Z_list = SequenceScaler().fit_transform(X_list)
    assert [z.shape for z in Z_list] == [(3,), (8,), (1,)]
    steps = np.concatenate(X_list)
    np.testing.assert_allclose(np.concatenate(Z_list), (steps - steps.mean()) / steps.std())

    # A list of equal-length sequences stays a list.
    X_equal = list(rng.normal(size=(3, 4, 2)))
    Z_equal = SequenceScaler().fit_transform(X_equal)
    assert isinstance(Z_equal, list) and [z.shape for z in Z_equal] == [(4, 2)] * 3


def test_sample_weight_weighs_every_step_of_a_sequence():
    rng = np.random.default_rng(3)
    X = _ragged(rng, n=5, n_features=2)
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    scaler = SequenceScaler().fit(X, sample_weight=w)
    total = sum(w_i * len(x) for w_i, x in zip(w, X))
    mean = sum(w_i * x.sum(axis=0) for w_i, x in zip(w, X)) / total
    var = sum(w_i * ((x - mean) ** 2).sum(axis=0) for w_i, x in zip(w, X)) / total
    np.testing.assert_allclose(scaler.mean_, mean, rtol=1e-12)
    np.testing.assert_allclose(scaler.var_, var, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, np.sqrt(var), rtol=1e-12)
    assert not np.allclose(scaler.mean_, SequenceScaler().fit(X).mean_)

    # Integer weights count as repeated sequences; weight 0 as absent ones.
    repeated = [x for x, k in zip(X, [1, 2, 0, 3, 1]) for _ in range(k)]
    by_weight = SequenceScaler().fit(X, sample_weight=[1, 2, 0, 3, 1])
    by_repeat = SequenceScaler().fit(repeated)
    np.testing.assert_allclose(by_weight.mean_, by_repeat.mean_, rtol=1e-12)
    np.testing.assert_allclose(by_weight.var_, by_repeat.var_, rtol=1e-12)


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_with_mean_with_std_as_standard_scaler(with_mean, with_std):
    rng = np.random.default_rng(4)
    X = _ragged(rng)
    steps = np.concatenate(X)
    scaler = SequenceScaler(with_mean=with_mean, with_std=with_std).fit(X)
    reference = StandardScaler(with_mean=with_mean, with_std=with_std).fit(steps)
    for name in ("mean_", "var_", "scale_"):
        ours, theirs = getattr(scaler, name), getattr(reference, name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate(scaler.transform(X)),
                               reference.transform(steps), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate(scaler.inverse_transform(scaler.transform(X))),
                               steps, rtol=1e-12)


def test_constant_features_keep_unit_scale():
    rng = np.random.default_rng(5)
    X = [np.column_stack([rng.normal(size=n), np.full(n, 0.1), np.zeros(n)])
         for n in (4, 7, 2)]
    scaler = SequenceScaler().fit(X)
    assert scaler.scale_[1] == scaler.scale_[2] == 1.0
    assert scaler.scale_[0] != 1.0
    Z = np.concatenate(scaler.transform(X))
    np.testing.assert_allclose(Z[:, 1:], 0, atol=1e-15)
    assert np.all(np.isfinite(Z))


@pytest.mark.parametrize("form", ["3d", "2d", "list", "list_1d"])
def test_inverse_transform_round_trip(form):
    rng = np.random.default_rng(6)
    X = {
        "3d": rng.normal(loc=-4, scale=20, size=(3, 5, 2)),
        "2d": rng.normal(loc=-4, scale=20, size=(3, 5)),
        "list": _ragged(rng),
        "list_1d": [rng.normal(size=n) * 9 for n in (2, 6)],
    }[form]
    scaler = SequenceScaler().fit(X)
    back = scaler.inverse_transform(scaler.transform(X))
    if isinstance(X, list):
        assert isinstance(back, list)
        for b, x in zip(back, X):
            assert b.shape == x.shape
            np.testing.assert_allclose(b, x, rtol=1e-12, atol=1e-12)
    else:
        assert back.shape == X.shape
        np.testing.assert_allclose(back, X, rtol=1e-12, atol=1e-12)


def test_partial_fit_equals_fit_on_all():
    rng = np.random.default_rng(7)
    X = _ragged(rng, n=9)
    w = rng.uniform(0.1, 2.0, size=9)
    incremental = SequenceScaler()
    for part in (slice(0, 2), slice(2, 3), slice(3, 9)):
        incremental.partial_fit(X[part], sample_weight=w[part])
    whole = SequenceScaler().fit(X, sample_weight=w)
    np.testing.assert_allclose(incremental.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(incremental.var_, whole.var_, rtol=1e-12)
    assert incremental.n_steps_seen_ == whole.n_steps_seen_ == sum(map(len, X))

    # fit starts over.
    refit = incremental.fit(X[:2])
    np.testing.assert_allclose(refit.mean_, np.concatenate(X[:2]).mean(axis=0))
    assert refit.n_steps_seen_ == len(X[0]) + len(X[1])


def test_input_is_not_modified_and_dtype_is_kept():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(4, 3, 2)).astype(np.float32)
    X_list = _ragged(rng, dtype=np.float32)
    copies = X.copy(), [x.copy() for x in X_list]
    scaler = SequenceScaler().fit(X)
    Z = scaler.transform(X)
    assert Z.dtype == np.float32 and not np.shares_memory(Z, X)
    assert scaler.inverse_transform(Z).dtype == np.float32
    Z_list = SequenceScaler().fit(X_list).transform(X_list)
    assert all(z.dtype == np.float32 for z in Z_list)
    Z[...] = 0
    for z in Z_list:
        z[...] = 0
    np.testing.assert_array_equal(X, copies[0])
    for x, c in zip(X_list, copies[1]):
        np.testing.assert_array_equal(x, c)

    # Integers become float64.
    Z_int = SequenceScaler().fit_transform(np.arange(12).reshape(2, 3, 2))
    assert Z_int.dtype == np.float64


def test_get_feature_names_out():
    scaler = SequenceScaler().fit(np.ones((2, 3, 4)))
    assert list(scaler.get_feature_names_out()) == ["x0", "x1", "x2", "x3"]
    names = ["a", "b", "c", "d"]
    assert list(scaler.get_feature_names_out(names)) == names
    with pytest.raises(ValueError, match="input_features should have length equal"):
        scaler.get_feature_names_out(["a"])


PARAMS = dict(hidden_layer_sizes=8, max_iter=5, random_state=0)


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.mark.parametrize("form", ["array", "list"])
def test_pipeline_scales_then_fits(form):
    rng = np.random.default_rng(9)
    if form == "array":
        X = rng.normal(loc=50, scale=30, size=(40, 6, 2))
    else:
        X = [rng.normal(loc=50, scale=30, size=(rng.integers(2, 8), 2)) for _ in range(40)]
    y = np.array([int(x[:, 0].mean() > 50) for x in X])
    pipe = _fit(make_pipeline(SequenceScaler(), RNNClassifier(**PARAMS)), X, y)

    scaler = SequenceScaler().fit(X)
    clf = _fit(RNNClassifier(**PARAMS), scaler.transform(X), y)
    for name, weight in clf.weights_.items():
        np.testing.assert_array_equal(pipe[-1].weights_[name], weight)
    np.testing.assert_array_equal(pipe.predict(X), clf.predict(scaler.transform(X)))
    np.testing.assert_array_equal(pipe[0].mean_, scaler.mean_)


def test_grid_search_over_a_pipeline_of_ragged_sequences():
    rng = np.random.default_rng(10)
    X = [rng.normal(loc=5, scale=4, size=(rng.integers(2, 8), 2)) for _ in range(30)]
    y = np.array([int(x[:, 0].mean() > 5) for x in X])
    grid = GridSearchCV(
        make_pipeline(SequenceScaler(), RNNClassifier(**PARAMS)),
        {"sequencescaler__with_std": [True, False],
         "rnnclassifier__hidden_layer_sizes": [4, 8]},
        cv=2,
    )
    _fit(grid, X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.predict(X[:3]).shape == (3,)


# scikit-learn's checks build 2-D X, which cbptt reads as univariate
# sequences (n_samples, n_timesteps): one feature, any number of steps.
_UNIVARIATE = ("a 2-D X is univariate sequences: n_features_in_ is 1, not "
               "X.shape[1], and another X.shape[1] (number of steps) is no error")
EXPECTED_FAILED_CHECKS = {
    "check_n_features_in": _UNIVARIATE,
    "check_n_features_in_after_fitting": _UNIVARIATE,
    "check_transformer_general": _UNIVARIATE,
    "check_transformer_data_not_an_array": (
        "a list is a list of sequences, and transform returns a list for a list "
        "(the form it was given), not an array"),
}


@parametrize_with_checks([SequenceScaler()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
                         xfail_strict=True)
def test_sklearn_compatible_transformer(estimator, check):
    check(estimator)


def _one_step(X):
    """2-D X (n, d) -> (n, 1, d): each row one sequence of a single step."""
    X = np.asarray(X)
    return X[:, np.newaxis, :] if X.ndim == 2 else X


def _rows(Z):
    return Z[:, 0, :] if Z.ndim == 3 else Z


class _OneStepScaler(SequenceScaler):
    """Reads 2-D X as one-step sequences (the tabular meaning of a feature)."""

    def fit(self, X, y=None, sample_weight=None):
        return super().fit(_one_step(X), sample_weight=sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None):
        return super().partial_fit(_one_step(X), sample_weight=sample_weight)

    def transform(self, X):
        return _rows(super().transform(_one_step(X)))

    def inverse_transform(self, X):
        return _rows(super().inverse_transform(_one_step(X)))


@pytest.mark.parametrize(
    "check",
    [check for _, check in estimator_checks_generator(_OneStepScaler(), legacy=True)
     if getattr(check, "func", check).__name__ in EXPECTED_FAILED_CHECKS],
    ids=lambda check: getattr(check, "func", check).__name__,
)
@pytest.mark.filterwarnings("ignore:X has shape:UserWarning")  # one step, many features
def test_expected_failures_pass_with_one_step_sequences(check):
    check(_OneStepScaler())


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.fit(_with(np.ones((3, 4, 2)), (1, 2, 0), np.nan)),
     ValueError, "Input X contains NaN"),
    (lambda s: s.fit([np.ones((2, 2)), np.array([[1.0, np.inf]])]),
     ValueError, r"Input X\[1\] contains infinity"),
    (lambda s: s.fit(np.ones(3)), ValueError, "X must be 2-D or 3-D"),
    (lambda s: s.fit([]), ValueError, "Found 0 sequences"),
    (lambda s: s.fit([np.ones((2, 2)), np.ones((3, 3))]), ValueError,
     r"same number of features: X\[0\] has 2 and X\[1\] has 3"),
    (lambda s: s.fit(sparse.csr_matrix(np.ones((2, 2)))), TypeError, "Sparse data"),
    (lambda s: s.fit(np.array([[["a"]]])), ValueError, "could not convert"),
    (lambda s: s.fit(np.ones((3, 4, 2))).transform(np.ones((3, 4, 3))), ValueError,
     "X has 3 features, but SequenceScaler is expecting 2 features"),
    (lambda s: s.fit(np.ones((3, 4, 2))).inverse_transform([np.ones((2, 1))]),
     ValueError, "X has 1 features, but SequenceScaler is expecting 2"),
    (lambda s: s.fit(np.ones((3, 4, 2))).partial_fit(np.ones((1, 4, 5))), ValueError,
     "X has 5 features, but SequenceScaler is expecting 2"),
    (lambda s: s.fit(np.ones((3, 4, 2)), sample_weight=[1, -1, 1]), ValueError,
     "Negative values in data passed to `sample_weight`"),
    (lambda s: s.fit(np.ones((3, 4, 2)), sample_weight=[0, 0, 0]), ValueError,
     "non-zero|positive sum"),
    (lambda s: s.fit(np.ones((3, 4, 2)), sample_weight=[1, 1]), ValueError,
     r"sample_weight.shape == \(2,\), expected \(3,\)"),
    (lambda s: s.set_params(with_mean="yes").fit(np.ones((3, 4, 2))), ValueError,
     "'with_mean' parameter of SequenceScaler must be an instance of 'bool'"),
    (lambda s: s.transform(np.ones((3, 4, 2))), NotFittedError,
     "SequenceScaler instance is not fitted yet"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(SequenceScaler())

