"""RNNStepClassifier and RNNStepRegressor: a label or a value for every time step.

Why: many sequence tasks score a network at every step (segmenting a sensor
stream into activities, tagging tokens, forecasting the next value, modelling
characters), and long streams are trained with truncated BPTT: unfold k steps,
backpropagate, update, carry the state on. These estimators put an output
layer on every step of the top recurrent layer and minimize the mean per-step
loss; with ``bptt_truncate=k`` each optimizer step covers one window of k
steps of every sequence in the minibatch, so one very long sequence trains
with memory bounded by k. Targets come as one array per sequence (or an array
aligned with X); predictions come back in the form X was given.
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_array

from cbptt._base import BaseRNN
from cbptt._classifier import _label_indices, check_class_labels, partial_fit_classes
from cbptt._docs import fill_doc
from cbptt._kernels._utils import softmax
from cbptt._regressor import _as_targets
from cbptt._layout import is_array_of_sequences


class _StepRNN(BaseRNN):
    """Per-step targets, predictions in X's form, scores over valid steps."""

    _parameter_constraints = {
        name: rule for name, rule in BaseRNN._parameter_constraints.items()
        if name not in ("pooling", "downsample")
    }

    def __init__(
        self,
        cell="gru",
        hidden_layer_sizes=(64,),
        nonlinearity="tanh",
        bidirectional=False,
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
    ):
        self.cell = cell
        self.hidden_layer_sizes = hidden_layer_sizes
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.rho = rho
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.clip_norm = clip_norm
        self.bptt_truncate = bptt_truncate
        self.verbose = verbose
        self.warm_start = warm_start
        self.n_threads = n_threads
        self.dtype = dtype

    def _requested_window(self, X, lengths):
        return None   # an output per input step: no averaging of steps

    def _head(self):
        return "sequence"

    # -- targets -----------------------------------------------------------
    def _check_targets(self, y):
        # One target array per sequence; _check_step_data pads them once the
        # lengths of X's sequences are known.
        return y if _is_sequence_list(y) else np.asarray(y)

    def _check_step_data(self, X, y, sample_weight, n_features=None):
        """(X padded, lengths, y padded to (n, T) or (n, T, n_outputs),
        sample_weight), with y's sequences as long as X's."""
        X, lengths, y, sample_weight = self._check_fit_data(X, y, sample_weight,
                                                            n_features)
        return X, lengths, _pad_targets(y, lengths, X.shape[1]), sample_weight

    def _step_outputs(self, X):
        """(outputs (n, T, C) zero past each length, lengths, whether X is a list)."""
        outputs = self._outputs(X)
        lengths = _lengths_of(X, outputs.shape[1])
        return outputs, lengths, _is_sequence_list(X)

    def _validation_stratify(self, y, n_val):
        return None

    def _validation_score(self, network, params, X, lengths, y, val, sample_weight,
                          n_threads):
        outputs = network.outputs(params, X[val], lengths[val], n_threads)
        return self._steps_metric(outputs, y[val], lengths[val],
                                  None if sample_weight is None else sample_weight[val])

    def _score_steps(self, X, y, sample_weight):
        """The per-step metric over every valid step of every sequence."""
        outputs, lengths, _ = self._step_outputs(X)
        y = self._encode(_pad_targets(y, lengths, outputs.shape[1]))
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
        return self._steps_metric(outputs, y, lengths, sample_weight)

    def _steps_metric(self, outputs, y, lengths, sample_weight):
        """_step_metric over the valid steps, each weighted by its sequence's
        weight; y encoded as in training."""
        valid = _valid_steps(lengths, outputs.shape[1])
        weights = None
        if sample_weight is not None:
            weights = np.repeat(sample_weight, lengths)
        return float(self._step_metric(outputs[valid], y[valid], weights))


@fill_doc(split="drawn at random", score="per-step accuracy", n_out="n_classes",
          per_step=True)
