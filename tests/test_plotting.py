"""TrainingCurveDisplay: what it draws, which epoch it marks, its errors.

Needs matplotlib (the ``plot`` extra); without it only the checks of the
import error and of the lazy import run.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline

from cbptt import RNNClassifier, RNNRegressor
from cbptt.plotting import TrainingCurveDisplay, _kept_epoch
from cbptt.preprocessing import SequenceScaler


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _data(seed=2, n=80):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6, 2))
    y = (X[:, :, 0].sum(axis=1) + rng.normal(size=n) > 0).astype(int)
    return X, y


# With _data(): validation accuracies 0.8 0.85 0.85 0.95 0.95 0.85 ... over 12
# epochs; the best score first comes at epoch 4 and ties at epoch 5, so the
# kept epoch is neither the first nor the last.
EARLY = dict(hidden_layer_sizes=8, max_iter=12, early_stopping=True,
             validation_fraction=0.25, n_iter_no_change=20, learning_rate_init=0.05,
             random_state=0)


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.fixture(scope="module")
def early_stopped():
    return _fit(RNNClassifier(**EARLY), *_data())


def test_lines_hold_the_curves_and_the_kept_epoch(pyplot, early_stopped):
    clf = early_stopped
    display = TrainingCurveDisplay.from_estimator(clf)

    n = clf.n_iter_
    assert n == 12 and len(clf.validation_scores_) == n
    np.testing.assert_array_equal(display.loss_line_.get_xdata(), np.arange(1, n + 1))
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), clf.loss_curve_)
    np.testing.assert_array_equal(display.validation_line_.get_xdata(),
                                  np.arange(1, n + 1))
    np.testing.assert_array_equal(display.validation_line_.get_ydata(),
                                  clf.validation_scores_)
    # The first epoch with the best score (here epoch 4, tied by epoch 5).
    kept = 1 + int(np.argmax(clf.validation_scores_))
    assert 1 < kept < n
    assert display.kept_epoch == kept
    assert list(display.kept_epoch_line_.get_xdata()) == [kept, kept]
    assert display.validation_line_.axes is display.validation_ax_
    assert display.loss_line_.axes is display.ax_
    assert display.figure_ is display.ax_.figure


def test_marked_epoch_has_the_weights_the_estimator_kept(early_stopped):
    # The same fit stopped after the marked epoch ends with that epoch's weights.
    kept = _kept_epoch(early_stopped.loss_curve_, early_stopped.validation_scores_)
    short = _fit(RNNClassifier(**{**EARLY, "max_iter": kept}), *_data())
    before = _fit(RNNClassifier(**{**EARLY, "max_iter": kept - 1}), *_data())
    for name, weight in early_stopped.weights_.items():
        np.testing.assert_array_equal(weight, short.weights_[name])
    assert not all(np.array_equal(w, before.weights_[k])
                   for k, w in early_stopped.weights_.items())


def test_labels_and_legend(pyplot, early_stopped):
    display = TrainingCurveDisplay.from_estimator(early_stopped)
    assert display.ax_.get_xlabel() == "Epoch"
    assert display.ax_.get_ylabel() == "Training loss"
    assert display.validation_ax_.get_ylabel() == "Validation accuracy"
    legend = display.validation_ax_.get_legend()
    assert legend.get_title().get_text() == "RNNClassifier"
    assert [t.get_text() for t in legend.get_texts()] == [
        "Training loss", "Validation accuracy",
        f"Kept weights (epoch {display.kept_epoch})"]

    named = TrainingCurveDisplay.from_estimator(early_stopped, name="GRU, 8 units")
    assert named.validation_ax_.get_legend().get_title().get_text() == "GRU, 8 units"


def test_without_early_stopping_the_last_epoch_is_marked(pyplot):
    X, y = _data()
    reg = _fit(RNNRegressor(hidden_layer_sizes=4, max_iter=5, random_state=0),
               X, X[:, -1, 0])
    display = TrainingCurveDisplay.from_estimator(reg)
    assert display.validation_ax_ is None and display.validation_line_ is None
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), reg.loss_curve_)
    assert list(display.kept_epoch_line_.get_xdata()) == [5, 5]
    assert display.ax_.get_legend().get_title().get_text() == "RNNRegressor"


def test_regressor_score_is_r2(pyplot):
    X, y = _data()
    # 80 samples: a validation fraction of 0.25 holds out the 20 that early
    # stopping needs.
    reg = _fit(RNNRegressor(hidden_layer_sizes=4, max_iter=3, early_stopping=True,
                            validation_fraction=0.25, random_state=0), X, X[:, -1, 0])
    display = TrainingCurveDisplay.from_estimator(reg)
    assert display.validation_ax_.get_ylabel() == "Validation $R^2$"
    np.testing.assert_array_equal(display.validation_line_.get_ydata(),
                                  reg.validation_scores_)


def test_partial_fit_epochs_after_early_stopping_are_kept(pyplot, early_stopped):
    # partial_fit neither scores nor restores: its epoch's weights are kept.
    X, y = _data()
    clf = RNNClassifier(**EARLY).set_params(max_iter=3)
    _fit(clf, X, y)
    clf.partial_fit(X, y)
    display = TrainingCurveDisplay.from_estimator(clf)
    assert len(display.loss_line_.get_xdata()) == 4
    assert len(display.validation_line_.get_xdata()) == 3
    assert list(display.kept_epoch_line_.get_xdata()) == [4, 4]


def test_ax_is_used(pyplot, early_stopped):
    fig, ax = pyplot.subplots()
    display = TrainingCurveDisplay.from_estimator(early_stopped, ax=ax)
    assert display.ax_ is ax and display.figure_ is fig
    assert display.loss_line_ in ax.lines
    assert display.validation_ax_ in fig.axes and display.validation_ax_ is not ax
    assert display.validation_ax_.get_shared_x_axes().joined(ax, display.validation_ax_)

    # plot() draws again, on other axes.
    fig2, ax2 = pyplot.subplots()
    display.plot(ax=ax2)
    assert display.ax_ is ax2 and display.loss_line_ in ax2.lines


def test_plot_keywords(pyplot, early_stopped):
    display = TrainingCurveDisplay.from_estimator(
        early_stopped, loss_kw={"color": "black", "label": "loss"},
        validation_kw={"linestyle": ":"}, kept_epoch_kw={"color": "red"})
    assert display.loss_line_.get_color() == "black"
    assert display.loss_line_.get_label() == "loss"
    assert display.validation_line_.get_linestyle() == ":"
    assert display.kept_epoch_line_.get_color() == "red"


def test_pipeline_uses_its_last_step(pyplot):
    X, y = _data()
    pipe = _fit(make_pipeline(SequenceScaler(), RNNClassifier(**EARLY)), X, y)
    display = TrainingCurveDisplay.from_estimator(pipe)
    clf = pipe[-1]
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), clf.loss_curve_)
    np.testing.assert_array_equal(display.validation_line_.get_ydata(),
                                  clf.validation_scores_)
    assert display.name == "RNNClassifier"


def test_any_estimator_with_a_loss_curve(pyplot):
    X, y = _data()
    mlp = _fit(MLPClassifier(hidden_layer_sizes=4, max_iter=5, early_stopping=True,
                             random_state=0), X.reshape(len(X), -1), y)
    display = TrainingCurveDisplay.from_estimator(mlp)
    np.testing.assert_array_equal(display.validation_line_.get_ydata(),
                                  mlp.validation_scores_)
    expected = 1 + int(np.argmax(mlp.validation_scores_))
    assert list(display.kept_epoch_line_.get_xdata()) == [expected, expected]


def test_constructor_draws_given_curves(pyplot):
    display = TrainingCurveDisplay(loss_curve=[3.0, 2.0, 1.5], validation_scores=[0.5, 0.7],
                                   kept_epoch=2, score_name="F1").plot()
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(display.validation_line_.get_xdata(), [1, 2])
    assert display.validation_ax_.get_ylabel() == "Validation F1"
    assert TrainingCurveDisplay(loss_curve=[1.0]).plot().kept_epoch_line_ is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss_curve=[]), "non-empty 1-D sequence of losses"),
    (dict(loss_curve=[[1.0, 2.0]]), r"got shape \(1, 2\)"),
    (dict(loss_curve=[1.0], validation_scores=[0.1, 0.2]),
     "1 to 1 scores"),
    (dict(loss_curve=[1.0, 0.5], kept_epoch=3), "from 1 to 2; got 3"),
    (dict(loss_curve=[1.0, 0.5], kept_epoch=0), "from 1 to 2; got 0"),
    (dict(loss_curve=[1.0, 0.5], kept_epoch=1.5), "got 1.5"),
])
def test_bad_curves(pyplot, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingCurveDisplay(**kwargs).plot()


def test_unfitted_estimator(pyplot):
    with pytest.raises(NotFittedError, match="RNNClassifier instance is not fitted"):
        TrainingCurveDisplay.from_estimator(RNNClassifier())
    with pytest.raises(NotFittedError, match="RNNClassifier instance is not fitted"):
        TrainingCurveDisplay.from_estimator(
            make_pipeline(SequenceScaler(), RNNClassifier()))


def test_estimator_without_loss_curve(pyplot):
    X, y = _data()
    logistic = LogisticRegression().fit(X[:, :, 0], y)
    with pytest.raises(TypeError, match="LogisticRegression has no loss_curve_"):
        TrainingCurveDisplay.from_estimator(logistic)


def test_kept_epoch_rule():
    assert _kept_epoch([3, 2, 1], None) == 3
    assert _kept_epoch([3, 2, 1], [0.5, 0.9, 0.9]) == 2      # first of a tie
    assert _kept_epoch([3, 2, 1, 0.5], [0.5, 0.9, 0.8]) == 4  # then partial_fit
    assert _kept_epoch([3, 2], [np.nan, np.nan]) == 2         # nothing restored


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install cbptt\[plot\]"):
        TrainingCurveDisplay(loss_curve=[1.0]).plot()
    with pytest.raises(ImportError, match="from_estimator requires matplotlib"):
        TrainingCurveDisplay.from_estimator(RNNClassifier())


def test_importing_cbptt_does_not_import_matplotlib(tmp_path):
    code = ("import sys, cbptt, cbptt.plotting, cbptt.preprocessing; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "False"
