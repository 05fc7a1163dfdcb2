"""cbptt's recurrent networks as aeon estimators.

Why: aeon's tooling (pipelines, benchmarking, ``cross_validate`` on its
collections, its estimator checks) takes subclasses of its own
``BaseClassifier`` and ``BaseRegressor``, and lays a collection of series out
as ``(n_cases, n_channels, n_timepoints)`` or, for unequal lengths, as a list
of ``(n_channels, n_timepoints_i)`` arrays: channels first, the transpose of
what cbptt reads. :class:`RNNClassifier` and :class:`RNNRegressor` here are
aeon estimators that take aeon's layouts as they are and train a
:class:`cbptt.RNNClassifier` or :class:`cbptt.RNNRegressor` on them, with the
same hyperparameters.

Importing this module imports aeon (``pip install "cbptt[aeon]"``);
``import cbptt`` does not.
"""

try:
    from aeon.classification import BaseClassifier
    from aeon.regression import BaseRegressor
except ImportError as exc:
    raise ImportError(
        "cbptt.aeon needs the aeon package: pip install \"cbptt[aeon]\" (or "
        f"pip install aeon). Importing aeon failed with: {exc}"
    ) from exc

import cbptt
from cbptt._adapters import (
    TEST_PARAMS,
    ClassifierAdapterMixin,
    RNNAdapterMixin,
    adapter_init,
)
from cbptt._layout import channels_last

__all__ = ["RNNClassifier", "RNNRegressor"]

_TAGS = {
    # np-list: unequal-length collections as a list of (n_channels,
    # n_timepoints_i) arrays; numpy3D: (n_cases, n_channels, n_timepoints).
    "X_inner_type": ["np-list", "numpy3D"],
    "capability:univariate": True,
    "capability:multivariate": True,
    "capability:unequal_length": True,
    "capability:missing_values": False,
    "capability:multithreading": False,  # threads: the n_threads parameter
    "algorithm_type": "deeplearning",
    "non_deterministic": False,  # the same random_state gives the same fit
    "cant_pickle": False,
}


class _AeonAdapter:
    """aeon's inner types to cbptt's layout; the test parameters."""

    def _to_cbptt(self, X):
        return channels_last(X)

    @classmethod
    def _get_test_params(cls, parameter_set="default"):
        """Tiny networks for aeon's estimator checks: a few epochs of a few
        units, one thread (many tiny fits on a busy machine)."""
        return [dict(params) for params in TEST_PARAMS]


class RNNClassifier(_AeonAdapter, ClassifierAdapterMixin, BaseClassifier):
    """:class:`cbptt.RNNClassifier` as an aeon classifier.

    Takes aeon's collections as they are: a 3-D array ``(n_cases,
    n_channels, n_timepoints)``, a 2-D array ``(n_cases, n_timepoints)`` of
    univariate series, or a list of ``(n_channels, n_timepoints_i)`` arrays
    of different lengths (each time point is one step of ``n_channels``
    features; see :func:`cbptt.channels_last`). Missing values are not
    supported.

    Parameters
    ----------
    **params
        The hyperparameters of :class:`cbptt.RNNClassifier`, with the same
        names, defaults and meaning, except ``warm_start``: aeon's ``fit``
        resets the estimator, so each fit starts afresh.

    Attributes
    ----------
    estimator_ : cbptt.RNNClassifier
        The fitted cbptt estimator: its ``weights_``, ``loss_curve_`` and
        ``n_iter_`` describe the training.
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_classes_ : int
        Number of classes.

    Examples
    --------
    >>> from aeon.datasets import load_basic_motions
    >>> from cbptt.aeon import RNNClassifier
    >>> X, y = load_basic_motions(split="train")    # (40, 6, 100): channels first
    >>> clf = RNNClassifier(hidden_layer_sizes=16, max_iter=20, random_state=0)
    >>> clf = clf.fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 4)
    """

    _cbptt_class = cbptt.RNNClassifier
    _tags = _TAGS
    __init__ = adapter_init(cbptt.RNNClassifier, BaseClassifier)


class RNNRegressor(_AeonAdapter, RNNAdapterMixin, BaseRegressor):
    """:class:`cbptt.RNNRegressor` as an aeon regressor.

    Takes aeon's collections as they are: a 3-D array ``(n_cases,
    n_channels, n_timepoints)``, a 2-D array ``(n_cases, n_timepoints)`` of
    univariate series, or a list of ``(n_channels, n_timepoints_i)`` arrays
    of different lengths (see :func:`cbptt.channels_last`); ``y`` is one
    value per series. Missing values are not supported.

    Parameters
    ----------
    **params
        The hyperparameters of :class:`cbptt.RNNRegressor`, with the same
        names, defaults and meaning, except ``warm_start``: aeon's ``fit``
        resets the estimator, so each fit starts afresh.

    Attributes
    ----------
    estimator_ : cbptt.RNNRegressor
        The fitted cbptt estimator.

    Examples
    --------
    >>> from aeon.datasets import load_covid_3month
    >>> from cbptt.aeon import RNNRegressor
    >>> X, y = load_covid_3month(split="train")     # (140, 1, 84)
    >>> reg = RNNRegressor(hidden_layer_sizes=8, max_iter=5, random_state=0)
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _cbptt_class = cbptt.RNNRegressor
    _tags = _TAGS
    __init__ = adapter_init(cbptt.RNNRegressor, BaseRegressor)
