"""RNNClassifier: a scikit-learn classifier over sequences.

Why: users who know ``MLPClassifier`` should be able to classify sequences
with the same parameters, methods and fitted attributes, inside Pipelines and
grid searches. This module maps labels of any type to class indices and the
network's logits back to probabilities; training lives in ``_base``.
"""

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import column_or_1d

from cbptt._base import BaseRNN
from cbptt._docs import fill_doc
from cbptt._kernels._utils import softmax


@fill_doc(split="stratified", score="accuracy", n_out="n_classes")
class RNNClassifier(ClassifierMixin, BaseRNN):
    """Recurrent neural network classifier trained by backpropagation through time.

    A many-to-one recurrent network (Elman, LSTM or GRU cells, stacked,
    optionally bidirectional): each sequence is read step by step, the last
    layer's state after the sequence's own last step (or the mean or max of
    its outputs over the steps, ``pooling``) goes through a linear layer and
    a softmax, and the cross-entropy is minimized with minibatch SGD, Adam or
    RMSProp. Forward and backward passes are Cython kernels parallel over the
    minibatch with OpenMP; results do not depend on the number of threads.

    %(parameters)s
    class_weight : dict, "balanced" or None, default=None
        Weight of each class in the loss (and the early-stopping score),
        multiplying ``sample_weight``: ``{label: weight}``, or "balanced" for
        ``n_samples / (n_classes * np.bincount(y))`` (not with
        ``partial_fit``). None weighs every class 1.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    %(attributes)s

    See Also
    --------
    cbptt.loss_and_grad : One forward and backward pass on given weights.
    sklearn.neural_network.MLPClassifier : The feed-forward counterpart.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences, or a list of
    ``(n_timesteps_i, n_features)`` arrays of different lengths. The network
    computes in ``dtype`` (float32 by default) whatever X's dtype.
    Sequences at predict time may have any length.

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

    _loss = "cross_entropy"

    _parameter_constraints = {
        **BaseRNN._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        cell="gru",
        hidden_layer_sizes=(64,),
        nonlinearity="tanh",
        bidirectional=False,
        pooling="max",
        downsample="auto",
        dropout=0.0,
        solver="adam",
        learning_rate="adaptive",
        learning_rate_init=0.003,
        power_t=0.5,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        rho=0.9,
        alpha=1e-4,
        batch_size="auto",
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        n_iter_no_change="auto",
        early_stopping=False,
        validation_fraction=0.1,
        clip_norm=5.0,
        bptt_truncate=None,
        verbose=False,
        warm_start=False,
        n_threads=None,
        dtype="float32",
        class_weight=None,
    ):
        super().__init__(
            cell=cell,
            hidden_layer_sizes=hidden_layer_sizes,
            nonlinearity=nonlinearity,
            bidirectional=bidirectional,
            pooling=pooling,
            downsample=downsample,
            dropout=dropout,
            solver=solver,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            rho=rho,
            alpha=alpha,
            batch_size=batch_size,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            n_iter_no_change=n_iter_no_change,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            clip_norm=clip_norm,
            bptt_truncate=bptt_truncate,
            verbose=verbose,
            warm_start=warm_start,
            n_threads=n_threads,
            dtype=dtype,
        )
        self.class_weight = class_weight

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
                f"got 1 class: {classes[0].tolist()!r}."
            )
        y_index = _label_indices(y, classes)
        sample_weight = self._weigh_classes(y, y_index, classes, sample_weight)
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
        classes = partial_fit_classes(self, classes)
        n_features = None if first_call else self.n_features_in_
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight, n_features)
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: the "
                "class frequencies of the whole data are unknown. Compute them once "
                "with sklearn.utils.class_weight.compute_class_weight('balanced', "
                "classes=classes, y=y) and pass the dict {class: weight} as "
                "class_weight."
            )
        y_index = _label_indices(y, classes)
        sample_weight = self._weigh_classes(y, y_index, classes, sample_weight)
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
        logits = self._outputs(X)  # raises NotFittedError before classes_ is read
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
        probabilities = self._outputs(X)
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
        log_probabilities = self._outputs(X)
        softmax(log_probabilities, log_probabilities=True)
        return log_probabilities

    # -- internals ---------------------------------------------------------
    def _weigh_classes(self, y, y_index, classes, sample_weight):
        """sample_weight times each sample's class weight (None if neither
        is given); the loss and the early-stopping score both use it."""
        if self.class_weight is None:
            return sample_weight
        try:  # "balanced" counts each sample by its weight, as scikit-learn does
            per_class = compute_class_weight(self.class_weight, classes=classes, y=y,
                                             sample_weight=sample_weight)
        except TypeError:  # scikit-learn < 1.7 counts the samples
            per_class = compute_class_weight(self.class_weight, classes=classes, y=y)
        if not (np.all(np.isfinite(per_class)) and np.all(per_class >= 0)):
            raise ValueError(
                f"class_weight must give every class a finite, non-negative weight; "
                f"got {dict(zip(classes.tolist(), per_class.tolist()))}."
            )
        weights = per_class[y_index]
        return weights if sample_weight is None else sample_weight * weights

    def _check_targets(self, y):
        y = column_or_1d(y, warn=True)
        check_class_labels(y)
        return y

    def _validation_stratify(self, y, n_val):
        """Stratify the early-stopping split when every class can be on both
        sides of it."""
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.min() >= 2 and min(n_val, len(y) - n_val) >= len(counts):
            return y
        return None

    def _validation_metric(self, logits, y, sample_weight):
        """Accuracy of the logits' classes against class indices y."""
        return np.average(np.argmax(logits, axis=1) == y, weights=sample_weight)


def check_class_labels(y):
    """Raise if y (an array) cannot hold class labels: non-finite floats
    (before scikit-learn's check, whose cast of NaN would warn first) or
    continuous values."""
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinity; class labels must be finite.")
    if y.dtype.kind not in "biu":  # integer labels are always class labels
        check_classification_targets(y)


def partial_fit_classes(estimator, classes):
    """The classes a call to partial_fit trains on: ``classes`` on the first
    call (required, at least 2), the fitted ``classes_`` after it (``classes``
    may repeat them)."""
    if not hasattr(estimator, "classes_"):
        if classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit: "
                "the list of every label that can appear."
            )
        classes = unique_labels(classes)
        if len(classes) < 2:
            raise ValueError("classes must contain at least 2 labels.")
        return classes
    if classes is not None and not np.array_equal(estimator.classes_, np.unique(classes)):
        raise ValueError(
            f"classes={classes!r} differs from the classes of the previous "
            f"call, {estimator.classes_!r}."
        )
    return estimator.classes_


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
