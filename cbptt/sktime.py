"""cbptt's recurrent networks as sktime estimators.

Why: sktime's tooling (``evaluate``, benchmarking, pipelines with its
transformers, its estimator checks) takes subclasses of its own
``BaseClassifier`` and ``BaseRegressor``; a cbptt estimator passed there is
rejected or mis-scored. sktime also lays equal-length panels out channels
first, ``(n_instances, n_channels, n_timepoints)`` (its ``numpy3D`` mtype),
the transpose of what cbptt reads. :class:`RNNClassifier` and
:class:`RNNRegressor` here are sktime estimators that take sktime's panels in
any mtype and train a :class:`cbptt.RNNClassifier` or
:class:`cbptt.RNNRegressor` on them, with the same hyperparameters.

Importing this module imports sktime (``pip install "cbptt[sktime]"``);
``import cbptt`` does not.
"""

try:
    from sktime.classification.base import BaseClassifier
    from sktime.regression.base import BaseRegressor
except ImportError as exc:
    raise ImportError(
        "cbptt.sktime needs the sktime package: pip install \"cbptt[sktime]\" "
        f"(or pip install sktime). Importing sktime failed with: {exc}"
    ) from exc

import numpy as np

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
    # numpy3D: (n_instances, n_channels, n_timepoints), kept as it is;
    # df-list: (n_timepoints_i, n_channels) DataFrames, which sktime converts
    # every other mtype to (the first listed), of equal length or not.
    "X_inner_mtype": ["df-list", "numpy3D"],
    "capability:multivariate": True,
    "capability:unequal_length": True,
    "capability:missing_values": False,
    "capability:multithreading": False,  # threads: the n_threads parameter
    "capability:random_state": True,
    "property:randomness": "derandomized",  # the same random_state, the same fit
    "authors": ["cbptt developers"],
    "maintainers": ["cbptt developers"],
    "python_dependencies": None,
}


class _SktimeAdapter:
    """sktime's inner mtypes to cbptt's layout; the test parameters."""

    def _to_cbptt(self, X):
        if isinstance(X, np.ndarray):  # numpy3D: channels first
            return channels_last(X)
        # df-list: each DataFrame is already one row per time point.
        return [frame.to_numpy() for frame in X]

    @classmethod
    def get_test_params(cls, parameter_set="default"):
        """Tiny networks for sktime's estimator checks: a few epochs of a few
        units, one thread (many tiny fits on a busy machine).

        Parameters
        ----------
        parameter_set : str, default="default"
            Ignored: one set for every purpose.

        Returns
        -------
        params : list of dict
        """
        return [dict(params) for params in TEST_PARAMS]


class RNNClassifier(_SktimeAdapter, ClassifierAdapterMixin, BaseClassifier):
    """:class:`cbptt.RNNClassifier` as an sktime classifier.

    Takes sktime panels of any mtype (``numpy3D`` arrays ``(n_instances,
    n_channels, n_timepoints)``, nested or multi-index DataFrames, ...),
    multivariate and of unequal length; each time point is one step of
    ``n_channels`` features (see :func:`cbptt.channels_last`). Missing values
    are not supported.

    Parameters
    ----------
    **params
        The hyperparameters of :class:`cbptt.RNNClassifier`, with the same
        names, defaults and meaning, except ``warm_start``: sktime's ``fit``
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
    >>> from sktime.datasets import load_basic_motions
    >>> from cbptt.sktime import RNNClassifier
    >>> X, y = load_basic_motions(split="train", return_type="numpy3D")
    >>> clf = RNNClassifier(hidden_layer_sizes=16, max_iter=20, random_state=0)
    >>> clf = clf.fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 4)
    """

    _cbptt_class = cbptt.RNNClassifier
    _tags = {**_TAGS, "capability:predict_proba": True}
    __init__ = adapter_init(cbptt.RNNClassifier, BaseClassifier)


class RNNRegressor(_SktimeAdapter, RNNAdapterMixin, BaseRegressor):
    """:class:`cbptt.RNNRegressor` as an sktime regressor.

    Takes sktime panels of any mtype, multivariate and of unequal length
    (see :class:`RNNClassifier`); ``y`` is one value per instance. Missing
    values are not supported.

    Parameters
    ----------
    **params
        The hyperparameters of :class:`cbptt.RNNRegressor`, with the same
        names, defaults and meaning, except ``warm_start``: sktime's ``fit``
        resets the estimator, so each fit starts afresh.

    Attributes
    ----------
    estimator_ : cbptt.RNNRegressor
        The fitted cbptt estimator.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt.sktime import RNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 2, 30))        # 50 instances, 2 channels
    >>> y = X[:, 0].mean(axis=1)
    >>> reg = RNNRegressor(pooling="mean", max_iter=5, random_state=0)
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _cbptt_class = cbptt.RNNRegressor
    _tags = _TAGS
    __init__ = adapter_init(cbptt.RNNRegressor, BaseRegressor)