class RNNStepClassifier(ClassifierMixin, _StepRNN):
    """Recurrent neural network that predicts a class at every time step.

    A recurrent network (Elman, LSTM or GRU cells, stacked, optionally
    bidirectional) whose top layer's output at every step goes through a
    linear layer and a softmax; the mean per-step cross-entropy over all
    valid steps is minimized with minibatch SGD, Adam or RMSProp. With
    ``bptt_truncate=k``, training is truncated BPTT on windows of k steps
    from each sequence's first step: each optimizer step covers one window of
    every sequence in the minibatch, the state flows into the next window and
    the gradient does not, so long streams train with memory bounded by k.

    %(parameters)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen at any step.
    %(attributes)s

    See Also
    --------
    RNNClassifier : One class per sequence.
    RNNStepRegressor : A value at every step.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences, or a list of
    ``(n_timesteps_i, n_features)`` arrays of different lengths. ``y`` is a
    list of ``(n_timesteps_i,)`` label arrays, one per sequence, or an array
    ``(n_samples, n_timesteps)`` aligned with X (entries past a sequence's
    length are ignored). Predictions come back in X's form: a list of
    arrays for a list, an array for an array.

    The loss is the mean per-step cross-entropy, each step weighted by its
    sequence's ``sample_weight``: ``sum_i w_i sum_t l_it / sum_i w_i L_i``
    over the L_i steps of each sequence;
    ``bptt_truncate`` windows are each scored the same way. The ``max_iter``
    epochs count passes over the data, however many windows each has.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt import RNNStepClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 30, 1))
    >>> y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)  # sign of a running sum
    >>> clf = RNNStepClassifier(max_iter=10, random_state=0).fit(X, y)
    >>> clf.predict(X[:2]).shape
    (2, 30)
    """

    _loss = "cross_entropy"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences X with a label for every step.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences (see Notes of the class).
        y : list of array-like or array-like of shape (n_samples, n_timesteps)
            The label of every step of every sequence.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence (of each of its steps).

        Returns
        -------
        self : RNNStepClassifier
        """
        X, lengths, y, sample_weight = self._check_step_data(X, y, sample_weight)
        valid = _valid_steps(lengths, X.shape[1])
        warm = self.warm_start and hasattr(self, "classes_")
        classes = self.classes_ if warm else _step_classes(y[valid])
        self._fit(X, lengths, _indices(y, valid, classes), sample_weight, len(classes),
                  incremental=False)
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
        y : list of array-like or array-like of shape (n_samples, n_timesteps)
            The label of every step.
        classes : array-like of shape (n_classes,), default=None
            Every label that can ever appear; required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence.

        Returns
        -------
        self : RNNStepClassifier
        """
        first_call = not hasattr(self, "classes_")
        classes = partial_fit_classes(self, classes)
        n_features = None if first_call else self.n_features_in_
        X, lengths, y, sample_weight = self._check_step_data(X, y, sample_weight,
                                                             n_features)
        valid = _valid_steps(lengths, X.shape[1])
        self._fit(X, lengths, _indices(y, valid, classes), sample_weight, len(classes),
                  incremental=True)
        if first_call:
            self.classes_ = classes
            self.n_features_in_ = X.shape[2]
        return self

    def predict(self, X):
        """Predict the class of every step of every sequence.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        y : ndarray of shape (n_samples, n_timesteps) or list of ndarray
            A list of (n_timesteps_i,) arrays when X is a list.
        """
        outputs, lengths, as_list = self._step_outputs(X)
        return _in_form_of_x(self.classes_[np.argmax(outputs, axis=2)], lengths, as_list)

    def predict_proba(self, X):
        """Probability of each class at every step of every sequence.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        proba : ndarray of shape (n_samples, n_timesteps, n_classes) or list
            A list of (n_timesteps_i, n_classes) arrays when X is a list.
            Columns follow ``classes_``.
        """
        return self._probabilities(X, log=False)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_timesteps, n_classes) or list
        """
        return self._probabilities(X, log=True)

    def score(self, X, y, sample_weight=None):
        """Accuracy over every valid step of every sequence.

        Parameters
        ----------
        X : array-like or list of array-like
        y : list of array-like or array-like of shape (n_samples, n_timesteps)
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence, given to each of its steps.

        Returns
        -------
        score : float
        """
        return self._score_steps(X, y, sample_weight)

    def _probabilities(self, X, log):
        outputs, lengths, as_list = self._step_outputs(X)
        flat = np.ascontiguousarray(outputs.reshape(-1, outputs.shape[2]))
        softmax(flat, log_probabilities=log)
        return _in_form_of_x(flat.reshape(outputs.shape), lengths, as_list)

    def _encode(self, y):
        """Labels -> class indices; -1 for a label not in classes_ (never
        predicted)."""
        y = np.asarray(y)
        indices = np.searchsorted(self.classes_, y).clip(max=len(self.classes_) - 1)
        return np.where(self.classes_[indices] == y, indices, -1)

    def _step_metric(self, logits, y, weights):
        """Accuracy of the logits' classes against class indices y."""
        return np.average(np.argmax(logits, axis=1) == y, weights=weights)


