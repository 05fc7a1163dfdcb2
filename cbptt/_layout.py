"""Channels first or channels last: saying, and guessing, the axes of a panel.

Why: cbptt reads a 3-D array as ``(n_samples, n_timesteps, n_features)``,
one row per time step, as PyTorch's ``batch_first`` recurrent layers and
Keras do. aeon and sktime lay a collection of series out the other way,
``(n_cases, n_channels, n_timepoints)``, and their unequal-length collections
are lists of ``(n_channels, n_timepoints_i)`` arrays. Both layouts are valid
3-D arrays of numbers, so a panel passed in the wrong one trains without an
error on the wrong axes: a univariate series of 150 points becomes ONE step
of 150 features. :func:`channels_last` lets users state the layout;
:func:`transposed_layout_hint` is the guess ``check_sequences`` warns with
when they did not.
"""

import numbers

import numpy as np
from scipy import sparse

# A 3-D array with at most this many steps and at least this many times as
# many features as steps looks like channels-first data (univariate series
# become one step; BasicMotions' 6 channels of 100 points, 6 steps of 100
# features). Word-embedding sequences, whose features outnumber their steps,
# stay clear of it from 11 steps on, and are mostly ragged lists anyway.
_MAX_SUSPICIOUS_STEPS = 10
_FEATURES_PER_STEP = 10


def is_array_of_sequences(X):
    """Whether X is a 1-D object array of sequences, which every entry point
    reads as the list of them."""
    return (isinstance(X, np.ndarray) and X.dtype.kind == "O" and X.ndim == 1
            and len(X) > 0 and all(np.ndim(seq) >= 1 for seq in X))


def channels_last(X):
    """Convert channels-first time series to cbptt's layout.

    aeon and sktime store a collection of multivariate series as an array
    ``(n_cases, n_channels, n_timepoints)``, or, when the lengths differ, as
    a list of ``(n_channels, n_timepoints_i)`` arrays. cbptt's estimators
    read one row per time step: ``(n_samples, n_timesteps, n_features)``, or
    a list of ``(n_timesteps_i, n_features)`` arrays. This function swaps the
    last two axes, so that the layout is said explicitly rather than
    guessed.

    Parameters
    ----------
    X : array-like or list of array-like
        One of:

        * a 3-D array ``(n_cases, n_channels, n_timepoints)``;
        * a 2-D array ``(n_cases, n_timepoints)``: univariate series (as in
          aeon and sktime, and as cbptt reads a 2-D array as well);
        * a list (or tuple, or 1-D object array) of ``(n_channels,
          n_timepoints_i)`` arrays, whose lengths may differ; a 1-D array in
          it is a univariate series.

    Returns
    -------
    X_out : ndarray of shape (n_cases, n_timepoints, n_channels) or list of ndarray
        An array for array input, a list of ``(n_timepoints_i, n_channels)``
        arrays for list input. The arrays are views of the input's arrays
        where NumPy allows (no copy): do not modify them in place if the
        input must stay as it is. Values are not checked here; the
        estimators check them at ``fit`` and ``predict``.

    Raises
    ------
    TypeError
        For sparse matrices and non-numeric arrays (e.g. sktime's nested
        ``pandas.DataFrame``; convert those to ``"numpy3D"`` first).
    ValueError
        For an empty list, or arrays of the wrong number of dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt import channels_last
    >>> X = np.zeros((40, 3, 100))          # 40 cases, 3 channels, 100 points
    >>> channels_last(X).shape
    (40, 100, 3)
    >>> ragged = [np.zeros((3, 80)), np.zeros((3, 120))]
    >>> [x.shape for x in channels_last(ragged)]
    [(80, 3), (120, 3)]
    """
    if sparse.issparse(X):
        raise TypeError(
            "channels_last got a sparse matrix; time series must be dense. Use "
            ".toarray() first."
        )
    if is_array_of_sequences(X):
        X = list(X)
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(
                "channels_last got an empty list; pass at least one series."
            )
        return [_series_channels_last(series, i) for i, series in enumerate(X)]
    if not isinstance(getattr(X, "ndim", None), numbers.Integral) or not hasattr(
        X, "transpose"
    ):
        X = np.asarray(X)
    _check_numeric(X, "X")
    if X.ndim == 3:
        return X.transpose(0, 2, 1)
    if X.ndim == 2:
        return X[:, :, np.newaxis]
    raise ValueError(
        f"channels_last takes a 3-D array (n_cases, n_channels, n_timepoints), "
        f"a 2-D array (n_cases, n_timepoints) or a list of (n_channels, "
        f"n_timepoints_i) arrays; got an array with {X.ndim} dimension(s)."
    )


def _check_numeric(X, name):
    dtype = getattr(X, "dtype", None)
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc":
        raise TypeError(
            f"channels_last needs numeric arrays; {name} has dtype {dtype}. A "
            "pandas DataFrame in a nested or multi-index layout must be "
            "converted first, e.g. with aeon's convert_collection(X, "
            "'numpy3D') or sktime's convert_to(X, 'numpy3D')."
        )


def _series_channels_last(series, index):
    if sparse.issparse(series):
        raise TypeError(
            f"X[{index}] is a sparse matrix; time series must be dense. Use "
            ".toarray() first."
        )
    if not isinstance(getattr(series, "ndim", None), numbers.Integral):
        series = np.asarray(series)
    _check_numeric(series, f"X[{index}]")
    if series.ndim == 2:
        return series.T
    if series.ndim == 1:
        return series[:, np.newaxis]
    raise ValueError(
        f"X[{index}] has {series.ndim} dimension(s); each series in a list "
        "must be a (n_channels, n_timepoints_i) array or a 1-D array."
    )


def transposed_layout_hint(shape):
    """A sentence on how to fix a 3-D ``shape`` that looks channels-first,
    or None when it looks like ``(n_samples, n_timesteps, n_features)``."""
    n_timesteps, n_features = shape[1], shape[2]
    if n_features <= n_timesteps:
        return None
    if n_timesteps > 1 and not (
        n_timesteps <= _MAX_SUSPICIOUS_STEPS
        and n_features >= _FEATURES_PER_STEP * n_timesteps
    ):
        return None
    steps = "1 time step" if n_timesteps == 1 else f"{n_timesteps} time steps"
    return (
        f"X has shape {tuple(shape)}, which cbptt reads as (n_samples, "
        f"n_timesteps, n_features): {steps} of {n_features} features per "
        "sequence. If it is (n_samples, n_channels, n_timepoints), the layout "
        "of aeon and sktime, convert it with cbptt.channels_last(X) (the same "
        "as X.transpose(0, 2, 1))."
    )


def channels_first_list_hint(shapes):
    """A sentence for a list of 2-D arrays whose first axes agree and whose
    second axes differ, as aeon's unequal-length (n_channels, n_timepoints_i)
    series do; None otherwise."""
    rows = {shape[0] for shape in shapes}
    columns = {shape[1] for shape in shapes}
    if len(rows) == 1 and len(columns) > 1:
        return (
            f"The sequences all have {shapes[0][0]} rows and differ in their "
            "number of columns: if they are (n_channels, n_timepoints_i) "
            "arrays, the layout of aeon's unequal-length collections, convert "
            "them with cbptt.channels_last(X)."
        )
    return None
