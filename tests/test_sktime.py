"""cbptt.sktime: sktime's estimator checks, its mtypes, its evaluate.

The adapters must pass sktime's own check suite (with the tiny networks of
``get_test_params``), read sktime's channels-first ``numpy3D`` panels and its
other mtypes as cbptt reads the same series one row per time point (bit for
bit), and score in ``sktime``'s ``evaluate`` instead of returning NaN.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sktime")

import pandas as pd  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sktime.benchmarking.classification import ClassificationBenchmark  # noqa: E402
from sktime.classification.model_evaluation import evaluate  # noqa: E402
from sktime.datasets import load_basic_motions  # noqa: E402
from sktime.datatypes import convert_to  # noqa: E402
from sktime.regression.model_evaluation import evaluate as evaluate_regressor  # noqa: E402
from sktime.utils.estimator_checks import check_estimator  # noqa: E402

import cbptt  # noqa: E402
from cbptt.sktime import RNNClassifier, RNNRegressor  # noqa: E402

TINY = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, n_threads=1)


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.mark.parametrize("estimator_class", [RNNClassifier, RNNRegressor])
def test_sktime_estimator_checks(estimator_class):
    # About 260 checks for the classifier, 150 for the regressor.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sktime's own deprecation notices
        results = check_estimator(estimator_class, raise_exceptions=False,
                                  verbose=False)
    failed = {name: result for name, result in results.items() if result != "PASSED"}
    assert len(results) > 100
    assert failed == {}


@pytest.mark.parametrize("adapter, core", [(RNNClassifier, cbptt.RNNClassifier),
                                           (RNNRegressor, cbptt.RNNRegressor)])
def test_hyperparameters_are_cbptts_but_warm_start(adapter, core):
    core_params = core().get_params()
    del core_params["warm_start"]
    assert adapter().get_params() == core_params
    assert adapter(pooling="max").clone().pooling == "max"
    with pytest.raises(TypeError, match="warm_start"):
        adapter(warm_start=True)


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_numpy3d_and_dataframe_mtypes_train_as_their_channels_last_form():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 2, 10))          # sktime numpy3D: channels first
    y = np.array(["up", "down"])[(X[:, 1].sum(axis=1) > 0).astype(int)]
    core = cbptt.RNNClassifier(**TINY).fit(X.transpose(0, 2, 1), y)
    for mtype in ("numpy3D", "pd-multiindex", "nested_univ"):
        clf = RNNClassifier(**TINY).fit(convert_to(X, mtype), y)
        _same_weights(clf.estimator_.weights_, core.weights_)
        np.testing.assert_array_equal(clf.predict_proba(convert_to(X[:4], mtype)),
                                      core.predict_proba(X[:4].transpose(0, 2, 1)))
    assert clf.classes_.tolist() == ["down", "up"]


def test_unequal_length_panel_trains_as_cbptt_reads_it():
    rng = np.random.default_rng(1)
    series = [rng.normal(size=(n, 3)) for n in rng.integers(5, 12, size=16)]
    y = rng.normal(size=16)
    X = convert_to([pd.DataFrame(s) for s in series], "pd-multiindex")
    reg = RNNRegressor(**TINY).fit(X, y)
    core = cbptt.RNNRegressor(**TINY).fit(series, y)
    _same_weights(reg.estimator_.weights_, core.weights_)
    np.testing.assert_array_equal(reg.predict(X), core.predict(series))


def test_missing_values_are_refused_by_sktimes_checks():
    X = np.ones((6, 2, 5))
    X[2, 1, 3] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        RNNClassifier(**TINY).fit(X, np.array([0, 1] * 3))


def test_evaluate_scores_basic_motions():
    # 80 recordings of 6 channels of 100 points, 4 activities; bundled with
    # sktime, as a multi-index DataFrame. Fold accuracies were 0.78-0.85 for
    # seeds 0-3.
    X, y = load_basic_motions(return_type="pd-multiindex")
    clf = RNNClassifier(hidden_layer_sizes=16, max_iter=40, random_state=0)
    results = evaluate(clf, cv=KFold(2, shuffle=True, random_state=0), X=X, y=y,
                       scoring=accuracy_score, error_score="raise")
    scores = results["test_accuracy_score"]
    assert len(scores) == 2 and scores.notna().all()
    assert scores.min() >= 0.6  # chance is 0.25


def test_classification_benchmark_runs():
    X, y = load_basic_motions(return_type="numpy3D")
    benchmark = ClassificationBenchmark()
    benchmark.add_estimator(RNNClassifier(hidden_layer_sizes=8, max_iter=20,
                                          random_state=0))
    benchmark.add_task((X, y), KFold(2, shuffle=True, random_state=0), [accuracy_score])
    results = benchmark.run()
    assert results["model_id"].tolist() == ["RNNClassifier"]
    # 0.59-0.71 for seeds 0-3; chance is 0.25.
    assert results["accuracy_score_mean"].iloc[0] >= 0.45


def test_evaluate_scores_a_regressor():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 2, 15))
    y = X[:, 0].mean(axis=1) - X[:, 1].mean(axis=1)
    reg = RNNRegressor(pooling="mean", max_iter=40, random_state=0)
    results = evaluate_regressor(reg, cv=KFold(2, shuffle=True, random_state=0), X=X,
                                 y=y, scoring=r2_score, error_score="raise")
    scores = results["test_r2_score"]
    assert scores.notna().all() and scores.min() >= 0.5