@fill_doc(split="drawn at random", score="per-step R^2", n_out="n_outputs",
          per_step=True)
class RNNStepRegressor(RegressorMixin, _StepRNN):
    """Recurrent neural network that predicts a value at every time step.

    A recurrent network (Elman, LSTM or GRU cells, stacked, optionally
    bidirectional) whose top layer's output at every step goes through a
    linear layer; half the mean squared error over all valid steps (and
    outputs) is minimized with minibatch SGD, Adam or RMSProp. With
    ``bptt_truncate=k``, training is truncated BPTT on windows of k steps
    from each sequence's first step: each optimizer step covers one window of
    every sequence in the minibatch, the state flows into the next window and
    the gradient does not, so long streams train with memory bounded by k.

    %(parameters)s

    Attributes
    ----------
    n_outputs_ : int
        Number of values predicted per step.
    %(attributes)s

    See Also
    --------
    RNNRegressor : One value per sequence.
    RNNStepClassifier : A class at every step.

    Notes
    -----
    ``X`` is a 3-D array ``(n_samples, n_timesteps, n_features)``, a 2-D array
    ``(n_samples, n_timesteps)`` of univariate sequences, or a list of
    ``(n_timesteps_i, n_features)`` arrays of different lengths. ``y`` is a
    list of ``(n_timesteps_i,)`` or ``(n_timesteps_i, n_outputs)`` arrays, one
    per sequence, or an array ``(n_samples, n_timesteps[, n_outputs])``
    aligned with X (entries past a sequence's length are ignored).
    Predictions come back in X's form: a list of arrays for a list, an array
    for an array.

    The loss is half the mean squared error over the outputs of every valid
    step, each step weighted by its sequence's ``sample_weight``:
    ``sum_i w_i sum_t l_it / sum_i w_i L_i`` with ``l_it = 1 / (2 C) sum_c
    (y_pred_itc - y_itc)^2``.

    Examples
    --------
    >>> import numpy as np
    >>> from cbptt import RNNStepRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 30, 1))
    >>> y = np.zeros((100, 30))
    >>> y[:, 2:] = X[:, :-2, 0]                      # the input two steps ago
    >>> reg = RNNStepRegressor(max_iter=10, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2, 30)
    """

    _loss = "squared_error"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences X with a value for every step.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences (see Notes of the class).
        y : list of array-like or array-like
            The target of every step: (n_samples, n_timesteps[, n_outputs]),
            or a list of (n_timesteps_i[, n_outputs]) arrays.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence (of each of its steps).

        Returns
        -------
        self : RNNStepRegressor
        """
        X, lengths, y, sample_weight = self._check_step_data(X, y, sample_weight)
        targets = _step_values(y, lengths, X.dtype)
        self._fit(X, lengths, targets, sample_weight, targets.shape[2], incremental=False)
        self.n_outputs_ = targets.shape[2]
        self._one_output = y.ndim == 2
        self.n_features_in_ = X.shape[2]
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch over X, continuing from the current weights.

        Parameters
        ----------
        X : array-like or list of array-like
            Training sequences.
        y : list of array-like or array-like
            The target of every step; as many outputs as in previous calls.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sequence.

        Returns
        -------
        self : RNNStepRegressor
        """
        first_call = not hasattr(self, "n_outputs_")
        n_features = None if first_call else self.n_features_in_
        X, lengths, y, sample_weight = self._check_step_data(X, y, sample_weight,
                                                             n_features)
        targets = _step_values(y, lengths, X.dtype)
        if not first_call and targets.shape[2] != self.n_outputs_:
            raise ValueError(
                f"y has {targets.shape[2]} output(s) per step, but this "
                f"RNNStepRegressor was trained on {self.n_outputs_}; every call to "
                "partial_fit needs the same number."
            )
        self._fit(X, lengths, targets, sample_weight, targets.shape[2], incremental=True)
        if first_call:
            self.n_outputs_ = targets.shape[2]
            self._one_output = y.ndim == 2
            self.n_features_in_ = X.shape[2]
        return self

    def predict(self, X):
        """Predict the value(s) of every step of every sequence.

        Parameters
        ----------
        X : array-like or list of array-like

        Returns
        -------
        y : ndarray of shape (n_samples, n_timesteps[, n_outputs]) or list
            A list of (n_timesteps_i[, n_outputs]) arrays when X is a list;
            one value per step when the targets had one.
        """
        outputs, lengths, as_list = self._step_outputs(X)
        if self._one_output:
            outputs = outputs[:, :, 0]
        return _in_form_of_x(outputs, lengths, as_list)

    def score(self, X, y, sample_weight=None):
        """R^2 over every valid step of every sequence (averaged over outputs).

        Parameters
        ----------
        X : array-like or list of array-like
        y : list of array-like or array-like
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence, given to each of its steps.

        Returns
        -------
        score : float
        """
        return self._score_steps(X, y, sample_weight)

    def _encode(self, y):
        return np.asarray(y, dtype=np.float64)

    def _step_metric(self, outputs, y, weights):
        return r2_score(y.reshape(len(y), -1), outputs, sample_weight=weights)


