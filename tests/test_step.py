"""RNNStepClassifier and RNNStepRegressor: a class or a value at every time step.

The headlines: they learn a regime-segmentation task, a character model of
Python source with truncated BPTT, and delay lines (one and several outputs,
and on one long stream with truncation); one 100,000-step stream trains with
``bptt_truncate`` in memory that does not grow with its length. The rest
checks the contract the many-to-one estimators already keep (ragged input,
predictions in X's form, sample weights, partial_fit, warm start, early
stopping, pickling, thread-count bit-identity, dtypes, PyTorch weight names,
scikit-learn tools, bad input) and that one SGD step of the estimator is
exactly ``params - lr * grad`` of ``cbptt.loss_and_grad(output="sequence")``.

The network trains in float32 by default; tests of exact values (a loss
recomputed by ``loss_and_grad``, weights equal to those of an equivalent fit)
ask for ``dtype="float64"``.
"""

import functools
import importlib
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from cbptt import RNNStepClassifier, RNNStepRegressor, loss_and_grad

# Tiny, fast models for everything but the learning tests.
FAST = dict(cell="rnn", hidden_layer_sizes=(8,), max_iter=3, random_state=0)
ESTIMATORS = [RNNStepClassifier, RNNStepRegressor]
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    # Short max_iter is on purpose here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# -- data ----------------------------------------------------------------------
def _delayed(x, delay):
    """x (n, T) shifted right by `delay` steps along time, zeros in front."""
    out = np.zeros_like(x)
    out[:, delay:] = x[:, :-delay]
    return out


def _steps(n=40, T=8, D=2, seed=0, dtype=np.float64):
    """(X (n, T, D), labels (n, T)): the sign of a running sum of feature 0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D)).astype(dtype)
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)
    return X, y


def _ragged(n=30, D=2, seed=0, min_len=2, max_len=9):
    """A list of (T_i, D) sequences, per-step labels (sign of a running sum)
    and per-step values (feature 0 one and two steps ago: 2 outputs)."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(t, D)) for t in rng.integers(min_len, max_len + 1, size=n)]
    labels = [(np.cumsum(x[:, 0]) > 0).astype(int) for x in X]
    values = [np.stack([_delayed(x[None, :, 0], 1)[0], _delayed(x[None, :, 0], 2)[0]],
                       axis=1) for x in X]
    return X, labels, values


def _targets(estimator, labels, values, outputs=2):
    """Per-step targets for the estimator: labels, or `outputs` values."""
    if estimator is RNNStepClassifier:
        return labels
    return [v[:, 0] for v in values] if outputs == 1 else values


def _pad(seqs, fill=0.0, dtype=None):
    """Sequences (T_i, ...) -> an array (n, max T_i, ...) with `fill` after each."""
    T = max(len(s) for s in seqs)
    first = np.asarray(seqs[0])
    out = np.full((len(seqs), T) + first.shape[1:], fill,
                  dtype=dtype or np.result_type(first.dtype, np.asarray(fill).dtype))
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _copy_weights(w):
    return {k: v.copy() for k, v in w.items()}


# -- it learns -----------------------------------------------------------------
_REGIME_MEANS = np.array([-1.0, 0.0, 1.0])
_REGIME_FREQUENCIES = np.array([0.02, 0.25, 0.08])   # cycles per step


