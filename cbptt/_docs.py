"""The parameter and attribute descriptions every estimator shares.

Why: the estimators take the same parameters and have the same fitted
attributes; each docstring fills these in (``fill_doc``) so that a parameter
is described in one place.
"""

_PARAMETERS = """
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
        Each layer also runs backward over each sequence's valid steps. %(bidirectional)s%(pooling)s
    dropout : float, default=0.0
        Probability of zeroing each output unit of every layer but the last,
        during training only (as PyTorch's ``dropout``).
    solver : {"adam", "sgd", "rmsprop"}, default="adam"
        Optimizer of the weights.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="adaptive"
        Learning rate schedule, for every solver (``MLPClassifier`` applies
        it to SGD only): "constant" keeps ``learning_rate_init``;
        "invscaling" uses ``learning_rate_init / (t_ + 1) ** power_t`` after
        each epoch (with Adam and RMSProp this scales their per-weight step
        sizes); "adaptive" (reduce on plateau, the default) divides the rate
        by 5 each time the training loss (or validation score) stops
        improving for ``n_iter_no_change`` epochs, and training stops once
        the rate falls below 1e-6. The default settles where a constant rate
        oscillates, and does not stop while the loss still falls slowly.
    learning_rate_init : float, default=0.003
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
        added to the loss of each optimizer step as
        ``alpha / (2 * n) * ||W||^2``, n being %(l2_count)s
        (with ``sample_weight``: their sum of weights).
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is ``n_samples // 16`` within [16, 64] (all
        samples if fewer than 16): small data sets get minibatches of 16,
        so several optimizer steps per epoch, sets of 256 samples or more at
        least 16 steps, and large ones minibatches of 64 that keep every
        thread busy.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling and the validation split.
    tol : float, default=1e-4
        When the loss (or validation score) has not improved by at least
        ``tol`` for ``n_iter_no_change`` consecutive epochs, training stops;
        with ``learning_rate="adaptive"`` the rate is divided by 5 instead,
        and training stops once it is below 1e-6.
    n_iter_no_change : int or "auto", default="auto"
        Epochs without improvement allowed before stopping (or, with the
        adaptive schedule, before the rate drops). "auto" is 10 epochs, or
        as many as make 200 optimizer steps if that is more: small data sets
        make few steps per epoch, and ten of their noisy epoch losses
        stalled while training still progressed.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (%(split)s), stop when
        its %(score)s stops improving and keep the best weights seen.
    validation_fraction : float, default=0.1
        Fraction of the training data held out for early stopping. A
        validation set of fewer than 20 samples would follow noise: then a
        warning says so and training uses all samples, without early
        stopping.
    clip_norm : float or None, default=5.0
        Rescale each minibatch gradient so that its global L2 norm is at most
        ``clip_norm``; None disables clipping.
    bptt_truncate : int or None, default=None
        %(truncation)s
    verbose : bool, default=False
        Print loss, validation score and seconds for each epoch.
    warm_start : bool, default=False
        Start ``fit`` from the weights of the previous fit.
    n_threads : int or None, default=None
        Maximum number of OpenMP threads. None uses what OpenMP allows
        (``OMP_NUM_THREADS``, ``threadpoolctl``).
    dtype : {"float32", "float64"}, default="float32"
        Precision the network trains and predicts in, whatever the dtype of
        X (as PyTorch and Keras compute in float32 whatever NumPy hands
        them): float32 is 3-7 times faster and as accurate for training;
        "float64" is for gradient checks and ill-conditioned problems.
        Predictions come back in X's floating dtype (float64 for any other
        input)."""

_ATTRIBUTES = """
    n_features_in_ : int
        Number of features per time step.
    weights_ : dict of str -> ndarray
        Trained weights with PyTorch's ``state_dict`` names and shapes
        (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
        ``bias_hh_l{k}``, suffix ``_reverse`` for reverse directions) plus
        the head ``weight_out`` (%(n_out)s, n_directions * H_last) and
        ``bias_out``; the format :func:`cbptt.loss_and_grad` takes.
    loss_ : float
        Mean training loss (with the L2 term) of the last epoch.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    best_loss_ : float or None
        Lowest training loss seen; None with ``early_stopping=True``.
    validation_scores_ : list of float or None
        Held-out %(score)s of each epoch with ``early_stopping=True``.
    best_validation_score_ : float or None
        Best held-out %(score)s with ``early_stopping=True``.
    n_iter_ : int
        Number of epochs run.%(downsample_attribute)s
    t_ : int
        Number of training samples seen."""


