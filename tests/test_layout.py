"""Data layout: channels_last, and the warning for 3-D input that looks
transposed.

A panel laid out channels first, ``(n, n_channels, n_timepoints)`` as in aeon
and sktime, is a valid 3-D array, so cbptt would train on the wrong axes
without an error; these tests pin down when it warns (and when it must not),
what the messages say, and the conversion the messages point to.
"""

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning

from cbptt import RNNClassifier, RNNRegressor, channels_last, loss_and_grad

rng = np.random.default_rng(0)
LAYOUT = "cbptt.channels_last"


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _clf():
    return RNNClassifier(hidden_layer_sizes=3, max_iter=1, random_state=0, n_threads=1)


def _layout_warnings(func, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = func(*args)
    return [str(w.message) for w in caught if LAYOUT in str(w.message)], result


# -- channels_last -----------------------------------------------------------


def test_channels_last_swaps_the_last_two_axes_of_an_array():
    X = rng.normal(size=(4, 3, 10))
    out = channels_last(X)
    assert out.shape == (4, 10, 3)
    np.testing.assert_array_equal(out[2, 7], X[2, :, 7])
    assert np.shares_memory(out, X)  # a view, no copy


def test_channels_last_reads_a_2d_array_as_univariate_series():
    X = rng.normal(size=(4, 10))
    out = channels_last(X)
    assert out.shape == (4, 10, 1)
    np.testing.assert_array_equal(out[:, :, 0], X)


@pytest.mark.parametrize("container", [list, tuple, "object array"])
def test_channels_last_transposes_each_series_of_a_list(container):
    series = [rng.normal(size=(3, n)) for n in (5, 8)] + [rng.normal(size=6)]
    if container == "object array":
        X = np.empty(3, dtype=object)
        X[:] = series
    else:
        X = container(series)
    out = channels_last(X)
    assert isinstance(out, list)
    assert [x.shape for x in out] == [(5, 3), (8, 3), (6, 1)]
    np.testing.assert_array_equal(out[1], series[1].T)
    np.testing.assert_array_equal(out[2][:, 0], series[2])


def test_channels_last_keeps_dtype_and_leaves_input_unchanged():
    X = rng.normal(size=(2, 3, 4)).astype(np.float32)
    before = X.copy()
    assert channels_last(X).dtype == np.float32
    assert channels_last(X.tolist()).__class__ is list
    np.testing.assert_array_equal(X, before)


def test_channels_last_makes_a_channels_first_panel_train_as_intended():
    # A univariate series of 30 points, channels first: (n, 1, 30).
    X = rng.normal(size=(12, 1, 30))
    y = np.arange(12) % 2
    messages, clf = _layout_warnings(_clf().fit, channels_last(X), y)
    assert messages == []
    assert clf.n_features_in_ == 1
    assert clf.predict(channels_last(X)).shape == (12,)


@pytest.mark.parametrize("X, error, match", [
    ([], ValueError, "empty list"),
    (np.zeros(5), ValueError, "got an array with 1 dimension"),
    (np.zeros((2, 3, 4, 5)), ValueError, "got an array with 4 dimension"),
    ([np.zeros((2, 3, 4))], ValueError, r"X\[0\] has 3 dimension"),
    (sparse.csr_matrix(np.eye(3)), TypeError, "sparse"),
    ([np.eye(2), sparse.csr_matrix(np.eye(2))], TypeError, r"X\[1\] is a sparse"),
    (np.array([["a", "b"]]), TypeError, "numeric arrays; X has dtype <U1"),
    ([np.array([[None, 1.0]])], TypeError, r"X\[0\] has dtype object.*convert_collection"),
])
def test_channels_last_bad_input(X, error, match):
    with pytest.raises(error, match=match):
        channels_last(X)


# -- the warning -------------------------------------------------------------


@pytest.mark.parametrize("shape", [
    (10, 1, 150),   # GunPoint as aeon lays it out: one step of 150 features
    (10, 1, 2),     # a single step with several features
    (10, 6, 100),   # BasicMotions: 6 channels of 100 points
    (10, 10, 100),
])
def test_fit_warns_when_a_3d_array_looks_channels_first(shape):
    X = rng.normal(size=shape)
    messages, _ = _layout_warnings(_clf().fit, X, np.arange(10) % 2)
    assert len(messages) == 1
    steps = "1 time step" if shape[1] == 1 else f"{shape[1]} time steps"
    assert messages[0].startswith(
        f"X has shape {shape}, which cbptt reads as (n_samples, n_timesteps, "
        f"n_features): {steps} of {shape[2]} features per sequence."
    )
    assert "cbptt.channels_last(X)" in messages[0]
    assert "X.transpose(0, 2, 1)" in messages[0]


@pytest.mark.parametrize("shape", [
    (10, 8, 8),     # digits: 8 rows of 8 pixels
    (10, 30, 3),
    (10, 1, 1),     # one step of one feature: nothing to swap
    (10, 11, 300),  # word embeddings: features outnumber steps
    (10, 10, 99),   # fewer than 10 features per step
    (10, 5, 40),
])
def test_fit_does_not_warn_on_sequences_laid_out_as_expected(shape):
    messages, _ = _layout_warnings(_clf().fit, rng.normal(size=shape), np.arange(10) % 2)
    assert messages == []


def test_2d_arrays_and_ragged_lists_do_not_warn():
    y = np.arange(10) % 2
    # A 2-D array is univariate sequences: (10, 150) is 150 steps.
    assert _layout_warnings(_clf().fit, rng.normal(size=(10, 150)), y)[0] == []
    # A ragged list says its layout by its (n_timesteps_i, n_features) arrays.
    ragged = [rng.normal(size=(1 + i % 3, 50)) for i in range(10)]
    assert _layout_warnings(_clf().fit, ragged, y)[0] == []


def test_equal_length_list_of_channels_first_series_warns():
    # aeon's np-list layout with equal lengths: a list of (n_channels, 40).
    X = [rng.normal(size=(2, 40)) for _ in range(10)]
    messages, _ = _layout_warnings(_clf().fit, X, np.arange(10) % 2)
    assert len(messages) == 1 and "X has shape (10, 2, 40)" in messages[0]


def test_warns_once_per_fit_not_at_predict():
    X = rng.normal(size=(10, 1, 20))
    messages, clf = _layout_warnings(_clf().fit, X, np.arange(10) % 2)
    assert len(messages) == 1
    # predict is checked against what fit saw: the same layout, no warning.
    assert _layout_warnings(clf.predict, X)[0] == []


def test_regressor_and_loss_and_grad_warn_too():
    X = rng.normal(size=(10, 1, 20))
    reg = RNNRegressor(hidden_layer_sizes=3, max_iter=1, random_state=0)
    assert len(_layout_warnings(reg.fit, X, rng.normal(size=10))[0]) == 1
    weights = {
        "weight_ih_l0": np.zeros((3, 20)), "weight_hh_l0": np.zeros((3, 3)),
        "bias_ih_l0": np.zeros(3), "bias_hh_l0": np.zeros(3),
        "weight_out": np.zeros((2, 3)), "bias_out": np.zeros(2),
    }
    messages, _ = _layout_warnings(
        lambda: loss_and_grad(weights, X, np.arange(10) % 2, cell="rnn"))
    assert len(messages) == 1


def test_predict_on_a_transposed_panel_says_how_to_fix_it():
    X = rng.normal(size=(10, 30, 1))  # fitted the right way round
    clf = _clf().fit(X, np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"expecting 1 features.*X has shape "
                       r"\(10, 1, 30\).*cbptt\.channels_last\(X\)"):
        clf.predict(X.transpose(0, 2, 1))
    # A plain mismatch, which transposing would not fix, gets no layout hint.
    with pytest.raises(ValueError, match=r"expecting 1 features as input \(features "
                       r"per time step; the number of time steps may differ\)\.$"):
        clf.predict(rng.normal(size=(10, 2, 30)))


def test_unequal_channels_first_list_error_points_to_channels_last():
    X = [rng.normal(size=(3, n)) for n in (10, 14, 9)]  # aeon's unequal layout
    with pytest.raises(ValueError, match=r"same number of features: X\[0\] has 10 "
                       r"and X\[1\] has 14\. The sequences all have 3 rows.*"
                       r"cbptt\.channels_last\(X\)"):
        _clf().fit(X, [0, 1, 0])
    assert _clf().fit(channels_last(X), [0, 1, 0]).n_features_in_ == 3


# -- the optional adapters ---------------------------------------------------


@pytest.mark.parametrize("package", ["aeon", "sktime"])
def test_adapter_without_its_package_names_the_pip_extra(package, monkeypatch):
    # As if the package were not installed, whether or not it is.
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, f"cbptt.{package}", raising=False)
    with pytest.raises(ImportError, match=rf'cbptt\.{package} needs the {package} '
                       rf'package: pip install "cbptt\[{package}\]"'):
        importlib.import_module(f"cbptt.{package}")


def test_import_cbptt_imports_no_optional_package(tmp_path):
    # Outside the source tree, whose cbptt/ would shadow the installed one.
    optional = ("aeon", "sktime", "onnx", "onnxruntime", "matplotlib", "dask", "torch")
    code = f"import sys, cbptt; print(sorted(set({optional!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    assert out.strip() == "[]"
