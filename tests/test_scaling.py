"""Scaling out (docs/scaling.rst): a grid search run by a Dask cluster, and
training on data read block by block from disk with partial_fit.

The Dask test needs ``distributed`` (the ``dask`` extra) and is skipped
without it; the out-of-core test needs NumPy only.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV, KFold

from cbptt import RNNClassifier


def _sign_of_sum(n_samples, seed=0):
    """Label: is the sum of the first feature over the steps positive?"""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, 10, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_a_dask_cluster_matches_the_default_backend():
    distributed = pytest.importorskip("distributed")
    import joblib

    X, y = _sign_of_sum(90)
    grid = {"hidden_layer_sizes": [4, 8], "learning_rate_init": [0.01, 0.03]}

    def search(n_jobs):
        estimator = RNNClassifier(max_iter=5, random_state=0, n_threads=1)
        return GridSearchCV(estimator, grid, cv=KFold(3), n_jobs=n_jobs)

    expected = search(None).fit(X, y)
    # Worker threads in this process (no worker processes to start): quick,
    # and the tasks still go through the scheduler and the workers.
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as tasks, joblib.parallel_config(backend="dask"):
            result = search(-1).fit(X, y)
        assert len(tasks.data) > 0, "the search did not run on the cluster"
    assert client.status == "closed"

    assert result.best_params_ == expected.best_params_
    for key in ["mean_test_score", "split0_test_score", "split1_test_score",
                "split2_test_score", "rank_test_score"]:
        assert_array_equal(result.cv_results_[key], expected.cv_results_[key])
    # Sequences of length 10 never leave this candidate at chance level.
    assert result.best_score_ > 0.7
    for name, weight in expected.best_estimator_.weights_.items():
        assert_array_equal(result.best_estimator_.weights_[name], weight)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_partial_fit_over_blocks_of_a_memmap(tmp_path, mode):
    X, y = _sign_of_sum(800)
    X_train, y_train, X_test, y_test = X[:600], y[:600], X[600:], y[600:]
    np.save(tmp_path / "X.npy", X_train)
    np.save(tmp_path / "y.npy", y_train)
    X_disk = np.load(tmp_path / "X.npy", mmap_mode=mode)
    y_disk = np.load(tmp_path / "y.npy", mmap_mode=mode)
    assert isinstance(X_disk, np.memmap)
    assert X_disk.flags.writeable == (mode == "r+")

    block = 100
    # The label is the sign of a running sum, which the last state carries:
    # after 5 epochs the last-state head scores 0.945 (seeds 0-2 of the data,
    # random_state 0-1: >= 0.925), the default max-pooled head 0.895.
    params = dict(hidden_layer_sizes=8, pooling="last", random_state=0, n_threads=1)
    on_disk = RNNClassifier(**params)
    in_memory = RNNClassifier(**params)
    scores = []
    for epoch in range(5):
        for start in range(0, len(X_disk), block):
            rows = slice(start, start + block)
            on_disk.partial_fit(X_disk[rows], y_disk[rows], classes=[0, 1])
            in_memory.partial_fit(X_train[rows].copy(), y_train[rows].copy(), classes=[0, 1])
            if not scores:
                scores.append(on_disk.score(X_test, y_test))
        scores.append(on_disk.score(X_test, y_test))

    assert on_disk.n_iter_ == 5 * 6
    assert scores[0] < 0.85, scores
    assert scores[-1] >= 0.9, scores
    # Reading blocks from disk changes nothing: the same model as from memory.
    for name, weight in in_memory.weights_.items():
        assert_array_equal(on_disk.weights_[name], weight)
    # The memmaps, and the files under them, are as they were written.
    assert_array_equal(X_disk, X_train)
    assert_array_equal(y_disk, y_train)
    assert_array_equal(np.load(tmp_path / "X.npy"), X_train)
    assert_array_equal(np.load(tmp_path / "y.npy"), y_train)