def _regimes(n, T, seed):
    """A sensor stream that switches between 3 regimes every 30-79 steps;
    each regime is a sine wave of its own mean and frequency plus noise. The
    ranges of the regimes overlap, so one step alone rarely tells them apart."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, T, 1))
    y = np.empty((n, T), dtype=int)
    for i in range(n):
        t, state = 0, rng.integers(3)
        while t < T:
            length = rng.integers(30, 80)
            state = (state + rng.integers(1, 3)) % 3
            y[i, t : t + length] = state
            t += length
        phase = np.cumsum(2 * np.pi * _REGIME_FREQUENCIES[y[i]]) + rng.uniform(0, 2 * np.pi)
        X[i, :, 0] = _REGIME_MEANS[y[i]] + np.sin(phase) + 0.2 * rng.normal(size=T)
    return X, y


def test_learns_regime_segmentation():
    X, y = _regimes(64, 200, seed=0)
    X_test, y_test = _regimes(32, 200, seed=1)
    # Without memory (a tree on the current value) the regimes are hard to tell.
    tree = DecisionTreeClassifier(max_depth=4, random_state=0)
    tree.fit(X.reshape(-1, 1), y.ravel())
    memoryless = tree.score(X_test.reshape(-1, 1), y_test.ravel())
    assert memoryless < 0.8                        # measured 0.64
    clf = RNNStepClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.02,
                            batch_size=16, max_iter=30, random_state=0).fit(X, y)
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.score(X_test, y_test) >= 0.95       # measured 0.974 (seeds 0-2: >= 0.973)
    pred = clf.predict(X_test)
    assert pred.shape == y_test.shape
    assert np.mean(pred == y_test) == pytest.approx(clf.score(X_test, y_test), abs=1e-12)


# Python source that ships with every interpreter.
_TEXT_MODULES = ("textwrap", "string", "heapq", "bisect", "fnmatch", "shlex")


def _character_data(block=1000):
    """One-hot characters in, the next character's index out. The text is cut
    into blocks of `block` characters: every 5th is held out (one test
    sequence each), the others are joined into 4 long training sequences."""
    try:
        text = "".join(inspect.getsource(importlib.import_module(m)) for m in _TEXT_MODULES)
    except (OSError, TypeError):                 # a Python without its sources
        pytest.skip("the standard library's source files are not installed")
    blocks = [text[i : i + block + 1] for i in range(0, len(text) - block - 1, block)]
    train = "".join(b[:-1] for i, b in enumerate(blocks) if i % 5 != 4)
    held_out = [b for i, b in enumerate(blocks) if i % 5 == 4]
    chars, counts = np.unique(list(train), return_counts=True)
    vocab = {c: i + 1 for i, c in enumerate(chars[counts >= 3])}   # 0: any other

    def encode(s):
        return np.array([vocab.get(c, 0) for c in s])

    one_hot = np.eye(len(vocab) + 1)
    codes = encode(train)
    n_seq = 4
    L = (len(codes) - 1) // n_seq
    X = np.stack([one_hot[codes[i * L : (i + 1) * L]] for i in range(n_seq)])
    y = np.stack([codes[i * L + 1 : (i + 1) * L + 1] for i in range(n_seq)])
    test = np.stack([encode(b) for b in held_out])
    return X, y, one_hot[test[:, :-1]], test[:, 1:]


def test_character_model_with_truncated_bptt():
    X, y, X_test, y_test = _character_data()
    assert X.shape[0] == 4 and X.shape[1] > 10_000           # 4 long sequences
    freq = np.bincount(y_test.ravel()) / y_test.size
    freq = freq[freq > 0]
    unigram_entropy = -np.sum(freq * np.log(freq))   # the best a frequency model does
    clf = RNNStepClassifier(hidden_layer_sizes=(64,), bptt_truncate=50, batch_size=4,
                            max_iter=3, random_state=0).fit(X, y)
    assert np.all(np.isfinite(clf.loss_curve_))
    log_proba = clf.predict_log_proba(X_test)
    assert log_proba.shape == X_test.shape[:2] + (len(clf.classes_),)
    columns = np.searchsorted(clf.classes_, y_test)
    assert_array_equal(clf.classes_[columns], y_test)          # all seen at fit
    cross_entropy = -np.mean(np.take_along_axis(log_proba, columns[..., None], axis=2))
    # Measured: unigram 3.05 nats, model 1.85 nats (ratio 0.61).
    assert cross_entropy < 0.7 * unigram_entropy
    # The same numbers through predict_proba, to float32 rounding (measured
    # 2.4e-6 apart at most).
    proba = clf.predict_proba(X_test[:2])
    assert proba.dtype == log_proba.dtype == np.float64            # X's dtype
    assert_allclose(np.log(proba), log_proba[:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_learns_delay_lines(n_outputs):
    # The input 3 steps ago; or the inputs 2 and 4 steps ago (2 outputs).
    def data(n, seed):
        X = np.random.default_rng(seed).normal(size=(n, 40, 1))
        if n_outputs == 1:
            return X, _delayed(X[:, :, 0], 3)
        return X, np.stack([_delayed(X[:, :, 0], 2), _delayed(X[:, :, 0], 4)], axis=2)

    X, y = data(128, 0)
    X_test, y_test = data(64, 1)
    reg = RNNStepRegressor(hidden_layer_sizes=(32,), batch_size=32, max_iter=20,
                           learning_rate_init=0.01, random_state=0).fit(X, y)
    assert reg.n_outputs_ == n_outputs
    pred = reg.predict(X_test)
    assert pred.shape == y_test.shape
    # Measured 0.988 and 0.989 (random_state 0-2: >= 0.987); at the default
    # learning_rate_init=0.003, 20 epochs reach 0.63 and 0.72.
    assert reg.score(X_test, y_test) >= 0.9
    flat = (len(pred) * 40, n_outputs)
    assert reg.score(X_test, y_test) == pytest.approx(
        r2_score(y_test.reshape(flat), pred.reshape(flat)), rel=1e-12)


def test_learns_a_delay_line_on_one_long_stream_with_truncation():
    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(1, 4000, 1)), rng.normal(size=(1, 2000, 1))
    reg = RNNStepRegressor(hidden_layer_sizes=(16,), bptt_truncate=20, max_iter=5,
                           random_state=0).fit(X, _delayed(X[:, :, 0], 2))
    assert reg.t_ == 5                                    # one sequence per epoch
    assert reg.loss_curve_[-1] < 0.1 * reg.loss_curve_[0]
    assert reg.score(X_test, _delayed(X_test[:, :, 0], 2)) >= 0.9   # measured 0.996


def test_auto_patience_counts_each_truncation_window_as_a_step():
    # One stream of 40 steps in windows of 4: 10 optimizer steps per epoch,
    # so n_iter_no_change="auto" allows ceil(200 / 10) = 20 epochs. tol so
    # large that no epoch after the first improves: a constant rate stops
    # after 1 + 21 epochs.
    X = np.random.default_rng(0).normal(size=(1, 40, 1))
    reg = RNNStepRegressor(cell="rnn", hidden_layer_sizes=(4,), bptt_truncate=4,
                           max_iter=500, learning_rate="constant", tol=10.0,
                           random_state=0).fit(X, _delayed(X[:, :, 0], 1))
    assert reg._optimizer.t == 10 * reg.n_iter_
    assert reg.n_iter_ == 22


def test_bidirectional_sees_the_future():
    # Label: the sign of the NEXT input: only a bidirectional net can know it.
    def data(n, seed):
        X = np.random.default_rng(seed).normal(size=(n, 12, 1))
        y = (X[:, :, 0] > 0).astype(int)
        y[:, :-1] = y[:, 1:]
        return X, y

    X, y = data(200, 0)
    X_test, y_test = data(100, 1)
    params = dict(cell="rnn", hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    forward = RNNStepClassifier(**params).fit(X, y)
    both = RNNStepClassifier(**params, bidirectional=True).fit(X, y)
    assert forward.score(X_test, y_test) < 0.65              # measured 0.51
    assert both.score(X_test, y_test) >= 0.9                 # measured 0.97
    assert both.weights_["weight_out"].shape == (2, 32)
    assert "weight_hh_l0_reverse" in both.weights_


@pytest.mark.parametrize("bptt_truncate", [None, 4])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_stacked_learns_a_running_sign(cell, bptt_truncate):
    X, y = _steps(n=100, T=12)
    X_test, y_test = _steps(n=100, T=12, seed=1)
    clf = RNNStepClassifier(cell=cell, hidden_layer_sizes=(8, 8), max_iter=30,
                            bptt_truncate=bptt_truncate, random_state=0).fit(X, y)
    # The current input alone (its sign) is right at about 2/3 of the steps.
    assert np.mean((X_test[:, :, 0] > 0) == y_test) < 0.75
    assert clf.score(X_test, y_test) >= 0.85                  # measured 0.92-0.95


# -- memory of one long stream ----------------------------------------------------
_MEMORY_PROBE = r"""
import json, sys, warnings
import numpy as np
from cbptt import RNNStepClassifier

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

def peak_increase(func):
    # MiB above the resident memory before the call, at the call's peak.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                       # resets VmHWM to VmRSS
    before = status("VmRSS")
    result = func()
    return (status("VmHWM") - before) / 2**20, result

