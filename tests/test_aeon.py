"""cbptt.aeon: aeon's estimator checks, its layouts, its pipelines.

The adapters must be aeon estimators in full (aeon's own check suite, with
the tiny networks of ``_get_test_params``), read aeon's channels-first
collections as cbptt reads their ``channels_last`` form (bit for bit), and
learn from a bundled dataset inside aeon's tooling.
"""

import inspect
import warnings

import numpy as np
import pytest

pytest.importorskip("aeon")

from aeon.datasets import load_japanese_vowels  # noqa: E402
from aeon.pipeline import make_pipeline  # noqa: E402
from aeon.testing.estimator_checking import parametrize_with_checks  # noqa: E402
from aeon.transformations.collection import Normalizer  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402

import cbptt  # noqa: E402
from cbptt.aeon import RNNClassifier, RNNRegressor  # noqa: E402

TINY = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, n_threads=1)


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@parametrize_with_checks([RNNClassifier, RNNRegressor])
def test_aeon_estimator_checks(check):
    check()


@pytest.mark.parametrize("adapter, core", [(RNNClassifier, cbptt.RNNClassifier),
                                           (RNNRegressor, cbptt.RNNRegressor)])
def test_hyperparameters_are_cbptts_but_warm_start(adapter, core):
    core_params = core().get_params()
    del core_params["warm_start"]
    assert adapter().get_params() == core_params
    est = adapter(cell="lstm", hidden_layer_sizes=(7, 3))
    assert (est.cell, est.hidden_layer_sizes) == ("lstm", (7, 3))
    with pytest.raises(TypeError, match="warm_start"):
        adapter(warm_start=True)
    assert "n_threads" in inspect.signature(adapter).parameters


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_channels_first_array_trains_as_its_channels_last_form():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3, 12))          # aeon: 30 cases, 3 channels, 12 points
    y = (X[:, 0].mean(axis=1) > 0).astype(int)
    X_before = X.copy()
    clf = RNNClassifier(**TINY).fit(X, y)
    core = cbptt.RNNClassifier(**TINY).fit(X.transpose(0, 2, 1), y)
    assert clf.estimator_.n_features_in_ == 3
    _same_weights(clf.estimator_.weights_, core.weights_)
    np.testing.assert_array_equal(clf.predict_proba(X[:5]),
                                  core.predict_proba(X[:5].transpose(0, 2, 1)))
    np.testing.assert_array_equal(X, X_before)

    reg = RNNRegressor(**TINY).fit(X, X[:, 1, -1])
    core_reg = cbptt.RNNRegressor(**TINY).fit(X.transpose(0, 2, 1), X[:, 1, -1])
    _same_weights(reg.estimator_.weights_, core_reg.weights_)
    assert reg.predict(X).shape == (30,)


def test_unequal_length_list_trains_as_its_channels_last_form():
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(2, n)) for n in rng.integers(4, 15, size=20)]
    y = np.array(["a", "b"] * 10)
    clf = RNNClassifier(**TINY).fit(X, y)
    core = cbptt.RNNClassifier(**TINY).fit([x.T for x in X], y)
    _same_weights(clf.estimator_.weights_, core.weights_)
    assert list(clf.classes_) == ["a", "b"]
    assert clf.predict(X[:4]).tolist() == core.predict([x.T for x in X[:4]]).tolist()


def test_missing_values_are_refused_by_aeons_checks():
    X = np.ones((6, 2, 5))
    X[2, 1, 3] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        RNNClassifier(**TINY).fit(X, [0, 1] * 3)


def test_learns_japanese_vowels_of_unequal_length_in_a_pipeline():
    # 270 utterances of 12 channels and 7 to 29 points, 9 speakers; bundled
    # with aeon. The RNN alone reached 0.89-0.95 test accuracy for seeds 0-3.
    X, y = load_japanese_vowels(split="train")
    X_test, y_test = load_japanese_vowels(split="test")
    assert isinstance(X, list) and X[0].shape[0] == 12
    params = dict(hidden_layer_sizes=16, max_iter=20, random_state=0)
    clf = RNNClassifier(**params).fit(X, y)
    assert accuracy_score(y_test, clf.predict(X_test)) >= 0.8
    # In aeon's pipeline, behind one of its transformers (per-series
    # z-normalisation, which removes level information: 0.70 here; chance is
    # about 0.15).
    pipe = make_pipeline(Normalizer(), RNNClassifier(**params)).fit(X, y)
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert accuracy_score(y_test, pipe.predict(X_test)) >= 0.5
