"""The estimator core shared by cbptt's estimators: parameters, initialization,
epochs over minibatches, early stopping, optimizer steps and clipping.

Why: everything about *training* a recurrent net is independent of what its
output means. Subclasses say which loss scores the output and how targets
become what it reads (class indices, or float values), and how a validation
set is scored; this module owns the loop, which works on the flat parameter
vector of :class:`cbptt._functional.Network` and calls one compiled kernel per
epoch.
"""

import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from cbptt._functional import (
    CELLS,
    N_GATES,
    NONLINEARITIES,
    POOLINGS,
    Network,
    check_nonlinearity,
    check_truncation,
    normalized_weights,
)
from cbptt._kernels import network as _kernels
from cbptt._optimizers import make_optimizer
from cbptt._parallel import effective_n_threads, single_threaded_blas
from cbptt._sequences import check_positive_int_or_none, check_sequences

_DIVERGED = (
    "Training diverged: {what} at iteration {epoch}. Lower "
    "learning_rate_init (now {lr}), set clip_norm (e.g. clip_norm=1.0), or "
    "scale the input features."
)


def _orthogonal(rng, n):
    """A random n x n orthogonal matrix, uniformly distributed (Haar)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def init_weights(network, rng, dtype):
    """Initial flat parameters, Keras-style.

    ``weight_ih`` and ``weight_out``: Glorot uniform over each gate's block;
    ``weight_hh``: a random orthogonal matrix per gate (keeps the recurrence
    norm-preserving at the start); biases zero, except the LSTM forget gate's
    ``bias_ih`` block, which is 1 so that the cell remembers by default.
    """
    flat = np.zeros(network.n_params, dtype=dtype)
    n_gates = N_GATES[network.cell]
    for name, view in network.unpack(flat).items():
        if name.startswith("weight_hh"):
            H = view.shape[1]
            for g in range(n_gates):
                view[g * H : (g + 1) * H] = _orthogonal(rng, H)
        elif name.startswith("weight"):
            rows = view.shape[0] // n_gates if name != "weight_out" else view.shape[0]
            bound = np.sqrt(6.0 / (rows + view.shape[1]))
            view[...] = rng.uniform(-bound, bound, size=view.shape)
        elif network.cell == "lstm" and name.startswith("bias_ih"):
            H = view.shape[0] // 4
            view[H : 2 * H] = 1.0
    return flat


class BaseRNN(BaseEstimator):
    """Training loop shared by every estimator (see RNNClassifier).

    Subclasses set ``_loss`` (the kernels' loss) and define ``_check_targets``
    (y as given -> y validated), ``_validation_stratify`` and
    ``_validation_metric``; ``_head`` says what the output layer reads.
    """

    _loss = None

    # The "?" link of the HTML repr: the estimator's entry in the API reference.
    _doc_link_module = "cbptt"
    _doc_link_template = (
        "https://cbptt.readthedocs.io/en/latest/api.html#{estimator_module}.{estimator_name}"
    )

    _parameter_constraints = {
        "cell": [StrOptions(set(CELLS))],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "nonlinearity": [StrOptions(set(NONLINEARITIES))],
        "bidirectional": ["boolean"],
        "pooling": [StrOptions(set(POOLINGS))],
        "downsample": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "solver": [StrOptions({"adam", "sgd", "rmsprop"})],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "rho": [Interval(Real, 0, 1, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "clip_norm": [None, Interval(Real, 0, None, closed="neither")],
        "bptt_truncate": [None, Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
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
    ):
        self.cell = cell
        self.hidden_layer_sizes = hidden_layer_sizes
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.downsample = downsample
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

    # -- helpers ---------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        if not sizes or any(
            not isinstance(h, Integral) or isinstance(h, bool) or h < 1 for h in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive integer or a non-empty "
                f"sequence of positive integers; got {self.hidden_layer_sizes!r}."
            )
        if len(sizes) > _kernels.max_layers():
            raise ValueError(
                f"hidden_layer_sizes has {len(sizes)} layers; at most "
                f"{_kernels.max_layers()} are supported."
            )
        return sizes

    def _head(self):
        """The kernels' ``output``: what the head reads of the top layer."""
        return self.pooling

    def _requested_window(self, X, lengths):
        """How many input steps ``downsample`` averages into one, for the
        padded training sequences X (None: the estimator has no
        ``downsample``)."""
        if self.downsample == "auto":
            return auto_window(X, lengths)
        return self.downsample

    def _network(self, n_features, n_outputs):
        check_nonlinearity(self.cell, self.nonlinearity)
        check_positive_int_or_none(self.bptt_truncate, "bptt_truncate")
        check_truncation(self.bptt_truncate, self.bidirectional, self._head(), "pooling")
        return Network(self.cell, self.nonlinearity, n_features, self._hidden_sizes(),
                       n_outputs, self.bidirectional, self._head(), self._loss,
                       self.dropout)

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return auto_batch_size(n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                f"Got batch_size={self.batch_size} larger than the number of "
                f"training samples ({n_samples}); using {n_samples}.",
                UserWarning,
            )
        return min(self.batch_size, n_samples)

    def _patience(self, steps_per_epoch):
        """Epochs without improvement that the stopping rule allows."""
        if self.n_iter_no_change == "auto":
            return auto_patience(steps_per_epoch)
        return self.n_iter_no_change

    def _is_fitted_for(self, network):
        return (
            hasattr(self, "weights_")
            and {k: v.shape for k, v in self.weights_.items()} == dict(network.shapes)
        )

    # -- training ----------------------------------------------------------
    def _start(self, network, rng, incremental, X, lengths):
        """Parameters, optimizer and history (the fitted attributes that
        training updates) to continue from, or fresh ones, for training on
        the padded sequences X."""
        dtype = X.dtype
        resume = (self.warm_start or incremental) and self._is_fitted_for(network)
        if not resume:
            params = init_weights(network, rng, dtype)
            optimizer = make_optimizer(self, network.n_params, dtype)
            history = {
                "loss_curve_": [], "n_iter_": 0, "t_": 0, "best_loss_": np.inf,
                "validation_scores_": [] if self.early_stopping else None,
                "best_validation_score_": -np.inf if self.early_stopping else None,
            }
            window = self._requested_window(X, lengths)
            if window is not None:
                history["downsample_"] = window
            return params, optimizer, history
        params = network.pack(self.weights_, dtype)
        # As MLPClassifier: partial_fit keeps the optimizer's state, a warm
        # started fit begins a new one.
        if incremental and hasattr(self, "_optimizer"):
            optimizer = self._optimizer.astype(dtype)
        else:
            optimizer = make_optimizer(self, network.n_params, dtype)
        # getattr: weights_ may have been set by hand (trained elsewhere),
        # without a training history.
        best_loss = getattr(self, "best_loss_", None)
        scores = getattr(self, "validation_scores_", None)
        scores = None if scores is None else list(scores)  # a failed fit keeps them
        history = {
            "loss_curve_": list(getattr(self, "loss_curve_", [])),
            "n_iter_": getattr(self, "n_iter_", 0), "t_": getattr(self, "t_", 0),
            "best_loss_": np.inf if best_loss is None else best_loss,
            "validation_scores_": scores,
            "best_validation_score_": getattr(self, "best_validation_score_", None),
        }
        if self.early_stopping and scores is None:  # switched on since the last fit
            history["validation_scores_"], history["best_validation_score_"] = [], -np.inf
        # partial_fit keeps the window the weights were trained with; a warm
        # started fit follows downsample, as it follows every parameter.
        window = (getattr(self, "downsample_", None) if incremental
                  else self._requested_window(X, lengths))
        if window is not None:
            history["downsample_"] = window
        return params, optimizer, history

    def _fit(self, X, lengths, y, sample_weight, n_outputs, incremental):
        """Train on padded X with targets y as the loss reads them: class
        indices in [0, n_outputs) (intp), or (n_samples, n_outputs) values in
        X's dtype."""
        rng = check_random_state(self.random_state)
        network = self._network(X.shape[2], n_outputs)
        params, optimizer, history = self._start(network, rng, incremental, X, lengths)
        X, lengths = average_windows(X, lengths, history.get("downsample_", 1))
        early_stopping = self.early_stopping and not incremental
        train = np.arange(X.shape[0])
        split = self._validation_split(y, rng) if early_stopping else None
        if split is not None:
            train, val = split
        elif early_stopping:  # too few samples to hold some out
            early_stopping = False
            history["validation_scores_"] = history["best_validation_score_"] = None
        if sample_weight is not None and not np.any(sample_weight[train] > 0):
            raise ValueError(
                "Every training sample"
                + (" left after the early-stopping validation split" if early_stopping
                   else "")
                + " has weight 0 (sample_weight"
                + (" times class_weight" if getattr(self, "class_weight", None) is not None
                   else "")
                + "); nothing to train on."
            )
        if early_stopping and sample_weight is not None and not np.any(sample_weight[val] > 0):
            raise ValueError(
                "Every sample of the early-stopping validation split has "
                "sample_weight 0, so it cannot be scored. Give more samples a "
                "positive weight, raise validation_fraction, or set "
                "early_stopping=False."
            )
        n_threads = effective_n_threads(self.n_threads)
        epoch = _Epoch(self, network, X, lengths, y, sample_weight, train, n_threads)
        epoch.check_numerics(optimizer)
        best_params = None
        no_improvement = 0
        converged = interrupted = False
        epochs_done = 0
        patience = None  # the stopping rule's, once the first epoch's steps are known
        with single_threaded_blas():
            # A warm start with early stopping starts from the best weights of
            # the previous fit; scored on this fit's validation split, they
            # stay the best unless this fit beats them.
            if early_stopping and np.isfinite(history["best_validation_score_"]):
                best_params = params.copy()
                history["best_validation_score_"] = self._validation_score(
                    network, params, X, lengths, y, val, sample_weight, n_threads)
            for _ in range(1 if incremental else self.max_iter):
                start_time = time.perf_counter()
                completed = params.copy(), optimizer.state()
                try:
                    loss = epoch.run(params, optimizer, rng, history["n_iter_"] + 1)
                except KeyboardInterrupt:
                    if incremental:  # the call leaves the model as it was
                        optimizer.restore(completed[1])
                        raise
                    interrupted = True
                    if epochs_done:  # the last completed epoch's weights
                        params[...] = completed[0]
                        optimizer.restore(completed[1])
                    warnings.warn(
                        "Training interrupted by user: keeping the weights of "
                        + ("the last completed epoch." if epochs_done else
                           "the minibatches of the first epoch that completed."),
                        UserWarning,
                    )
                    break
                if not epochs_done:
                    patience = self._patience(epoch.steps)
                epochs_done += 1
                history["n_iter_"] += 1
                history["t_"] += len(train)
                history["loss_curve_"].append(loss)
                optimizer.epoch_ends(history["t_"])
                message = f"Iteration {history['n_iter_']}, loss = {loss:.8f}"
                if early_stopping:
                    score = self._validation_score(network, params, X, lengths, y, val,
                                                   sample_weight, n_threads)
                    message += f", validation score = {score:.6f}"
                    improved = score >= history["best_validation_score_"] + self.tol
                    history["validation_scores_"].append(score)
                    if score > history["best_validation_score_"]:
                        history["best_validation_score_"] = score
                        best_params = params.copy()
                else:
                    improved = loss <= history["best_loss_"] - self.tol
                    history["best_loss_"] = min(history["best_loss_"], loss)
                no_improvement = 0 if improved else no_improvement + 1
                if self.verbose:
                    print(f"{message}, {time.perf_counter() - start_time:.3f} s")
                if not incremental and no_improvement > patience:
                    what = "Validation score" if early_stopping else "Training loss"
                    stalled = (f"{what} did not improve more than tol={self.tol} for "
                               f"{patience} consecutive epochs.")
                    if optimizer.reduce_learning_rate():
                        no_improvement = 0
                        if self.verbose:
                            print(f"{stalled} Setting learning rate to "
                                  f"{optimizer.learning_rate:.6f}")
                        continue
                    if self.verbose:
                        print(f"{stalled} Stopping.")
                    converged = True
                    break
        network.release()

        if not incremental and not converged and not interrupted:
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached "
                "and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )
        if not incremental:
            _warn_if_diverging(history["loss_curve_"][-epochs_done:] if epochs_done else [],
                               patience, optimizer)
        if epoch.skipped:
            warnings.warn(
                f"{epoch.skipped} of {epoch.all_steps} optimizer steps were skipped: "
                f"their gradient overflowed {X.dtype} before clipping could scale it "
                "(exploding gradients through long sequences). Training went on "
                "with the other steps. To keep every step, set dtype='float64', "
                "lower learning_rate_init, or read fewer steps (a larger downsample "
                "window; bptt_truncate for the per-step estimators).",
                RuntimeWarning,
            )
        if best_params is not None:
            params = best_params
        self.weights_ = {name: view.copy() for name, view in network.unpack(params).items()}
        self._optimizer = optimizer
        self.loss_ = history["loss_curve_"][-1] if history["loss_curve_"] else None
        for name, value in history.items():
            setattr(self, name, value)
        if early_stopping:
            self.best_loss_ = None
        return self

    def _check_fit_data(self, X, y, sample_weight, n_features=None):
        """Validated (X padded in the training dtype, lengths, y,
        sample_weight); y as the subclass's _check_targets returns it."""
        X, lengths, _ = self._check_sequences(X, n_features)
        y = self._check_targets(y)
        if len(y) != X.shape[0]:
            raise ValueError(
                f"X has {X.shape[0]} sequences but y has {len(y)} targets; they "
                "must match."
            )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
            if not np.any(sample_weight > 0):
                raise ValueError("sample_weight must have a positive sum.")
        return X, lengths, y, sample_weight

    def _check_sequences(self, X, n_features=None):
        """(X padded and cast to the training dtype, lengths, the floating
        dtype X was given in)."""
        X, lengths = check_sequences(
            X, n_features=n_features, estimator_name=type(self).__name__
        )
        return as_training_dtype(X, self.dtype), lengths, X.dtype

    def _outputs(self, X):
        """The head's output for each sequence of X: logits or predictions,
        computed in the training dtype and returned in X's float dtype
        (float64 for anything but float32), as scikit-learn's estimators
        return their predictions."""
        check_is_fitted(self)
        X, lengths, given_dtype = self._check_sequences(X, self.n_features_in_)
        X, lengths = average_windows(X, lengths, getattr(self, "downsample_", 1))
        network = self._network(X.shape[2], self.weights_["bias_out"].shape[0])
        params = network.pack(self.weights_, X.dtype)
        with single_threaded_blas():
            outputs = network.outputs(params, X, lengths,
                                      effective_n_threads(self.n_threads))
        if not np.all(np.isfinite(outputs)):
            raise ValueError(
                "The network's output is not finite for some sequences: their "
                "values are too large for the trained weights. Scale the input "
                "features as at fit."
            )
        return outputs.astype(given_dtype, copy=False)

    def _validation_split(self, y, rng):
        """(train, validation) indices for early stopping, or None (with a
        warning) when the validation set would be too small to mean anything."""
        n_val = int(np.ceil(self.validation_fraction * len(y)))
        if len(y) - n_val < 1:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of {len(y)} samples "
                "leaves none for training. Lower validation_fraction."
            )
        if n_val < MIN_VALIDATION_SAMPLES:
            warnings.warn(
                f"early_stopping=True: validation_fraction={self.validation_fraction} "
                f"of {len(y)} samples is {n_val} validation samples, too few to "
                f"tell progress from noise (at least {MIN_VALIDATION_SAMPLES} are "
                f"needed); training on all {len(y)} samples without early stopping. "
                "Raise validation_fraction or pass more data.",
                UserWarning,
            )
            return None
        train, val = train_test_split(
            np.arange(len(y)), test_size=self.validation_fraction,
            random_state=rng.randint(np.iinfo(np.int32).max),
            stratify=self._validation_stratify(y, n_val),
        )
        return np.sort(train), val

    def _validation_score(self, network, params, X, lengths, y, val, sample_weight,
                          n_threads):
        outputs = network.outputs(params, X[val], lengths[val], n_threads)
        weights = None if sample_weight is None else sample_weight[val]
        return float(self._validation_metric(outputs, y[val], weights))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class _Epoch:
    """One pass over the training samples (indices ``train`` of X) in
    minibatches, compiled: kernel, L2 penalty, divergence check, clipping and
    optimizer step for each (``_network.train_epoch``); Python only draws the
    order and the seeds."""

    def __init__(self, estimator, network, X, lengths, y, sample_weight, train,
                 n_threads):
        self.estimator = estimator
        self.network = network
        self.X, self.lengths = X, lengths
        self.train = train
        self.batch_size = estimator._batch_size(len(train))  # may warn: once per fit
        self.labels, self.targets = network.split_targets(y)
        self.sample_weight, self.weight_scale = normalized_weights(sample_weight, X.dtype)
        self.n_threads = n_threads
        self.truncate = (
            X.shape[1] if estimator.bptt_truncate is None else estimator.bptt_truncate
        )
        # 1 on weight matrices, 0 on biases: the L2 penalty's support.
        self.l2_mask = np.zeros(network.n_params, dtype=X.dtype)
        for name, view in network.unpack(self.l2_mask).items():
            view[...] = name.startswith("weight")
        self.grad = np.empty(network.n_params, dtype=X.dtype)
        # Optimizer steps of the last epoch and of all, skipped ones included,
        # and the steps skipped because their gradient overflowed.
        self.steps = self.all_steps = self.skipped = 0

    def check_numerics(self, optimizer):
        """Settings that the training dtype cannot represent are errors that
        name them, not a divergence blamed on the learning rate."""
        est, dtype = self.estimator, np.dtype(self.X.dtype)
        info = np.finfo(dtype)
        if est.solver != "sgd" and est.epsilon < info.tiny:
            raise ValueError(
                f"epsilon={est.epsilon!r} is below the smallest normal {dtype.name} "
                f"({info.tiny:.3g}): in {dtype.name}, the precision the network trains in, "
                "it becomes 0 and Adam/RMSProp divide by zero. Use epsilon >= "
                f"{info.tiny:.3g} (the default is 1e-8) or set dtype='float64'."
            )
        with np.errstate(over="ignore"):
            coef = dtype.type(est.alpha / self.weight_scale)
        if not np.isfinite(coef):
            raise ValueError(
                f"alpha={est.alpha!r} divided by the sample weights' scale "
                f"({self.weight_scale:.3g}) overflows {dtype.name}: the L2 penalty "
                "would be infinite. Lower alpha, or give the samples larger "
                "weights (the penalty is divided by the minibatch's weight sum)."
            )

    def run(self, params, optimizer, rng, epoch_number):
        """Train one epoch in place; return its weighted mean loss."""
        est = self.estimator
        net = self.network
        batch_size = self.batch_size
        order = rng.permutation(self.train) if est.shuffle else self.train
        n_batches = -(-len(order) // batch_size)
        seeds = (rng.randint(np.iinfo(np.int32).max, size=n_batches).astype(np.uint64)
                 if est.dropout else np.zeros(0, dtype=np.uint64))
        # Scratch that fits a full minibatch and the last, smaller one.
        workspace, chunk_grads = net._buffers(
            self.X.dtype, [batch_size, len(order) - (n_batches - 1) * batch_size],
            self.X.shape[1], self.n_threads, self.truncate)
        # The kernels see the weights divided by weight_scale; so is alpha,
        # which they divide by a sum of weights.
        schedule = {"batch_size": batch_size, "truncate": self.truncate,
                    "alpha": est.alpha / self.weight_scale,
                    "clip_norm": -1.0 if est.clip_norm is None else est.clip_norm}
        total_loss, total_weight, steps, skipped, diverged = _kernels.train_epoch(
            net.spec, net.hidden_sizes, self.X, self.lengths, self.labels, self.targets,
            self.sample_weight, np.ascontiguousarray(order, dtype=np.intp), schedule,
            optimizer.settings(), params, optimizer.state_a, optimizer.state_b,
            self.grad, chunk_grads, workspace, self.l2_mask, seeds, self.n_threads,
        )
        optimizer.t += steps
        if diverged >= 0 or not np.all(np.isfinite(params)):
            _raise_diverged(epoch_number, optimizer)
        if skipped and not steps:
            _raise_diverged(epoch_number, optimizer,
                            f"the gradient of every minibatch overflowed {self.X.dtype}")
        self.steps = steps + skipped
        self.all_steps += self.steps
        self.skipped += skipped
        return total_loss / total_weight


def auto_batch_size(n_samples):
    """batch_size="auto": n_samples / 16 within [16, 64]. Small data sets get
    minibatches of 16, so several optimizer steps per epoch (a fixed 64 gave
    one step per epoch below 64 samples, and training stopped at chance);
    from 256 samples on, at least 16 steps per epoch; large ones minibatches
    of 64 that keep every thread busy."""
    return min(n_samples, max(16, min(64, n_samples // 16)))


# n_iter_no_change="auto": AUTO_PATIENCE_EPOCHS epochs, or as many as make
# AUTO_PATIENCE_STEPS optimizer steps if that is more.
AUTO_PATIENCE_EPOCHS = 10
AUTO_PATIENCE_STEPS = 200


def auto_patience(steps_per_epoch):
    """n_iter_no_change="auto" for epochs of ``steps_per_epoch`` optimizer
    steps: AUTO_PATIENCE_EPOCHS, or enough epochs for AUTO_PATIENCE_STEPS
    steps. The epoch's loss is the mean over its minibatches, so an epoch of
    a few steps gives a noisy reading: ten of them (30 steps on a set of 36
    series) stalled often enough that the adaptive rate dropped while the
    loss still fell, and the fit ended short of fitting the training set."""
    return max(AUTO_PATIENCE_EPOCHS, -(-AUTO_PATIENCE_STEPS // max(steps_per_epoch, 1)))


# Fewer validation samples than this and early stopping would follow noise.
MIN_VALIDATION_SAMPLES = 20

# downsample="auto" averages windows of up to n_timesteps // AUTO_STEPS
# steps, when their means keep AUTO_KEPT of every channel's variance.
AUTO_STEPS = 100
AUTO_KEPT = 0.95


def auto_window(X, lengths):
    """The window of ``downsample="auto"`` for the padded training sequences
    X: n_timesteps // AUTO_STEPS, halved until the window means keep at
    least AUTO_KEPT of every channel's variance over the valid steps (1
    when no window does).

    Averaging over windows is a low-pass filter. Series that change slowly
    (most of their variance is in slow changes) lose almost nothing and
    train several times faster on fewer steps; series whose classes differ
    in fast changes keep every step (ACSF1, power readings with spikes one
    step long, kept 29% of its variance with windows of 2, and lost most of
    its accuracy with them)."""
    window = X.shape[1] // AUTO_STEPS
    while window > 1 and variance_kept(X, lengths, window).min() < AUTO_KEPT:
        window //= 2
    return max(window, 1)


def variance_kept(X, lengths, window):
    """The fraction of each channel's variance over the valid steps of the
    padded X that its means over windows of ``window`` steps keep: their
    sum of squares about the channel's mean, each mean counted once per step
    it stands for, over that of the steps. A constant channel keeps all."""
    scale = np.maximum(X.max(axis=(0, 1)), -X.min(axis=(0, 1))).astype(np.float64)
    scale[scale == 0] = 1.0   # in float64 and scaled to 1: no overflow
    squares = sums = window_squares = 0.0
    for rows in range(0, X.shape[0], 256):   # bounded memory
        block = X[rows:rows + 256] / scale
        squares = squares + np.einsum("ntd,ntd->d", block, block)
        sums = sums + block.sum(axis=(0, 1))
        means, _ = average_windows(block, lengths[rows:rows + 256], window)
        counts = window_counts(lengths[rows:rows + 256], window, means.shape[1])
        window_squares = window_squares + np.einsum("nk,nkd,nkd->d", counts, means, means)
    squared_mean = sums ** 2 / lengths.sum()
    total, kept = squares - squared_mean, np.ones(X.shape[2])
    varies = total > 1e-12 * squares   # beyond rounding
    kept[varies] = (window_squares - squared_mean)[varies] / total[varies]
    return kept


def average_windows(X, lengths, window):
    """(X, lengths) with each sequence's steps averaged over consecutive
    windows of ``window`` steps; the last window of a sequence averages the
    steps it has. Padded steps stay zero."""
    if window == 1:
        return X, lengths
    n, T, D = X.shape
    n_windows = -(-T // window)
    padded = X
    if T % window:
        padded = np.zeros((n, n_windows * window, D), dtype=X.dtype)
        padded[:, :T] = X
    sums = padded.reshape(n, n_windows, window, D).sum(axis=2)
    counts = window_counts(lengths, window, n_windows)
    sums /= np.maximum(counts, 1)[:, :, None].astype(X.dtype)
    return sums, -(-lengths // window)


def window_counts(lengths, window, n_windows):
    """(n, n_windows): how many valid steps each window of ``window`` steps
    holds of sequences of ``lengths`` steps (0 past a sequence's end)."""
    return np.clip(lengths[:, None] - window * np.arange(n_windows), 0, window)


def as_training_dtype(X, dtype):
    """X (float32 or float64, from check_sequences) in the precision the
    network computes in; a clear error for values that precision cannot hold
    rather than an infinity reported as bad input."""
    if X.dtype == dtype:
        return X
    with np.errstate(over="ignore"):
        cast = X.astype(dtype)
    # Non-finite values that were finite before the cast (NaN or infinity in
    # X itself reach here only under assume_finite, and stay as they are).
    if not np.all(np.isfinite(cast)) and np.any(~np.isfinite(cast) & np.isfinite(X)):
        raise ValueError(
            f"X has values too large for {dtype}, the precision the network "
            f"computes in (at most {np.finfo(dtype).max:.3g} in magnitude). Scale "
            "the features (e.g. with cbptt.preprocessing.SequenceScaler) or set "
            "dtype='float64'."
        )
    return cast


# How far above the first epoch's loss the last may end before a fit warns
# that it diverged.
DIVERGED_FACTOR = 2.0


def _warn_if_diverging(losses, patience, optimizer):
    """A ConvergenceWarning when the training loss ended far above where it
    started, or grew for ``patience`` epochs in a row (the stopping rule's):
    the fit is not diverging to NaN, but it is not converging either."""
    if len(losses) < 2:
        return
    growth = np.diff(losses) > 0
    streak = longest = 0
    for grew in growth:
        streak = streak + 1 if grew else 0
        longest = max(longest, streak)
    if losses[-1] > DIVERGED_FACTOR * losses[0] or longest >= patience:
        warnings.warn(
            f"The training loss grew from {losses[0]:.4g} (first epoch) to "
            f"{losses[-1]:.4g} (last) and rose for up to {longest} epochs in a row: "
            f"the optimization diverges. Lower learning_rate_init (now "
            f"{optimizer.learning_rate:.3g}), set clip_norm (e.g. clip_norm=1.0), or "
            "scale the input features.",
            ConvergenceWarning,
        )


def _raise_diverged(epoch_number, optimizer, what="the loss became non-finite"):
    raise ValueError(_DIVERGED.format(what=what, epoch=epoch_number,
                                      lr=optimizer.learning_rate))
