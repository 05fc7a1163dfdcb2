"""Scale sequence data feature by feature, over every valid time step.

Why: recurrent nets train best on features of unit size, but scikit-learn's
:class:`~sklearn.preprocessing.StandardScaler` reads 2-D tabular rows, so a
pipeline over sequences needed a ``FunctionTransformer`` that reshapes, and
one over sequences of different lengths could not scale at all. The scaler
here takes the sequences in every form the estimators take, learns one mean
and one standard deviation per feature from all valid steps of all sequences
(padding never counts), and returns the same form it was given. The
statistics themselves are StandardScaler's, fitted on the stacked steps.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from cbptt._layout import is_array_of_sequences
from cbptt._sequences import check_sequences
from cbptt._step import _valid_steps

__all__ = ["SequenceScaler"]


class SequenceScaler(
    OneToOneFeatureMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """Standardize each feature of sequences over all their time steps.

    The mean and the standard deviation of each feature are taken over every
    valid step of every sequence, so that ``z = (x - mean_) / scale_``: the
    same transformation at every step, as
    :class:`~sklearn.preprocessing.StandardScaler` would apply to the steps
    stacked as rows. Sequences of different lengths count each of their own
    steps once; nothing past a sequence's end counts. Each sequence is scaled
    with the statistics of all of them, not with its own.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract the mean of each feature.
    with_std : bool, default=True
        Divide by the standard deviation of each feature. A feature that is
        constant over the steps keeps a scale of 1.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,) or None
        Mean of each feature over the valid steps (with ``sample_weight``,
        weighted); None when ``with_mean=False`` and ``with_std=False``.
    var_ : ndarray of shape (n_features,) or None
        Variance of each feature over the valid steps (population variance,
        weighted like the mean); None when ``with_std=False``.
    scale_ : ndarray of shape (n_features,) or None
        The divisor of each feature: ``sqrt(var_)``, or 1 for a constant
        feature; None when ``with_std=False``.
    n_steps_seen_ : int
        Number of valid steps the statistics were computed from, over all
        sequences and all calls to ``partial_fit`` (steps of weight 0
        included).
    n_features_in_ : int
        Number of features per time step.

    See Also
    --------
    sklearn.preprocessing.StandardScaler : The same for tabular rows.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences (one feature), or a
    list of ``(n_timesteps_i, n_features)`` arrays (or of 1-D arrays, one
    feature) whose lengths may differ, as for the estimators of cbptt.
    ``transform`` and ``inverse_transform`` return the same form: an array of
    the same shape, or a list with an array of the same shape for each
    sequence. float32 data stay float32, other numbers become float64; the
    statistics are computed in float64. ``X`` is never modified. NaN and
    infinite values are rejected.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt.preprocessing import SequenceScaler
    >>> X = [np.array([[0.0, 10.0], [2.0, 10.0]]), np.array([[4.0, 10.0]])]
    >>> scaler = SequenceScaler().fit(X)
    >>> scaler.mean_, scaler.scale_
    (array([ 2., 10.]), array([1.63299316, 1.        ]))
    >>> [z.shape for z in scaler.transform(X)]
    [(2, 2), (1, 2)]
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, *, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X, y=None, sample_weight=None):
        """Compute the mean and standard deviation of each feature.

        Parameters
        ----------
        X : array-like or list of array-like
            Sequences (see Notes of the class).
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence; every valid step of
            sequence ``i`` counts with weight ``sample_weight[i]``.

        Returns
        -------
        self : SequenceScaler
        """
        for name in ("_scaler", "mean_", "var_", "scale_", "n_steps_seen_",
                     "n_features_in_"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the statistics with more sequences.

        The result is the same as one ``fit`` on all the sequences passed so
        far (up to rounding).

        Parameters
        ----------
        X : array-like or list of array-like
            Sequences with ``n_features_in_`` features per step (after the
            first call).
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence, given to each of its steps.

        Returns
        -------
        self : SequenceScaler
        """
        first_call = not hasattr(self, "_scaler")
        X_padded, lengths = check_sequences(
            X, n_features=None if first_call else self.n_features_in_,
            estimator_name=type(self).__name__,
        )
        steps = _stacked_steps(X_padded, lengths)
        step_weight = None
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X_padded, dtype=np.float64, ensure_non_negative=True
            )
            if not np.any(sample_weight > 0):
                raise ValueError(
                    "sample_weight must have a positive sum: every sequence has "
                    "weight 0, so there are no statistics to compute."
                )
            step_weight = np.repeat(sample_weight, lengths)
        if first_call:
            scaler = StandardScaler(with_mean=self.with_mean, with_std=self.with_std)
        else:
            scaler = self._scaler
        # Statistics in float64 whatever X's dtype (StandardScaler accumulates
        # in float64 as well, but would then keep float32 statistics).
        scaler.partial_fit(steps.astype(np.float64, copy=False), sample_weight=step_weight)
        self._scaler = scaler
        self.mean_ = scaler.mean_
        self.var_ = scaler.var_
        self.scale_ = scaler.scale_
        self.n_steps_seen_ = len(steps) + (0 if first_call else self.n_steps_seen_)
        self.n_features_in_ = X_padded.shape[2]
        return self

    def transform(self, X):
        """Standardize sequences: ``(x - mean_) / scale_`` at every step.

        Parameters
        ----------
        X : array-like or list of array-like
            Sequences of any length with ``n_features_in_`` features per step.

        Returns
        -------
        X_scaled : ndarray or list of ndarray
            In the form of ``X``: an array of its shape, or a list with an
            array of each sequence's shape.
        """
        return self._apply(X, inverse=False)

    def inverse_transform(self, X):
        """Undo ``transform``: ``z * scale_ + mean_`` at every step.

        Parameters
        ----------
        X : array-like or list of array-like
            Scaled sequences with ``n_features_in_`` features per step.

        Returns
        -------
        X_original : ndarray or list of ndarray
            In the form of ``X``.
        """
        return self._apply(X, inverse=True)

    def _apply(self, X, inverse):
        check_is_fitted(self)
        X_padded, lengths = check_sequences(
            X, n_features=self.n_features_in_, estimator_name=type(self).__name__
        )
        dtype = X_padded.dtype
        # A new array: check_sequences hands back the user's array when it is
        # already float and C-contiguous.
        out = X_padded.copy()
        mean = None if self.mean_ is None or not self.with_mean else self.mean_.astype(dtype)
        scale = None if self.scale_ is None else self.scale_.astype(dtype)
        if inverse:
            if scale is not None:
                out *= scale
            if mean is not None:
                out += mean
        else:
            if mean is not None:
                out -= mean
            if scale is not None:
                out /= scale
        return _in_form_of(X, out, lengths)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _stacked_steps(X_padded, lengths):
    """The valid steps of all sequences as rows, (sum(lengths), n_features):
    a view when no sequence is shorter than the padded length."""
    n_samples, n_timesteps, n_features = X_padded.shape
    if np.all(lengths == n_timesteps):
        return X_padded.reshape(n_samples * n_timesteps, n_features)
    return X_padded[_valid_steps(lengths, n_timesteps)]


def _in_form_of(X, out, lengths):
    """The padded (n, T, D) result in the form X was given: a list with an
    array shaped as each X[i] for a list (or a 1-D object array of
    sequences), a (n, T) array for univariate 2-D X, the 3-D array otherwise."""
    if isinstance(X, (list, tuple)) or is_array_of_sequences(X):
        return [
            out[i, :length, 0] if np.ndim(seq) == 1 else out[i, :length]
            for i, (seq, length) in enumerate(zip(X, lengths))
        ]
    # As check_sequences reads the dimensions (np.ndim would refuse array-likes
    # that only implement __array__).
    ndim = X.ndim if isinstance(getattr(X, "ndim", None), Integral) else np.asarray(X).ndim
    return out[:, :, 0] if ndim == 2 else out