warnings.simplefilter("ignore")
T, full_bptt_too = int(sys.argv[1]), sys.argv[2] == "1"
rng = np.random.default_rng(0)
X = rng.normal(size=(1, T, 4)).astype(np.float32)  # the dtype it trains in: no copy
y = np.zeros((1, T), dtype=np.intp)
y[:, 1:] = X[:, :-1, 0] > 0                # the sign of the previous input
params = dict(hidden_layer_sizes=(32,), max_iter=1, random_state=0, n_threads=1)
RNNStepClassifier(bptt_truncate=50, **params).fit(X[:, :500], y[:, :500])  # warm-up
clf = RNNStepClassifier(bptt_truncate=50, **params)
out = {}
out["fit"], _ = peak_increase(lambda: clf.fit(X, y))
out["predict"], proba = peak_increase(lambda: clf.predict_proba(X))
out["proba_shape"] = list(proba.shape)
out["proba_mib"] = proba.nbytes / 2**20
out["accuracy"] = float(np.mean(np.argmax(proba[0], axis=1) == y[0]))
out.update(loss_curve=clf.loss_curve_, t=clf.t_, n_iter=clf.n_iter_,
           finite=bool(all(np.all(np.isfinite(w)) for w in clf.weights_.values())))
del proba
if full_bptt_too:
    full = RNNStepClassifier(**params)
    out["full_fit"], _ = peak_increase(lambda: full.fit(X, y))
