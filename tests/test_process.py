"""cbptt as part of a user's process: threads calling it at once, fork after
a multi-threaded fit, and partial_fit on data of another dtype.

Each test here reproduces something a user's process does around cbptt, and
checks that the process's shared state (BLAS thread counts, a forked child)
is left working.
"""

import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cbptt import RNNClassifier, RNNRegressor
from cbptt._kernels._utils import openmp_enabled


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _data(n=64, T=6, D=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D))
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_concurrent_calls_leave_blas_threads_as_they_were():
    # Each call limits BLAS to one thread while its kernels run; calls from
    # several Python threads at once must not leave that limit behind.
    X, y = _data()
    clf = RNNClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)
    before = _blas_threads()
    errors = []

    def work():
        try:
            for _ in range(30):
                clf.predict_proba(X)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _blas_threads() == before


_FORK_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from cbptt import RNNClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8, 3))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = RNNClassifier(hidden_layer_sizes=(16,), max_iter=2, batch_size=128,
                        n_threads=2, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    pid = os.fork()
    if pid == 0:
        # The child: OpenMP's thread pool did not survive the fork.
        same = np.array_equal(clf.predict_proba(X), expected)
        clf.partial_fit(X, y)
        os._exit(0 if same else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork") or not openmp_enabled(),
                    reason="needs os.fork and an OpenMP build")
def test_fork_after_a_multithreaded_fit_works_in_the_child(tmp_path):
    # A hang is the failure: the child waits forever for OpenMP threads the
    # fork did not copy. The timeout turns it into a test failure.
    try:
        # cwd: outside the source tree, whose cbptt/ would shadow the
        # installed package.
        result = subprocess.run([sys.executable, "-c", _FORK_CHILD], timeout=60,
                                capture_output=True, text=True, cwd=tmp_path,
                                env={**os.environ, "OMP_NUM_THREADS": "2"})
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung in its first kernel call")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("estimator", [RNNClassifier, RNNRegressor])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("first, second", [(np.float64, np.float32),
                                           (np.float32, np.float64)])
def test_partial_fit_accepts_another_dtype(estimator, dtype, first, second):
    # Training continues in the estimator's dtype whatever the dtype of each
    # batch; predictions come back in the dtype of the X they are asked for.
    X, y = _data()
    model = estimator(hidden_layer_sizes=(8,), random_state=0, dtype=dtype)
    kwargs = {"classes": [0, 1]} if estimator is RNNClassifier else {}
    target = y if estimator is RNNClassifier else y.astype(float)
    model.partial_fit(X.astype(first), target, **kwargs)
    model.partial_fit(X.astype(second), target)
    model.partial_fit(X.astype(second), target)
    assert model.n_iter_ == 3
    assert all(w.dtype == dtype for w in model.weights_.values())
    assert model._optimizer.state_a.dtype == dtype
    for X_dtype in (first, second):
        output = (model.predict_proba(X.astype(X_dtype)) if estimator is RNNClassifier
                  else model.predict(X.astype(X_dtype)))
        assert output.dtype == X_dtype
        assert np.all(np.isfinite(output))


_INTERRUPT = textwrap.dedent("""
    import os, signal, sys, threading, warnings
    import numpy as np
    from cbptt import RNNClassifier
    # Python maps SIGINT to KeyboardInterrupt unless the process was started
    # with it ignored (as a background job of a non-interactive shell, which
    # is how some CI runners start their steps); Ctrl-C is then a no-op by
    # design, so the test puts the usual handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    what, size, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rng = np.random.default_rng(0)
    if size == "large":
        # Minibatches of about a quarter second, an epoch of minutes, a
        # prediction of over a minute: an interrupt that waited for either
        # runs into the test's timeout. (downsample=1: all 200 steps.)
        X = rng.normal(size=(8000, 200, 8)).astype(np.float32)
        params = dict(cell="lstm", hidden_layer_sizes=(512,), batch_size=16, downsample=1)
    else:  # epochs of a fraction of a second, and no early stop
        X = rng.normal(size=(2000, 30, 8)).astype(np.float32)
        params = dict(hidden_layer_sizes=(32,), batch_size=16, n_iter_no_change=10_000)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = RNNClassifier(max_iter=10_000, random_state=0, n_threads=1, **params)
    if what != "fit":
        clf.partial_fit(X[:32], y[:32], classes=[0, 1])
        before = {k: v.copy() for k, v in clf.weights_.items()}
    interrupt = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    if what == "fit":
        # The delay counts from the first epoch's start, not from fit's
        # setup (whose length depends on the machine's load); a Ctrl-C
        # during the setup is a plain KeyboardInterrupt.
        import cbptt._base
        run = cbptt._base._Epoch.run
        def run_after_starting_the_timer(*args):
            if interrupt.ident is None:  # not started yet
                interrupt.start()
            return run(*args)
        cbptt._base._Epoch.run = run_after_starting_the_timer
    else:
        interrupt.start()
    if what == "fit":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(X, y)
        messages = [str(w.message) for w in caught]
        assert any("Training interrupted by user" in m for m in messages), messages
        assert len(clf.loss_curve_) == clf.n_iter_
        assert clf.predict_proba(X[:5]).shape == (5, 2)
        if clf.n_iter_:
            # The weights of the last completed epoch: those of a fit that
            # ran that many epochs.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                again = RNNClassifier(max_iter=clf.n_iter_, random_state=0, n_threads=1,
                                      **params).fit(X, y)
            assert all(np.array_equal(again.weights_[k], clf.weights_[k])
                       for k in clf.weights_)
        print("epochs", clf.n_iter_)
    else:
        try:
            if what == "predict":
                clf.predict_proba(np.repeat(X, 4, axis=0))
            else:
                clf.partial_fit(X, y)
        except KeyboardInterrupt:
            print("interrupted")
        assert all(np.array_equal(before[k], clf.weights_[k]) for k in before)
        assert clf.n_iter_ == 1
""")


@pytest.mark.parametrize("what, size, delay, expected", [
    ("fit", "small", 3.0, "epochs [1-9]"),      # after some epochs
    ("fit", "large", 2.0, "epochs 0"),          # within the first epoch
    ("predict", "large", 2.0, "interrupted"),
    ("partial_fit", "large", 2.0, "interrupted"),
])
def test_ctrl_c_acts_between_minibatches(what, size, delay, expected, tmp_path):
    # fit keeps the last completed epoch (or the first epoch's completed
    # minibatches) and warns; predict and partial_fit raise KeyboardInterrupt,
    # partial_fit leaving the model as it was.
    try:
        result = subprocess.run([sys.executable, "-c", _INTERRUPT, what, size, str(delay)],
                                timeout=60, capture_output=True, text=True, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Ctrl-C did not stop {what}")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(expected + r"\d*", result.stdout.strip()), result.stdout
