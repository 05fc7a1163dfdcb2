"""Plots of how a cbptt estimator trained.

Why: a fitted estimator records its training loss for each epoch
(``loss_curve_``) and, with early stopping, its held-out score for each
epoch (``validation_scores_``), but which epoch's weights it kept is not
plain from those lists. :class:`TrainingCurveDisplay` draws both curves
against the epoch and marks the kept epoch, in the style of scikit-learn's
Displays (``from_estimator``, ``plot``, ``ax_``, ``figure_``).

matplotlib is imported only when something is drawn, so importing this
module needs no matplotlib.
"""

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = ["TrainingCurveDisplay"]


def _check_matplotlib(caller):
    """Raise an ImportError that names the package extra if matplotlib is
    missing (through scikit-learn's own check where it has one)."""
    try:
        from sklearn.utils._optional_dependencies import check_matplotlib_support
    except ImportError:  # a private scikit-learn module: it may move
        def check_matplotlib_support(caller_name):
            import matplotlib  # noqa: F401
    try:
        check_matplotlib_support(caller)
    except ImportError as exc:
        raise ImportError(
            f"{caller} requires matplotlib. Install it with `pip install "
            "cbptt[plot]` (or `pip install matplotlib`)."
        ) from exc


class TrainingCurveDisplay:
    """Training loss and validation score of each epoch of a fitted estimator.

    Draws the training loss against the epoch and, for a fit with
    ``early_stopping=True``, the validation score on a second y axis, and
    marks with a vertical line the epoch whose weights the estimator kept.
    Create it with :meth:`from_estimator`; the constructor takes the curves
    themselves (from any source) and draws nothing until :meth:`plot`.

    Parameters
    ----------
    loss_curve : array-like of shape (n_epochs,)
        Training loss of each epoch; epoch ``k`` (counting from 1) is
        ``loss_curve[k - 1]``.
    validation_scores : array-like of shape (n_scored,), default=None
        Validation score of each of the first ``n_scored <= n_epochs``
        epochs; None to draw no validation curve.
    kept_epoch : int, default=None
        The epoch to mark (from 1 to ``n_epochs``); None to mark none.
    name : str, default=None
        Name of the estimator, used as the legend's title.
    score_name : str, default="score"
        What the validation score measures, for the second axis' label.

    Attributes
    ----------
    loss_line_ : matplotlib Line2D
        The training loss.
    validation_line_ : matplotlib Line2D or None
        The validation score, on ``validation_ax_``.
    kept_epoch_line_ : matplotlib Line2D or None
        The vertical line at ``kept_epoch``.
    ax_ : matplotlib Axes
        The axes of the training loss (the one passed as ``ax``, if any).
    validation_ax_ : matplotlib Axes or None
        The second y axis (sharing the epochs with ``ax_``) of the
        validation score.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    See Also
    --------
    sklearn.model_selection.LearningCurveDisplay : Scores against the number
        of training samples.

    Examples
    --------
    >>> import matplotlib.pyplot as plt  # doctest: +SKIP
    >>> from cbptt.plotting import TrainingCurveDisplay  # doctest: +SKIP
    >>> clf = RNNClassifier(early_stopping=True).fit(X, y)  # doctest: +SKIP
    >>> TrainingCurveDisplay.from_estimator(clf)  # doctest: +SKIP
    >>> plt.show()  # doctest: +SKIP
    """

    def __init__(self, *, loss_curve, validation_scores=None, kept_epoch=None, name=None,
                 score_name="score"):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.kept_epoch = kept_epoch
        self.name = name
        self.score_name = score_name

    def plot(self, ax=None, *, name=None, loss_kw=None, validation_kw=None, kept_epoch_kw=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw the training loss on (the validation score gets a
            second y axis on its right); None draws on a new figure.
        name : str, default=None
            Legend title; None uses the ``name`` given at construction.
        loss_kw, validation_kw, kept_epoch_kw : dict, default=None
            Keyword arguments for matplotlib's ``plot`` of the training loss
            and of the validation score, and for ``axvline`` of the kept
            epoch's line.

        Returns
        -------
        display : TrainingCurveDisplay
            This object, with the attributes that hold what was drawn.
        """
        _check_matplotlib(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        loss, scores = _check_curves(self.loss_curve, self.validation_scores)
        kept_epoch = _check_kept_epoch(self.kept_epoch, len(loss))
        name = self.name if name is None else name
        if ax is None:
            _, ax = plt.subplots()

        # Colors are fixed because the second axes would restart the cycle.
        epochs = np.arange(1, len(loss) + 1)
        self.loss_line_ = ax.plot(
            epochs, loss, **{"color": "C0", "label": "Training loss", **(loss_kw or {})}
        )[0]
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("Training loss")
        handles = [self.loss_line_]

        self.kept_epoch_line_ = None
        if kept_epoch is not None:
            self.kept_epoch_line_ = ax.axvline(kept_epoch, **{
                "color": "0.4", "linestyle": "--", "linewidth": 1,
                "label": f"Kept weights (epoch {kept_epoch})", **(kept_epoch_kw or {}),
            })
            handles.append(self.kept_epoch_line_)

        self.validation_ax_ = self.validation_line_ = None
        if scores is not None:
            self.validation_ax_ = ax.twinx()
            label = f"Validation {self.score_name}"
            self.validation_line_ = self.validation_ax_.plot(
                epochs[: len(scores)], scores,
                **{"color": "C1", "label": label, **(validation_kw or {})},
            )[0]
            self.validation_ax_.set_ylabel(label)
            handles.insert(1, self.validation_line_)

        # On the top axes, so that no curve is drawn over it.
        legend_ax = self.validation_ax_ if self.validation_ax_ is not None else ax
        legend_ax.legend(handles=handles, title=name, loc="best")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None, loss_kw=None,
                       validation_kw=None, kept_epoch_kw=None):
        """Plot the training curves of a fitted estimator.

        Parameters
        ----------
        estimator : estimator or Pipeline
            A fitted cbptt estimator, or a fitted Pipeline whose last step is
            one. Any estimator with ``loss_curve_`` (and, optionally,
            ``validation_scores_``) works, e.g. scikit-learn's
            :class:`~sklearn.neural_network.MLPClassifier`.
        ax : matplotlib Axes, default=None
            Axes to draw on; None draws on a new figure.
        name : str, default=None
            Legend title; None uses the estimator's class name.
        loss_kw, validation_kw, kept_epoch_kw : dict, default=None
            Passed to :meth:`plot`.

        Returns
        -------
        display : TrainingCurveDisplay

        Notes
        -----
        The marked epoch is the one whose weights the estimator kept: with
        ``early_stopping=True``, the first epoch with the best validation
        score; otherwise (and after ``partial_fit`` calls, which are not
        scored) the last epoch.
        """
        _check_matplotlib(f"{cls.__name__}.from_estimator")
        final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
        check_is_fitted(final)
        if not hasattr(final, "loss_curve_"):
            raise TypeError(
                f"{cls.__name__} plots the loss of each epoch (loss_curve_) of a "
                "cbptt estimator, or of a Pipeline whose last step is one; "
                f"{type(final).__name__} has no loss_curve_."
            )
        loss = list(final.loss_curve_)
        if not loss:
            raise ValueError(
                f"This {type(final).__name__} completed no epoch (its training was "
                "interrupted during the first), so there is no curve to plot."
            )
        scores = getattr(final, "validation_scores_", None)
        scores = list(scores) if scores else None
        if is_classifier(final):
            score_name = "accuracy"
        elif is_regressor(final):
            score_name = "$R^2$"
        else:
            score_name = "score"
        display = cls(
            loss_curve=loss, validation_scores=scores, kept_epoch=_kept_epoch(loss, scores),
            name=type(final).__name__ if name is None else name, score_name=score_name,
        )
        return display.plot(ax=ax, loss_kw=loss_kw, validation_kw=validation_kw,
                            kept_epoch_kw=kept_epoch_kw)


def _kept_epoch(loss_curve, validation_scores):
    """The epoch whose weights a fit kept, counting from 1.

    Early stopping keeps the weights of the epoch with the best validation
    score, the first one if several tie (the fit copies the weights each
    time the score rises). When the scores do not reach the last epoch
    (partial_fit calls are not scored), or none was finite, the weights are
    the last epoch's.
    """
    if not validation_scores or len(validation_scores) != len(loss_curve):
        return len(loss_curve)
    best, kept = -np.inf, len(loss_curve)
    for epoch, score in enumerate(validation_scores, start=1):
        if score > best:
            best, kept = score, epoch
    return kept


def _check_curves(loss_curve, validation_scores):
    loss = np.asarray(loss_curve, dtype=np.float64)
    if loss.ndim != 1 or len(loss) == 0:
        raise ValueError(
            f"loss_curve must be a non-empty 1-D sequence of losses, one per epoch; "
            f"got shape {loss.shape}."
        )
    if validation_scores is None:
        return loss, None
    scores = np.asarray(validation_scores, dtype=np.float64)
    if scores.ndim != 1 or not 1 <= len(scores) <= len(loss):
        raise ValueError(
            f"validation_scores must be a 1-D sequence of 1 to {len(loss)} scores "
            f"(one per epoch, from the first); got shape {scores.shape}."
        )
    return loss, scores


def _check_kept_epoch(kept_epoch, n_epochs):
    if kept_epoch is None:
        return None
    if (not isinstance(kept_epoch, (int, np.integer)) or isinstance(kept_epoch, bool)
            or not 1 <= kept_epoch <= n_epochs):
        raise ValueError(
            f"kept_epoch must be None or an epoch number from 1 to {n_epochs}; got "
            f"{kept_epoch!r}."
        )
    return int(kept_epoch)