print(json.dumps(out))
"""


def _memory_probe(T, full_bptt_too):
    # A fixed mmap threshold makes glibc hand large blocks back to the system
    # when freed, so a later peak is not hidden in memory freed before.
    # cwd: outside the source tree, whose cbptt/ would shadow the installed
    # package.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(T),
                           str(int(full_bptt_too))], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _can_reset_peak_memory():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            return "VmHWM:" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_memory(),
                    reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_long_stream_memory_does_not_grow_with_its_length():
    # One float32 stream of T steps, 4 features, GRU of 32 units,
    # bptt_truncate=50.
    short = _memory_probe(25_000, full_bptt_too=True)
    long = _memory_probe(100_000, full_bptt_too=False)
    # The probe sees stored activations: full BPTT of the 25,000 steps adds
    # ~38 MiB (~150 MiB at 100,000 steps).
    assert short["full_fit"] > 25, short
    # Truncated: measured +0.4 MiB at 25,000 steps, +2.0 MiB at 100,000 (the
    # O(T) targets and masks); activations of every step would add > 100 MiB.
    assert long["fit"] - short["fit"] < 16, (short, long)
    assert long["fit"] < 16, long
    # It trained: one sequence seen, finite loss and weights, and it learned
    # the sign of the previous input (measured 0.997).
    for run in (short, long):
        assert run["n_iter"] == 1 and run["t"] == 1, run
        assert len(run["loss_curve"]) == 1 and np.isfinite(run["loss_curve"][0]), run
        assert run["finite"], run
        assert run["accuracy"] > 0.9, run
    # Predicting the stream needs the (T, 2) output and bounded scratch: the
    # top layer's states of every step would be another T * 32 * 4 bytes
    # (12 MiB at 100,000 steps). Measured: the output's size plus < 0.01 MiB.
    assert long["proba_shape"] == [1, 100_000, 2]
    assert long["predict"] - long["proba_mib"] < 4, long
    scratch = [run["predict"] - run["proba_mib"] for run in (short, long)]
    assert scratch[1] - scratch[0] < 4, (short, long)


# -- input and output forms ---------------------------------------------------------
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_ragged_list_in_list_out(Estimator):
    X, labels, values = _ragged()
    y = _targets(Estimator, labels, values)
    est = Estimator(**FAST).fit(X, y)
    assert est.n_features_in_ == 2
    pred = est.predict(X)
    assert isinstance(pred, list) and len(pred) == len(X)
    for p, target in zip(pred, y):
        assert p.shape == np.shape(target)
    # As a padded array: the same values at the valid steps, one by one too.
    padded = est.predict(_pad(X))
    assert isinstance(padded, np.ndarray) and padded.shape[:2] == (len(X), max(map(len, X)))
    for i, (p, x) in enumerate(zip(pred, X)):
        assert_allclose(p, est.predict([x])[0], rtol=1e-12, atol=1e-14)
        if len(x) == padded.shape[1]:
            assert_allclose(p, padded[i], rtol=1e-12, atol=1e-14)
        # Steps after a sequence ends never change its earlier predictions.
        assert_allclose(p, padded[i, : len(x)], rtol=1e-12, atol=1e-14)
    # Sequences longer and shorter than any seen at fit.
    rng = np.random.default_rng(1)
    others = [rng.normal(size=(1, 2)), rng.normal(size=(30, 2))]
    assert [p.shape[0] for p in est.predict(others)] == [1, 30]
    assert est.predict(tuple(others))[1].shape[0] == 30


def test_classifier_probabilities_in_the_form_of_x():
    X, labels, _ = _ragged()
    clf = RNNStepClassifier(**FAST).fit(X, labels)
    proba = clf.predict_proba(X)
    log_proba = clf.predict_log_proba(X)
    pred = clf.predict(X)
    assert isinstance(proba, list) and isinstance(log_proba, list)
    for x, p, lp, labels_i in zip(X, proba, log_proba, pred):
        assert p.shape == (len(x), 2) and lp.shape == (len(x), 2)
        assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        assert_allclose(lp, np.log(p), rtol=1e-10, atol=1e-12)
        assert_array_equal(labels_i, clf.classes_[np.argmax(p, axis=1)])
    X3, y3 = _steps()
    clf3 = RNNStepClassifier(**FAST).fit(X3, y3)
    assert clf3.predict_proba(X3).shape == (40, 8, 2)
    assert clf3.predict_log_proba(X3).shape == (40, 8, 2)
    assert clf3.predict(X3).shape == (40, 8)


def test_string_labels_per_step():
    X, y = _steps(n=30)
    names = np.array(["calm", "rise", "storm"])
    labels = names[(y + (X[:, :, 1] > 1)).clip(max=2)]
    clf = RNNStepClassifier(**FAST).fit(X, labels)
    assert_array_equal(clf.classes_, ["calm", "rise", "storm"])
    pred = clf.predict(X)
    assert pred.shape == (30, 8) and set(np.unique(pred)) <= set(names)
    assert clf.predict_proba(X).shape == (30, 8, 3)
    assert clf.score(X, labels) == pytest.approx(np.mean(pred == labels), abs=1e-12)


def test_2d_input_is_univariate():
    X, y = _steps(D=1)
    a = RNNStepClassifier(**FAST).fit(X[:, :, 0], y)
    b = RNNStepClassifier(**FAST).fit(X, y)
    assert a.n_features_in_ == 1
    assert _weights_equal(a.weights_, b.weights_)
    assert a.predict(X[:, :, 0]).shape == (40, 8)
    assert_array_equal(a.predict_proba(X[:, :, 0]), b.predict_proba(X))


@pytest.mark.parametrize("Estimator, fill", [
    (RNNStepClassifier, -1), (RNNStepClassifier, np.nan), (RNNStepRegressor, np.nan),
    (RNNStepRegressor, 1e300),
])
def test_array_y_aligned_with_ragged_x_equals_list_y(Estimator, fill):
    # Entries of y past a sequence's length are ignored, whatever they hold.
    X, labels, values = _ragged()
    y = _targets(Estimator, labels, values)
    from_list = Estimator(**FAST).fit(X, y)
    from_array = Estimator(**FAST).fit(X, _pad(y, fill=fill))
    assert _weights_equal(from_list.weights_, from_array.weights_)
    assert from_list.loss_curve_ == from_array.loss_curve_
    if Estimator is RNNStepClassifier:
        assert_array_equal(from_array.classes_, [0, 1])
    assert from_array.score(X, _pad(y, fill=fill)) == pytest.approx(
        from_list.score(X, y), rel=1e-12)


def test_regressor_one_output_or_several():
    X, _, values = _ragged()
    one = RNNStepRegressor(**FAST).fit(X, [v[:, 0] for v in values])
    column = RNNStepRegressor(**FAST).fit(X, [v[:, :1] for v in values])
    two = RNNStepRegressor(**FAST).fit(X, values)
    assert one.n_outputs_ == column.n_outputs_ == 1 and two.n_outputs_ == 2
    assert one.predict(X)[3].shape == (len(X[3]),)
    assert column.predict(X)[3].shape == (len(X[3]), 1)
    assert two.predict(X)[3].shape == (len(X[3]), 2)
    assert _weights_equal(one.weights_, column.weights_)
    X3 = _pad(X)[:, :2]                       # every sequence has >= 2 steps
    assert one.predict(X3).shape == (30, 2)
    assert column.predict(X3).shape == (30, 2, 1)
    assert two.predict(X3).shape == (30, 2, 2)
    assert two.weights_["weight_out"].shape == (2, 8)


def test_score_is_over_every_valid_step_with_sequence_weights():
    X, labels, values = _ragged()
    w = np.random.default_rng(2).uniform(0.5, 3, size=len(X))
    clf = RNNStepClassifier(**FAST).fit(X, labels)
    correct = np.concatenate([p == t for p, t in zip(clf.predict(X), labels)])
    step_w = np.concatenate([np.full(len(x), wi) for x, wi in zip(X, w)])
    assert clf.score(X, labels) == pytest.approx(correct.mean(), abs=1e-12)
    assert clf.score(X, labels, sample_weight=w) == pytest.approx(
        np.average(correct, weights=step_w), abs=1e-12)
    reg = RNNStepRegressor(**FAST).fit(X, values)
    pred = np.concatenate(reg.predict(X))
    truth = np.concatenate(values)
    assert reg.score(X, values) == pytest.approx(r2_score(truth, pred), rel=1e-12)
    assert reg.score(X, values, sample_weight=w) == pytest.approx(
        r2_score(truth, pred, sample_weight=step_w), rel=1e-12)


# -- the loss, exactly ----------------------------------------------------------------
def _sequence_args(X, y, Estimator):
    """Padded X, per-step y as loss_and_grad reads it, lengths."""
    lengths = np.array([len(x) for x in X])
    if Estimator is RNNStepClassifier:
        return _pad(X), _pad(y, fill=-1, dtype=int), lengths
    return _pad(X), _pad(y, fill=np.nan), lengths


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_one_sgd_step_equals_loss_and_grad(Estimator, alpha):
    # Full batch, no shuffle, no momentum, no clipping: one epoch is one step
    # params - lr * (grad + alpha / sum_i w_i T_i * W) from the weights of the
    # previous (warm-started) fit; its loss_curve_ entry is the loss there.
    X, labels, values = _ragged(n=9, max_len=7)
    y = _targets(Estimator, labels, values)
    w = np.random.default_rng(3).uniform(0.5, 2, size=len(X))
    lr = 0.5
    est = Estimator(cell="lstm", hidden_layer_sizes=(5, 4), solver="sgd", momentum=0.0,
                    alpha=alpha, clip_norm=None, batch_size=len(X), shuffle=False,
                    learning_rate_init=lr, max_iter=1, random_state=0, warm_start=True,
                    dtype="float64")
    est.fit(X, y, sample_weight=w)
    before = _copy_weights(est.weights_)
    est.fit(X, y, sample_weight=w)
    loss_name = "cross_entropy" if Estimator is RNNStepClassifier else "squared_error"
    Xp, yp, lengths = _sequence_args(X, y, Estimator)
    loss, grads = loss_and_grad(before, Xp, yp, lengths=lengths, cell="lstm",
                                output="sequence", loss=loss_name, sample_weight=w)
    n_steps = float(np.dot(w, lengths))
    penalty = sum(np.sum(v ** 2) for k, v in before.items() if k.startswith("weight"))
    assert est.loss_curve_[-1] == pytest.approx(loss + alpha / (2 * n_steps) * penalty,
                                                rel=1e-12)
    assert est.n_iter_ == 2
    for name, value in before.items():
        step = grads[name] + (alpha / n_steps * value if name.startswith("weight") else 0)
        assert np.max(np.abs(step)) > 1e-5, name      # the step is visible
        assert_allclose(est.weights_[name] - value, -lr * step, rtol=1e-9, atol=1e-15,
                        err_msg=name)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_loss_at_the_fitted_weights_is_the_weighted_mean_over_steps(Estimator):
    # sum_i w_i sum_t l_it / sum_i w_i T_i, from the estimator's own predictions.
    X, labels, values = _ragged(n=12)
    y = _targets(Estimator, labels, values)
    w = np.random.default_rng(4).uniform(0.5, 3, size=len(X))
    est = Estimator(**{**FAST, "cell": "gru"}, dtype="float64").fit(X, y)
    loss_name = "cross_entropy" if Estimator is RNNStepClassifier else "squared_error"
    Xp, yp, lengths = _sequence_args(X, y, Estimator)
    loss, _ = loss_and_grad(est.weights_, Xp, yp, lengths=lengths, cell="gru",
                            output="sequence", loss=loss_name, sample_weight=w)
    if Estimator is RNNStepClassifier:
        step_losses = [-lp[np.arange(len(t)), t]
                       for lp, t in zip(est.predict_log_proba(X), y)]
    else:
        step_losses = [np.sum((p - t) ** 2, axis=1) / (2 * t.shape[1])
                       for p, t in zip(est.predict(X), y)]
    expected = sum(wi * l.sum() for wi, l in zip(w, step_losses)) / np.dot(w, lengths)
    assert loss == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("bptt_truncate", [None, 3])
def test_integer_sample_weight_equals_repeated_sequences(Estimator, bptt_truncate):
    X, labels, values = _ragged(n=6)
    y = _targets(Estimator, labels, values)
    w = np.array([2, 1, 0, 1, 3, 1])
    repeat = np.repeat(np.arange(len(X)), w)
    # One minibatch ("auto" takes all of fewer than 16 samples); float64 for
    # the 1e-10 comparison.
    params = dict(FAST, shuffle=False, bptt_truncate=bptt_truncate, dtype="float64")
    weighted = Estimator(**params).fit(X, y, sample_weight=w)
    repeated = Estimator(**params).fit([X[i] for i in repeat], [y[i] for i in repeat])
    assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-10)
    for name in weighted.weights_:
        assert_allclose(weighted.weights_[name], repeated.weights_[name], rtol=1e-8,
                        atol=1e-10, err_msg=name)
    unweighted = Estimator(**params).fit(X, y)
    assert not np.allclose(weighted.loss_curve_, unweighted.loss_curve_)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_truncation_at_least_as_long_as_the_sequences_is_full_bptt(Estimator):
    X, labels, values = _ragged(max_len=7)
    y = _targets(Estimator, labels, values)
    full = Estimator(**FAST).fit(X, y)
    one_window = Estimator(**FAST, bptt_truncate=7).fit(X, y)
    windows = Estimator(**FAST, bptt_truncate=2).fit(X, y)
    assert _weights_equal(full.weights_, one_window.weights_)
    assert full.loss_curve_ == one_window.loss_curve_
    assert not np.allclose(full.weights_["weight_hh_l0"], windows.weights_["weight_hh_l0"])


def test_loss_and_grad_with_windows():
    # Windows of k steps: the same forward pass and loss, the same gradient
    # of the head; the recurrent gradient is cut at the window boundaries.
    X, labels, _ = _ragged(n=8, min_len=4, max_len=4)
    Xp, yp, lengths = _sequence_args(X, labels, RNNStepClassifier)
    clf = RNNStepClassifier(**FAST).fit(X, labels)
    whole, g_whole = loss_and_grad(clf.weights_, Xp, yp, output="sequence")
    trunc, g_trunc = loss_and_grad(clf.weights_, Xp, yp, output="sequence", bptt_truncate=2)
    assert trunc == pytest.approx(whole, rel=1e-12)          # the forward pass is whole
    assert not np.allclose(g_trunc["weight_hh_l0"], g_whole["weight_hh_l0"])
    assert_allclose(g_trunc["weight_out"], g_whole["weight_out"], rtol=1e-10)
    # Windows of k >= T steps are full BPTT.
    _, g_long = loss_and_grad(clf.weights_, Xp, yp, output="sequence", bptt_truncate=4)
    for name in g_whole:
        assert_allclose(g_long[name], g_whole[name], rtol=1e-12, atol=1e-15)


# -- training options -----------------------------------------------------------------
def test_partial_fit_classifier():
    X, y = _steps()
    clf = RNNStepClassifier(**{**FAST, "max_iter": 1})
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    assert not hasattr(clf, "weights_")
    clf.partial_fit(X, y, classes=[0, 1, 2])       # 2 is absent from this batch
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict_proba(X).shape == (40, 8, 3)
    for expected in range(2, 6):
        clf.partial_fit(X, y)
        assert clf.n_iter_ == expected
    assert clf.t_ == 5 * len(X) and len(clf.loss_curve_) == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match=r"labels \[7\] not in classes_"):
        clf.partial_fit(X, np.where(y == 1, 7, 0))
    assert clf.n_iter_ == 5                          # the failed call trained nothing
    with pytest.raises(ValueError, match="differs from the classes"):
        clf.partial_fit(X, y, classes=[0, 1])


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_partial_fit_repeated_equals_fit_without_shuffling(Estimator):
    X, labels, values = _ragged()
    y = _targets(Estimator, labels, values)
    params = dict(FAST, shuffle=False, batch_size=8)
    fitted = Estimator(**params).fit(X, y)
    stepped = Estimator(**params)
    extra = {"classes": [0, 1]} if Estimator is RNNStepClassifier else {}
    stepped.partial_fit(X, y, **extra)
    for _ in range(FAST["max_iter"] - 1):
        stepped.partial_fit(X, y)
    assert _weights_equal(stepped.weights_, fitted.weights_)
    assert stepped.loss_curve_ == fitted.loss_curve_


def test_partial_fit_regressor():
    X, _, values = _ragged()
    reg = RNNStepRegressor(**FAST).partial_fit(X, values)
    assert reg.n_outputs_ == 2 and reg.n_iter_ == 1
    reg.partial_fit(X[:10], values[:10])
    assert reg.n_iter_ == 2 and reg.t_ == len(X) + 10
    with pytest.raises(ValueError, match="1 output.*trained on 2"):
        reg.partial_fit(X, [v[:, 0] for v in values])
    assert reg.n_iter_ == 2


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_warm_start_continues(Estimator):
    X, labels, values = _ragged()
    y = _targets(Estimator, labels, values)
    est = Estimator(**{**FAST, "max_iter": 2}, warm_start=True).fit(X, y)
    first, curve = _copy_weights(est.weights_), list(est.loss_curve_)
    est.set_params(max_iter=1).fit(X, y)
    assert est.n_iter_ == 3 and est.loss_curve_[:2] == curve and len(est.loss_curve_) == 3
    assert not _weights_equal(est.weights_, first)
    restarted = clone(est).set_params(warm_start=False, max_iter=3).fit(X, y)
    again = clone(restarted).fit(X, y)
    assert restarted.n_iter_ == 3
    assert _weights_equal(restarted.weights_, again.weights_)
    assert not _weights_equal(restarted.weights_, est.weights_)


# Early stopping needs 20 validation sequences: 40 copies of one sequence,
# half held out, and one minibatch of the 20 others per epoch; a constant
# rate, so that it stops rather than lowers the rate.
_ONE_SEQUENCE_ES = dict(cell="rnn", hidden_layer_sizes=(8,), early_stopping=True,
                        validation_fraction=0.5, batch_size=20, learning_rate="constant",
                        max_iter=15, random_state=0)


def test_early_stopping_keeps_the_best_weights_classifier():
    # Every sequence is the same: the validation score is the score on X.
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(1, 30, 2)), 40, axis=0)
    y = np.repeat((np.cumsum(X[:1, :, 0], axis=1) > 0).astype(int), 40, axis=0)
    clf = RNNStepClassifier(**_ONE_SEQUENCE_ES, learning_rate_init=0.5).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ == len(clf.loss_curve_)
    assert all(0 <= s <= 1 for s in scores)
    # Per-step accuracies of identical 30-step sequences are multiples of
    # 1/30; per-sequence ones would be 0 or 1.
    assert_allclose(np.array(scores) * 30, np.round(np.array(scores) * 30), atol=1e-9)
    assert any(0 < s < 1 for s in scores)
    assert clf.best_validation_score_ == max(scores)
    assert scores[-1] < clf.best_validation_score_     # the last epoch was worse
    # (measured 0.8 < 0.867) ...
    assert clf.score(X, y) == clf.best_validation_score_   # ... its weights not kept
    assert clf.best_loss_ is None


def test_early_stopping_keeps_the_best_weights_regressor():
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(1, 30, 1)), 40, axis=0)
    y = _delayed(X[:, :, 0], 2)
    # float64: the score is compared to 1e-10.
    reg = RNNStepRegressor(**_ONE_SEQUENCE_ES, learning_rate_init=0.1,
                           dtype="float64").fit(X, y)
    scores = reg.validation_scores_
    assert len(scores) == reg.n_iter_
    assert all(s <= 1 for s in scores) and max(scores) > 0.5
    assert reg.best_validation_score_ == max(scores)
    assert scores[-1] < reg.best_validation_score_ - 1e-3   # measured 0.846 < 0.851
    assert reg.score(X, y) == pytest.approx(reg.best_validation_score_, rel=1e-10)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_verbose_prints_one_line_per_iteration(capsys, early_stopping):
    X, y = _steps()
    # Half of the 40 sequences: the 20 that early stopping needs to score.
    clf = RNNStepClassifier(**FAST, verbose=True, early_stopping=early_stopping,
                            validation_fraction=0.5).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == clf.n_iter_ == 3
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"Iteration {i}, loss = ")
        assert ("validation score" in line) == early_stopping


def test_dropout_between_stacked_layers_trains():
    X, y = _steps()
    clf = RNNStepClassifier(**{**FAST, "hidden_layer_sizes": (8, 8)}, dropout=0.3).fit(X, y)
    assert np.all(np.isfinite(clf.loss_curve_))
    again = clone(clf).fit(X, y)
    assert _weights_equal(clf.weights_, again.weights_)       # seeded by random_state


# -- persistence, parameters, determinism, dtypes, weights -----------------------------
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_pickle_round_trip(Estimator):
    X, labels, values = _ragged()
    est = Estimator(**FAST).fit(X, _targets(Estimator, labels, values))
    loaded = pickle.loads(pickle.dumps(est))
    assert _weights_equal(loaded.weights_, est.weights_)
    for a, b in zip(loaded.predict(X), est.predict(X)):
        assert_array_equal(a, b)
    if Estimator is RNNStepClassifier:
        for a, b in zip(loaded.predict_proba(X), est.predict_proba(X)):
            assert_array_equal(a, b)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_clone_and_params(Estimator):
    est = Estimator(**FAST, bptt_truncate=5)
    params = est.get_params()
    assert "pooling" not in params
    assert params["bptt_truncate"] == 5 and params["cell"] == "rnn"
    assert params.keys() == set(inspect.signature(Estimator).parameters)
    X, labels, values = _ragged()
    est.fit(X, _targets(Estimator, labels, values))
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert not hasattr(cloned, "weights_")
    with pytest.raises(NotFittedError):
        cloned.predict(X)
    assert est.set_params(hidden_layer_sizes=(3,)) is est
    assert est.get_params()["hidden_layer_sizes"] == (3,)
    with pytest.raises(ValueError, match="Invalid parameter 'pooling'"):
        est.set_params(pooling="mean")
    with pytest.raises(TypeError, match="pooling"):
        Estimator(pooling="last")


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("bptt_truncate", [None, 3])
def test_thread_count_does_not_change_the_result(Estimator, bptt_truncate):
    # 150 ragged sequences in batches of 96 rows: several chunks per minibatch,
    # a short last batch, and windows that some rows have already left.
    X, labels, values = _ragged(n=150, min_len=1, max_len=10)
    y = _targets(Estimator, labels, values)
    params = dict(FAST, batch_size=96, bptt_truncate=bptt_truncate)
    one = Estimator(**params, n_threads=1).fit(X, y)
    two = Estimator(**params, n_threads=2).fit(X, y)
    assert _weights_equal(one.weights_, two.weights_)
    assert one.loss_curve_ == two.loss_curve_
    for a, b in zip(one.predict(X), two.predict(X)):
        assert_array_equal(a, b)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("X_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_decides_the_precision_and_x_the_outputs(Estimator, dtype, X_dtype):
    # The network trains in `dtype` whatever X holds; per-step outputs come
    # back in X's dtype, in arrays and in lists of sequences alike.
    X, y = _steps(dtype=X_dtype)
    target = y if Estimator is RNNStepClassifier else X[:, :, 0] * 2
    est = Estimator(**FAST, dtype=dtype).fit(X, target)
    assert all(w.dtype == np.dtype(dtype) for w in est.weights_.values())
    method = "predict_proba" if Estimator is RNNStepClassifier else "predict"
    out = getattr(est, method)(X)
    assert out.dtype == X_dtype and np.all(np.isfinite(out))
    assert all(o.dtype == X_dtype for o in getattr(est, method)(list(X)))
    assert np.all(np.isfinite(est.loss_curve_))


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_float64_data_trains_the_float32_model_of_its_cast(Estimator):
    X, y = _steps()
    target = y if Estimator is RNNStepClassifier else X[:, :, 0] * 2
    from64 = Estimator(**FAST).fit(X, target)
    from32 = Estimator(**FAST).fit(X.astype(np.float32), target)
    assert _weights_equal(from64.weights_, from32.weights_)
    assert from64.loss_curve_ == from32.loss_curve_
    # partial_fit goes on in the precision of the first fit with either dtype.
    from32.partial_fit(X, target)
    assert all(w.dtype == np.float32 for w in from32.weights_.values())
    assert from32.n_iter_ == FAST["max_iter"] + 1


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weights_have_pytorch_names_and_shapes(cell):
    X, y = _steps(n=30, D=3)
    y = y + (X[:, :, 1] > 1)                                   # 3 classes
    H1, H2, D, C, G = 5, 4, 3, 3, N_GATES[cell]
    clf = RNNStepClassifier(cell=cell, hidden_layer_sizes=(H1, H2), max_iter=2,
                            random_state=0).fit(X, y)
    expected = {
        "weight_ih_l0": (G * H1, D), "weight_hh_l0": (G * H1, H1),
        "bias_ih_l0": (G * H1,), "bias_hh_l0": (G * H1,),
        "weight_ih_l1": (G * H2, H1), "weight_hh_l1": (G * H2, H2),
        "bias_ih_l1": (G * H2,), "bias_hh_l1": (G * H2,),
        "weight_out": (C, H2), "bias_out": (C,),
    }
    assert list(clf.weights_) == list(expected)
    assert {k: v.shape for k, v in clf.weights_.items()} == expected
    assert clf.predict_proba(X).shape == (30, 8, 3)
    bi = RNNStepRegressor(cell=cell, hidden_layer_sizes=(H1, H2), bidirectional=True,
                          max_iter=2, random_state=0).fit(X, X[:, :, :2])
    assert bi.weights_["weight_ih_l1"].shape == (G * H2, 2 * H1)
    assert bi.weights_["weight_hh_l1_reverse"].shape == (G * H2, H2)
    assert bi.weights_["weight_out"].shape == (2, 2 * H2)
    assert bi.predict(X).shape == (30, 8, 2)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_bidirectional_with_truncation_is_refused(Estimator):
    X, y = _steps()
    est = Estimator(**FAST, bidirectional=True, bptt_truncate=4)
    with pytest.raises(ValueError, match="bidirectional"):
        est.fit(X, y)
    assert not hasattr(est, "weights_")


# -- scikit-learn tools --------------------------------------------------------------
def _scaled_pipeline(scale, **params):
    # Scale each feature of every step; a partial of a ufunc pickles for workers.
    return make_pipeline(FunctionTransformer(functools.partial(np.multiply, scale)),
                         RNNStepClassifier(**{**FAST, **params}))


def test_pipeline_with_a_3d_step_equals_manual_steps():
    X, y = _steps()
    scale = np.array([0.5, 3.0])
    pipe = _scaled_pipeline(scale).fit(X, y)
    manual = RNNStepClassifier(**FAST).fit(X * scale, y)
    assert _weights_equal(pipe[-1].weights_, manual.weights_)
    assert_array_equal(pipe.predict(X), manual.predict(X * scale))
    assert_array_equal(pipe.predict_proba(X), manual.predict_proba(X * scale))
    assert pipe.score(X, y) == manual.score(X * scale, y)


def test_grid_search_and_cross_val_score_use_the_per_step_score():
    X, y = _steps(n=60)
    pipe = _scaled_pipeline(np.array([1.0, 2.0]))
    grid = GridSearchCV(pipe, {"rnnstepclassifier__hidden_layer_sizes": [(4,), (8,)]},
                        cv=2, n_jobs=2).fit(X, y)
    assert grid.best_params_["rnnstepclassifier__hidden_layer_sizes"] in [(4,), (8,)]
    assert grid.best_estimator_.predict(X).shape == (60, 8)
    # Worker processes give what cross_val_score computes in this one.
    for i, params in enumerate(grid.cv_results_["params"]):
        scores = cross_val_score(clone(pipe).set_params(**params), X, y, cv=2)
        assert grid.cv_results_["mean_test_score"][i] == pytest.approx(scores.mean(),
                                                                       abs=1e-12)
        # Per-step accuracies of 30 sequences x 8 steps.
        assert_allclose(scores * 240, np.round(scores * 240), atol=1e-9)
        assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_cross_val_score_with_ragged_lists(Estimator):
    X, labels, values = _ragged(n=40)
    y = _targets(Estimator, labels, values)
    scores = cross_val_score(Estimator(**FAST), X, y, cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores)) and np.all(scores <= 1)
    # The first fold's score is the per-step score of a model fit on the second.
    second = Estimator(**FAST).fit(X[20:], y[20:])
    assert scores[0] == pytest.approx(second.score(X[:20], y[:20]), abs=1e-12)


# -- bad input --------------------------------------------------------------------------
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
        assert_array_equal(value, before)          # NaN == NaN here
        assert np.asarray(value).dtype == before.dtype


def _raises_unchanged(exc, match, func, *args, **kwargs):
    """func(*args, **kwargs) raises exc matching `match`; the args are unchanged."""
    before = [_snapshot(a) for a in args]
    before_kw = {k: _snapshot(v) for k, v in kwargs.items()}
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)
    for a, b in zip(args, before):
        _assert_unchanged(a, b)
    for k, b in before_kw.items():
        _assert_unchanged(kwargs[k], b)


@pytest.fixture(scope="module")
def ragged():
    return _ragged(n=10)


def test_y_list_of_the_wrong_length(ragged):
    X, labels, values = ragged
    _raises_unchanged(ValueError, "X has 10 sequences but y has 9",
                      RNNStepClassifier(**FAST).fit, X, labels[:-1])
    _raises_unchanged(ValueError, "X has 10 sequences but y has 11",
                      RNNStepRegressor(**FAST).fit, X, values + values[:1])


def test_y_sequence_of_the_wrong_length(ragged):
    X, labels, values = ragged
    bad = list(labels)
    bad[3] = bad[3][:-1]
    n = len(X[3])
    _raises_unchanged(ValueError,
                      rf"y\[3\] has shape \({n - 1},\), but X\[3\] has {n} steps",
                      RNNStepClassifier(**FAST).fit, X, bad)
    bad = list(values)
    bad[0] = np.vstack([bad[0], bad[0]])
    _raises_unchanged(ValueError, r"y\[0\] has shape .* one target per step",
                      RNNStepRegressor(**FAST).fit, X, bad)


def test_y_sequences_with_different_numbers_of_outputs(ragged):
    X, _, values = ragged
    bad = list(values)
    bad[2] = bad[2][:, :1]
    _raises_unchanged(ValueError, "same number of outputs", RNNStepRegressor(**FAST).fit,
                      X, bad)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("shape", [(20, 9), (20,), (20, 8, 2, 1)])
def test_y_array_of_the_wrong_shape(Estimator, shape):
    X, _ = _steps(n=20)
    y = np.zeros(shape)
    y.flat[::2] = 1
    _raises_unchanged(ValueError, r"y has shape .*\(20, 8\) or \(20, 8, n_outputs\)",
                      Estimator(**FAST).fit, X, y)


def test_classifier_y_with_several_labels_per_step():
    X, y = _steps(n=20)
    _raises_unchanged(ValueError, "one label per step", RNNStepClassifier(**FAST).fit, X,
                      np.stack([y, 1 - y], axis=2))


def test_classifier_y_with_several_labels_per_step_counts_dimensions():
    X, y = _steps(n=20)
    with pytest.raises(ValueError, match=r"got 1 dimension\(s\) per step"):
        RNNStepClassifier(**FAST).fit(X, y[:, :, np.newaxis])


def test_single_class_over_every_step(ragged):
    X, labels, _ = ragged
    ones = [np.ones(len(x), dtype=int) for x in X]
    _raises_unchanged(ValueError, "at least 2 classes over the steps; got 1 class",
                      RNNStepClassifier(**FAST).fit, X, ones)
    # A second label past the end of every sequence does not count.
    padded = _pad(ones, fill=0, dtype=int)
    _raises_unchanged(ValueError, "at least 2 classes", RNNStepClassifier(**FAST).fit, X,
                      padded)


def test_continuous_labels():
    X, y = _steps(n=20)
    _raises_unchanged(ValueError, "Unknown label type", RNNStepClassifier(**FAST).fit, X,
                      y + 0.5)


def test_unknown_labels_in_partial_fit(ragged):
    X, labels, _ = ragged
    clf = RNNStepClassifier(**FAST).partial_fit(X, labels, classes=[0, 1])
    before = _copy_weights(clf.weights_)
    bad = [np.where(t == 1, 5, t) for t in labels]
    _raises_unchanged(ValueError, r"labels \[5\] not in classes_ \[0, 1\]",
                      clf.partial_fit, X, bad)
    assert _weights_equal(clf.weights_, before) and clf.n_iter_ == 1
    _raises_unchanged(ValueError, "at least 2 labels",
                      RNNStepClassifier(**FAST).partial_fit, X, labels, classes=[1])


@pytest.mark.parametrize("value, words", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_non_finite_regressor_targets_at_valid_steps(ragged, value, words):
    X, _, values = ragged
    bad = [v.copy() for v in values]
    bad[4][1, 0] = value
    _raises_unchanged(ValueError, words, RNNStepRegressor(**FAST).fit, X, bad)
    padded = _pad(values, fill=np.nan)
    padded[4, 1, 0] = value
    _raises_unchanged(ValueError, words, RNNStepRegressor(**FAST).fit, X, padded)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_regressor_targets_too_large_for_float32():
    # The default precision, float32, whatever X's dtype.
    for dtype in [np.float32, np.float64]:
        X, y = _steps(n=20, dtype=dtype)
        _raises_unchanged(ValueError, "too large for float32.*or set dtype='float64'",
                          RNNStepRegressor(**FAST).fit, X, np.full(y.shape, 1e39))
    # In float64 the same targets train.
    reg = RNNStepRegressor(**FAST, dtype="float64").fit(X, np.full(y.shape, 1e39))
    assert reg.weights_["bias_out"].dtype == np.float64


def test_partial_fit_with_a_different_number_of_outputs(ragged):
    X, _, values = ragged
    reg = RNNStepRegressor(**FAST).partial_fit(X, [v[:, 0] for v in values])
    _raises_unchanged(ValueError, r"y has 2 output\(s\) per step, but this "
                      "RNNStepRegressor was trained on 1", reg.partial_fit, X, values)
    assert reg.n_iter_ == 1


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_predict_before_fit(Estimator):
    X, _ = _steps(n=5)
    est = Estimator(**FAST)
    methods = ["predict", "predict_proba", "predict_log_proba"]
    for method in methods if Estimator is RNNStepClassifier else methods[:1]:
        _raises_unchanged(NotFittedError, "not fitted", getattr(est, method), X)
    _raises_unchanged(NotFittedError, "not fitted", est.score, X, np.zeros((5, 8)))


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_wrong_number_of_features_at_predict_and_partial_fit(Estimator, ragged):
    X, labels, values = ragged
    y = _targets(Estimator, labels, values)
    est = Estimator(**FAST).fit(X, y)
    wide = [np.hstack([x, x[:, :1]]) for x in X]
    name = Estimator.__name__
    _raises_unchanged(ValueError, f"X has 3 features, but {name} is expecting 2",
                      est.predict, wide)
    _raises_unchanged(ValueError, "X has 3 features", est.partial_fit, wide, y)


def test_sample_weight_of_the_wrong_length(ragged):
    X, labels, _ = ragged
    _raises_unchanged(ValueError, r"sample_weight.shape == \(9,\), expected \(10,\)",
                      RNNStepClassifier(**FAST).fit, X, labels, sample_weight=np.ones(9))


def test_inputs_are_not_modified_by_fit_and_predict(ragged):
    X, labels, values = ragged
    w = np.linspace(0.5, 2, len(X))
    args = (X, labels, values, w)
    before = [_snapshot(a) for a in args]
    clf = RNNStepClassifier(**FAST, bptt_truncate=3).fit(X, labels, sample_weight=w)
    clf.predict_proba(X)
    clf.score(X, labels, sample_weight=w)
    reg = RNNStepRegressor(**FAST).fit(X, values, sample_weight=w)
    reg.predict(X)
    reg.score(X, values)
    for a, b in zip(args, before):
        _assert_unchanged(a, b)