_TRUNCATION_LAST = """Backpropagate through the last ``bptt_truncate`` steps of each
        sequence only (truncated BPTT; steps of the network's input, after
        ``downsample``). None means full BPTT. Not defined
        with ``bidirectional=True`` or a pooled head.
        The steps before those run forward only, so the memory of training
        grows with ``bptt_truncate``, not with the sequence length."""

_TRUNCATION_WINDOWS = """Truncated BPTT over windows of ``bptt_truncate`` steps from each
        sequence's first step: each optimizer step covers one window of
        every sequence in the minibatch; the state flows into the next
        window (computed with the weights of its time), the gradient does
        not. None means full BPTT, one optimizer step per minibatch. Not
        defined with ``bidirectional=True``. The memory of training grows
        with ``bptt_truncate``, not with the sequence length, so one long
        stream of T steps trains with ``ceil(T / bptt_truncate)`` updates
        per epoch."""


_POOLING = """
    pooling : {"max", "mean", "last"}, default="max"
        What the output layer reads of the top recurrent layer's output
        sequence: the elementwise max or the mean of its outputs over the
        sequence's valid steps, or its state after each sequence's last step
        ("last"). The pooled heads send gradient into every step, which
        helps where the evidence lies early in long sequences (on the
        datasets of ``benchmarks/realdata.py``, "max" was the most accurate);
        they are not defined with ``bptt_truncate`` (use "last").
    downsample : int or "auto", default="auto"
        Average the input over consecutive windows of this many steps
        before the first recurrent layer (the last window of a sequence
        averages the steps it has): a sequence of T steps becomes
        ``ceil(T / downsample)`` steps, which trains long sequences several
        times faster. "auto" starts from ``n_timesteps // 100`` for the
        longest training sequence (1 below 200 steps) and halves the window
        until the window means keep at least 95% of every input channel's
        variance over the training steps: slowly changing series are
        averaged, series that change from step to step are read in full
        (on the datasets of ``benchmarks/realdata.py``, averaging made three
        long series more accurate or several times faster to fit, and took
        ACSF1, whose readings have spikes one step long, from 0.83 to
        0.59 with windows of 2). The window is fixed at fit
        (``downsample_``)."""

_DOWNSAMPLE_ATTRIBUTE = """
    downsample_ : int
        Input steps averaged into one (``downsample`` resolved at fit)."""

_BIDIRECTIONAL_LAST = """The
        last-state head reads the forward state at the last step and the
        backward state at the first step (PyTorch's ``h_n``); the pooled
        heads read both directions at every step."""

_BIDIRECTIONAL_STEPS = """The
        output layer reads both directions at every step."""


def fill_doc(split, score, n_out, per_step=False):
    """Class decorator: replace ``%(parameters)s`` and ``%(attributes)s`` in
    the docstring with the shared descriptions, saying how the early-stopping
    split is drawn (``split``), what it scores (``score``), the rows of
    ``weight_out`` (``n_out``), and whether the estimator has an output at
    every step (``per_step``: what truncation and the L2 penalty count)."""
    values = {
        "split": split, "score": score, "n_out": n_out,
        "l2_count": ("the steps the optimizer step covers" if per_step
                     else "the samples in the minibatch"),
        "truncation": _TRUNCATION_WINDOWS if per_step else _TRUNCATION_LAST,
        "bidirectional": _BIDIRECTIONAL_STEPS if per_step else _BIDIRECTIONAL_LAST,
        "pooling": "" if per_step else _POOLING,
        "downsample_attribute": "" if per_step else _DOWNSAMPLE_ATTRIBUTE,
    }

    def decorate(cls):
        cls.__doc__ = cls.__doc__ % {"parameters": (_PARAMETERS % values).strip(),
                                     "attributes": (_ATTRIBUTES % values).strip()}
        return cls
    return decorate
