"""RNNRegressor: a scikit-learn regressor over sequences.

Why: sequences often come with a number, not a label (remaining useful life,
a patient's score, the next value of a series). Users who know
``MLPRegressor`` get the same parameters, methods and fitted attributes with
a recurrent network in front. This module checks float targets and returns
the network's outputs as predictions; training lives in ``_base``, the
squared-error loss in the kernels.
"""

import numpy as np
from sklearn.base import MultiOutputMixin, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_array, column_or_1d

from cbptt._base import BaseRNN
from cbptt._docs import fill_doc


@fill_doc(split="drawn at random", score="R^2", n_out="n_outputs")
class RNNRegressor(MultiOutputMixin, RegressorMixin, BaseRNN):
    """Recurrent neural network regressor trained by backpropagation through time.

    A many-to-one recurrent network (Elman, LSTM or GRU cells, stacked,
    optionally bidirectional): each sequence is read step by step, the last
    layer's state after the sequence's own last step (or the mean or max of
    its outputs over the steps, ``pooling``) goes through a linear layer whose
    outputs are the predictions, and half the mean squared error is minimized
    with minibatch SGD, Adam or RMSProp, as in ``MLPRegressor``. Forward and
    backward passes are Cython kernels parallel over the minibatch with
    OpenMP; results do not depend on the number of threads.

    %(parameters)s

    Attributes
    ----------
    n_outputs_ : int
        Number of values predicted per sequence.
    %(attributes)s

    See Also
    --------
    RNNClassifier : The same network with a softmax cross-entropy head.
    cbptt.loss_and_grad : One forward and backward pass on given weights.
    sklearn.neural_network.MLPRegressor : The feed-forward counterpart.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences, or a list of
    ``(n_timesteps_i, n_features)`` arrays of different lengths. The network
    computes in ``dtype`` (float32 by default) whatever X's dtype.
    Sequences at predict time may have any length.

    The loss is ``sum_i w_i l_i / sum_i w_i`` with ``l_i = 1 / (2 C) *
    sum_c (y_pred_ic - y_ic)^2`` over the C outputs, plus the L2 term. The
    targets are used as given: scale them (e.g. with
    :class:`~sklearn.compose.TransformedTargetRegressor`) when they are far
    from unit size, as for ``MLPRegressor``.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt import RNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 20, 1))       # 200 noisy series of 20 steps
    >>> y = X.mean(axis=(1, 2))                  # predict each series' mean
    >>> reg = RNNRegressor(pooling="mean", max_iter=20, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    _loss = "squared_error"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences X with targets y.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences (see Notes of the class).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss.

        Returns
        -------
        self : RNNRegressor
        """
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight)
        targets = _as_targets(y, X.dtype)
        self._fit(X, lengths, targets, sample_weight, targets.shape[1], incremental=False)
        # Set once training succeeded: a failed fit leaves no half-fitted model.
        self.n_outputs_ = targets.shape[1]
        self.n_features_in_ = X.shape[2]
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch over X, continuing from the current weights.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values; as many outputs as in the previous calls.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss.

        Returns
        -------
        self : RNNRegressor
        """
        first_call = not hasattr(self, "n_outputs_")
        n_features = None if first_call else self.n_features_in_
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight, n_features)
        targets = _as_targets(y, X.dtype)
        if not first_call and targets.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {targets.shape[1]} output(s), but this RNNRegressor was "
                f"trained on {self.n_outputs_}; every call to partial_fit needs the "
                "same number."
            )
        self._fit(X, lengths, targets, sample_weight, targets.shape[1], incremental=True)
        if first_call:  # only once training succeeded, as in fit
            self.n_outputs_ = targets.shape[1]
            self.n_features_in_ = X.shape[2]
        return self

    def predict(self, X):
        """Predict the target values of each sequence.

        Parameters
        ----------
        X : array-like or list of array-like
            Sequences of any length, with ``n_features_in_`` features per step.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            One value per sequence when the model has one output.
        """
        outputs = self._outputs(X)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    # -- internals ---------------------------------------------------------
    def _check_targets(self, y):
        if y is None:  # check_array's message would speak of a 0-d array
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None."
            )
        # allow_nd: a y of 3 or more dimensions gets the message below, which
        # says the shapes y may have.
        y = check_array(y, ensure_2d=False, allow_nd=True, dtype="numeric",
                        input_name="y")
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)   # as MLPRegressor: (n, 1) is (n,)
        if y.ndim not in (1, 2):
            raise ValueError(
                f"y must have shape (n_samples,) or (n_samples, n_outputs); got "
                f"{y.ndim} dimensions."
            )
        return y

    def _validation_stratify(self, y, n_val):
        return None

    def _validation_metric(self, outputs, y, sample_weight):
        """R^2 of the outputs against the targets y (uniform over outputs)."""
        return r2_score(y, outputs, sample_weight=sample_weight)


def _as_targets(y, dtype):
    """y as the kernels read it: (n_samples, n_outputs), C-contiguous, in the
    training dtype."""
    with np.errstate(over="ignore"):  # the error below says it, not a RuntimeWarning
        targets = np.ascontiguousarray(np.reshape(y, (len(y), -1)), dtype=dtype)
    if not np.all(np.isfinite(targets)):
        raise ValueError(
            f"y has values too large for {np.dtype(dtype).name}, the precision the "
            "network trains in. Scale the targets (e.g. with "
            "TransformedTargetRegressor) or set dtype='float64'."
        )
    return targets
