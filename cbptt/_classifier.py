"""RNNClassifier: a scikit-learn classifier over sequences.

Why: users who know ``MLPClassifier`` should be able to classify sequences
with the same parameters, methods and fitted attributes, inside Pipelines and
grid searches. This module maps labels of any type to class indices and the
network's logits back to probabilities; training lives in ``_base``.
"""

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from cbptt._base import BaseRNN
from cbptt._kernels._utils import softmax
from cbptt._parallel import effective_n_threads, single_threaded_blas
from cbptt._sequences import check_sequences


class RNNClassifier(ClassifierMixin, BaseRNN):
    """Recurrent neural network classifier trained by backpropagation through time.

    A many-to-one recurrent network (Elman, LSTM or GRU cells, stacked,
    optionally bidirectional): each sequence is read step by step, the last
    layer's state after the sequence's own last step goes through a linear
    layer and a softmax, and the cross-entropy is minimized with minibatch
    SGD, Adam or RMSProp. Forward and backward passes are Cython kernels parallel over the
    minibatch with OpenMP; results do not depend on the number of threads.

    Parameters
    ----------
    cell : {"gru", "lstm", "rnn"}, default="gru"
        Recurrent cell, with PyTorch's equations and gate order: the GRU
        (gates r, z, n), the LSTM (gates i, f, g, o) or the Elman RNN
        ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``; ``h_0 = c_0 = 0``.
        The GRU is the default because it was the most accurate for its
        cost on the tasks of ``benchmarks/cell_study.py`` (see the docs).
    hidden_layer_sizes : int or tuple of int, default=(64,)
        Hidden units of each stacked recurrent layer; layer k + 1 reads
        layer k's whole output sequence.
    nonlinearity : {"tanh", "relu"}, default="tanh"
        The activation ``f`` of the Elman cell. Gated cells accept only
        "tanh".
    bidirectional : bool, default=False
        Each layer also runs backward over each sequence's valid steps; the
        head reads the forward state at the last step and the backward
        state at the first step (PyTorch's ``h_n``).
    dropout : float, default=0.0
        Probability of zeroing each output unit of every layer but the last,
        during training only (as PyTorch's ``dropout``).
    solver : {"adam", "sgd", "rmsprop"}, default="adam"
        Optimizer of the weights.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Learning rate schedule, used with ``solver="sgd"`` only (as in
        ``MLPClassifier``): "invscaling" uses ``learning_rate_init / (t_ + 1)
        ** power_t``; "adaptive" divides the rate by 5 each time the training
        loss (or validation score) stops improving for ``n_iter_no_change``
        epochs, and stops once it falls below 1e-6.
    learning_rate_init : float, default=0.01
        Initial step size.
    power_t : float, default=0.5
        Exponent of the "invscaling" schedule.
    momentum : float, default=0.9
        Momentum of ``solver="sgd"``, in [0, 1].
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum with ``solver="sgd"`` and ``momentum > 0``.
    beta_1, beta_2 : float, default=0.9, 0.999
        Decay rates of Adam's first and second moment estimates, in [0, 1).
    epsilon : float, default=1e-8
        Numerical stability term of Adam and RMSProp.
    rho : float, default=0.9
        Decay rate of RMSProp's running average of squared gradients.
    alpha : float, default=1e-4
        Strength of the L2 penalty on the weight matrices (not the biases),
        added to the loss as ``alpha / (2 * batch_size) * ||W||^2`` (with
        ``sample_weight``: the minibatch's sum of weights instead of its size).
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is ``min(64, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling and the validation split.
    tol : float, default=1e-4
        Training stops when the loss (or validation score) has not improved
        by at least ``tol`` for ``n_iter_no_change`` consecutive epochs.
    n_iter_no_change : int, default=10
        Epochs without improvement allowed before stopping.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified), stop when
        its accuracy stops improving and keep the best weights seen.
    validation_fraction : float, default=0.1
        Fraction of the training data held out for early stopping.
    clip_norm : float or None, default=5.0
        Rescale each minibatch gradient so that its global L2 norm is at most
        ``clip_norm``; None disables clipping.
    bptt_truncate : int or None, default=None
        Backpropagate through the last ``bptt_truncate`` steps of each
        sequence only (truncated BPTT). None means full BPTT. Not defined
        with ``bidirectional=True``.
        The steps before those run forward only, so the memory of training
        grows with ``bptt_truncate``, not with the sequence length.
    verbose : bool, default=False
        Print loss, validation score and seconds for each epoch.
    warm_start : bool, default=False
        Start ``fit`` from the weights of the previous fit.
    n_threads : int or None, default=None
        Maximum number of OpenMP threads. None uses what OpenMP allows
        (``OMP_NUM_THREADS``, ``threadpoolctl``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features per time step.
    weights_ : dict of str -> ndarray
        Trained weights with PyTorch's ``state_dict`` names and shapes
        (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
        ``bias_hh_l{k}``, suffix ``_reverse`` for reverse directions) plus
        the head ``weight_out`` (n_classes, n_directions * H_last) and
        ``bias_out``; the format :func:`cbptt.loss_and_grad` takes.
    loss_ : float
        Mean training loss (with the L2 term) of the last epoch.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    best_loss_ : float or None
        Lowest training loss seen; None with ``early_stopping=True``.
    validation_scores_ : list of float or None
        Held-out accuracy of each epoch with ``early_stopping=True``.
    best_validation_score_ : float or None
        Best held-out accuracy with ``early_stopping=True``.
    n_iter_ : int
        Number of epochs run.
    t_ : int
        Number of training samples seen.

    See Also
    --------
    cbptt.loss_and_grad : One forward and backward pass on given weights.
    sklearn.neural_network.MLPClassifier : The feed-forward counterpart.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences, or a list of
    ``(n_timesteps_i, n_features)`` arrays of different lengths. The data's
    dtype decides the precision: float32 input trains in float32, anything
    else in float64. Sequences at predict time may have any length.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from cbptt import RNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0     # 8 rows of 8 pixels: 8 steps
    >>> clf = RNNClassifier(max_iter=5, random_state=0).fit(X[:1000], y[:1000])
    >>> clf.predict_proba(X[1000:1003]).shape
    (3, 10)
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences X with labels y.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences (see Notes of the class).
        y : array-like of shape (n_samples,)
            Class labels of any type.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss.

        Returns
        -------
        self : RNNClassifier
        """
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight)
        warm = self.warm_start and hasattr(self, "classes_")
        classes = self.classes_ if warm else unique_labels(y)
        if len(classes) < 2:
            raise ValueError(
                f"RNNClassifier needs samples of at least 2 classes in the data; "
                f"got 1 class: {classes[0]!r}."
            )
        y_index = _label_indices(y, classes)
        self._fit(X, lengths, y_index, sample_weight, len(classes), incremental=False)
        # Set once training succeeded: a failed fit leaves no half-fitted model.
        self.classes_ = classes
        self.n_features_in_ = X.shape[2]
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one epoch over X, continuing from the current weights.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences.
        y : array-like of shape (n_samples,)
            Class labels.
        classes : array-like of shape (n_classes,), default=None
            Every label that can ever appear; required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss.

        Returns
        -------
        self : RNNClassifier
        """
        first_call = not hasattr(self, "classes_")
        if first_call:
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit: "
                    "the list of every label that can appear."
                )
            classes = unique_labels(classes)
            if len(classes) < 2:
                raise ValueError("classes must contain at least 2 labels.")
        elif classes is not None and not np.array_equal(self.classes_, np.unique(classes)):
            raise ValueError(
                f"classes={classes!r} differs from the classes of the previous "
                f"call, {self.classes_!r}."
            )
        n_features = None if first_call else self.n_features_in_
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight, n_features)
        if not first_call:
            classes = self.classes_
        y_index = _label_indices(y, classes)
        self._fit(X, lengths, y_index, sample_weight, len(classes), incremental=True)
        if first_call:  # only once training succeeded, as in fit
            self.classes_ = classes
            self.n_features_in_ = X.shape[2]
        return self

    def predict(self, X):
        """Predict the class of each sequence.

        Parameters
        ----------
        X : array-like or list of array-like
            Sequences of any length, with ``n_features_in_`` features per step.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        logits = self._logits(X)  # raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def predict_proba(self, X):
        """Probability of each class for each sequence.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        probabilities = self._logits(X)
        softmax(probabilities, log_probabilities=False)
        return probabilities

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        log_probabilities = self._logits(X)
        softmax(log_probabilities, log_probabilities=True)
        return log_probabilities

    # -- internals ---------------------------------------------------------
    def _check_fit_data(self, X, y, sample_weight, n_features=None):
        X, lengths = check_sequences(
            X, n_features=n_features, estimator_name=type(self).__name__
        )
        y = column_or_1d(y, warn=True)
        if len(y) != X.shape[0]:
            raise ValueError(
                f"X has {X.shape[0]} sequences but y has {len(y)} labels; they "
                "must match."
            )
        if y.dtype.kind not in "biu":  # integer labels are always class labels
            check_classification_targets(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
            if not np.sum(sample_weight) > 0:
                raise ValueError("sample_weight must have a positive sum.")
        return X, lengths, y, sample_weight

    def _logits(self, X):
        check_is_fitted(self)
        X, lengths = check_sequences(
            X, n_features=self.n_features_in_, estimator_name=type(self).__name__
        )
        network = self._network(X.shape[2], len(self.classes_))
        params = network.pack(self.weights_, X.dtype)
        with single_threaded_blas():
            logits = network.logits(params, X, lengths, effective_n_threads(self.n_threads))
        if not np.all(np.isfinite(logits)):
            raise ValueError(
                "The network's output is not finite for some sequences: their "
                "values are too large for the trained weights. Scale the input "
                "features as at fit."
            )
        return logits

    def _validation_split(self, y, rng):
        n_val = int(np.ceil(self.validation_fraction * len(y)))
        if n_val < 2 or len(y) - n_val < 1:
            raise ValueError(
                f"The validation set for early stopping would have {n_val} of the "
                f"{len(y)} samples; it needs at least 2 and must leave some for "
                "training. Adjust validation_fraction or pass more data."
            )
        counts = np.bincount(y)
        counts = counts[counts > 0]
        # Stratify when every class can be on both sides of the split.
        stratifiable = (
            counts.min() >= 2 and min(n_val, len(y) - n_val) >= len(counts)
        )
        train, val = train_test_split(
            np.arange(len(y)), test_size=self.validation_fraction,
            random_state=rng.randint(np.iinfo(np.int32).max),
            stratify=y if stratifiable else None,
        )
        return np.sort(train), val

    def _validation_score(self, network, params, X, lengths, y, val, sample_weight,
                          n_threads):
        logits = network.logits(params, X[val], lengths[val], n_threads)
        correct = np.argmax(logits, axis=1) == y[val]
        weights = None if sample_weight is None else sample_weight[val]
        return float(np.average(correct, weights=weights))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


def _label_indices(y, classes):
    """The index of each label of y in the sorted array classes; a ValueError
    names the labels of y that are not in classes."""
    indices = np.searchsorted(classes, y).clip(max=len(classes) - 1)
    unknown = classes[indices] != y
    if np.any(unknown):
        raise ValueError(
            f"y contains labels {np.unique(y[unknown]).tolist()} not in classes_ "
            f"{classes.tolist()}."
        )
    return indices.astype(np.intp)