# -- the forms of per-step targets and predictions ----------------------------------

def _is_sequence_list(X):
    """A list of sequences (or of per-sequence targets), in any form."""
    return isinstance(X, (list, tuple)) or is_array_of_sequences(X)


def _lengths_of(X, n_timesteps):
    """The length of each sequence of X (as check_sequences reads it)."""
    if _is_sequence_list(X):
        return np.array([len(seq) for seq in X], dtype=np.intp)
    return np.full(np.shape(X)[0], n_timesteps, dtype=np.intp)


def _valid_steps(lengths, n_timesteps):
    """(n, T) mask of the steps each sequence has."""
    return np.arange(n_timesteps) < np.asarray(lengths)[:, np.newaxis]


def _pad_targets(y, lengths, n_timesteps):
    """y as an array (n, T) or (n, T, n_outputs): from a list of per-sequence
    arrays (each as long as its sequence) or from an array aligned with X."""
    n_samples = len(lengths)
    if _is_sequence_list(y):
        if len(y) != n_samples:
            raise ValueError(
                f"X has {n_samples} sequences but y has {len(y)}; give one target "
                "array per sequence."
            )
        seqs = [np.asarray(target) for target in y]
        for i, (target, length) in enumerate(zip(seqs, lengths)):
            if target.ndim not in (1, 2) or len(target) != length:
                raise ValueError(
                    f"y[{i}] has shape {target.shape}, but X[{i}] has {length} steps: "
                    "each sequence needs one target per step, shape (n_timesteps_i,) "
                    "or (n_timesteps_i, n_outputs)."
                )
        if len({target.shape[1:] for target in seqs}) > 1:
            raise ValueError("Every y[i] must have the same number of outputs per step.")
        padded = np.zeros((n_samples, n_timesteps) + seqs[0].shape[1:],
                          dtype=np.result_type(*seqs))
        for i, target in enumerate(seqs):
            padded[i, : len(target)] = target
        return padded
    y = np.asarray(y)
    if y.ndim not in (2, 3) or y.shape[:2] != (n_samples, n_timesteps):
        raise ValueError(
            f"y has shape {y.shape}; with X of {n_samples} sequences of up to "
            f"{n_timesteps} steps it must be ({n_samples}, {n_timesteps}) or "
            f"({n_samples}, {n_timesteps}, n_outputs): a target for every step "
            "(or a list of one array per sequence)."
        )
    return y


def _step_classes(labels):
    """The sorted classes of the labels at valid steps (at least 2)."""
    labels = np.asarray(labels)
    check_class_labels(labels)
    classes = unique_labels(labels)
    if len(classes) < 2:
        raise ValueError(
            f"RNNStepClassifier needs at least 2 classes over the steps; got 1 "
            f"class: {classes[0].tolist()!r}."
        )
    return classes


def _indices(y, valid, classes):
    """(n, T) intp class indices of the labels at valid steps, 0 elsewhere."""
    if y.ndim != 2:
        raise ValueError(
            f"y must hold one label per step, shape (n_samples, n_timesteps) or a "
            f"list of (n_timesteps_i,) arrays; got {y.ndim - 2} dimension(s) per step."
        )
    indices = np.zeros(y.shape, dtype=np.intp)
    indices[valid] = _label_indices(y[valid], classes)
    return indices


def _step_values(y, lengths, dtype):
    """(n, T, n_outputs) float targets in X's dtype, zero past each length;
    finite at every valid step."""
    values = y[:, :, np.newaxis] if y.ndim == 2 else y
    valid = _valid_steps(lengths, y.shape[1])
    check_array(values[valid], dtype="numeric", input_name="y")
    out = np.zeros(values.shape, dtype=dtype)
    out[valid] = _as_targets(values[valid], dtype)
    return out


def _in_form_of_x(values, lengths, as_list):
    """Per-step predictions (n, T, ...) as X was given: one array per
    sequence (cut to its length) for a list, the array otherwise."""
    if as_list:
        return [values[i, :length] for i, length in enumerate(lengths)]
    return values
