"""The state and hyperparameters of the stochastic optimizers.

Why: every parameter of a model lives in one contiguous vector, so an update
is one loop over it; that loop runs in the compiled epoch
(``_network.train_epoch``, one nogil pass per minibatch). This module holds
what persists between epochs: the solver's state vectors, its step count and
its learning rate with scikit-learn's schedules, which apply to every solver
(scikit-learn's MLP applies them to SGD only). Semantics follow scikit-learn's
MLP solvers and PyTorch's RMSprop.
"""

import numpy as np

from cbptt._kernels import network as _kernels

_CODES = _kernels.solver_codes     # Solver.kind of train_epoch


class _Optimizer:
    """The solver's state vectors (state_a the size of the parameters, state_b
    too for Adam), its step count and its learning-rate schedule:
    "constant", "invscaling" (``learning_rate_init / (n_samples_seen + 1) **
    power_t``) or "adaptive" (divided by 5 when training stalls)."""

    code = None

    def __init__(self, n_params, dtype, learning_rate_init, schedule="constant",
                 power_t=0.5):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.schedule = schedule
        self.power_t = power_t
        self.t = 0
        self.state_a = np.zeros(n_params, dtype=dtype)
        self.state_b = np.zeros(1, dtype=dtype)    # used by Adam only

    def state(self):
        """A copy of the state that training changes in place."""
        return self.state_a.copy(), self.state_b.copy()

    def restore(self, state):
        self.state_a[...], self.state_b[...] = state

    def astype(self, dtype):
        """Keep the state in ``dtype``, the precision training continues in
        (partial_fit on data of another dtype)."""
        self.state_a = self.state_a.astype(dtype, copy=False)
        self.state_b = self.state_b.astype(dtype, copy=False)
        return self

    def settings(self):
        """The kernels' Solver (cbptt/_kernels/_epoch.pxi): this solver's
        fields set, the others' zero."""
        fields = dict.fromkeys(("momentum", "nesterov", "beta_1", "beta_2", "rho",
                                "epsilon"), 0)
        return {**fields, "kind": self.code, "learning_rate": self.learning_rate,
                "steps_done": self.t, **self._hyperparameters()}

    def _hyperparameters(self):
        raise NotImplementedError

    def epoch_ends(self, n_samples_seen):
        if self.schedule == "invscaling":
            # ** -power_t underflows to 0 where / ** power_t would overflow.
            self.learning_rate = (self.learning_rate_init
                                  * (n_samples_seen + 1.0) ** -self.power_t)

    def reduce_learning_rate(self):
        """Divide the rate by 5 ("adaptive" schedule); False when it is
        already too small to go on or the schedule is another."""
        if self.schedule != "adaptive" or self.learning_rate <= 1e-6:
            return False
        self.learning_rate /= 5.0
        return True


class SGD(_Optimizer):
    """SGD with optional (Nesterov) momentum."""

    code = _CODES["sgd"]

    def __init__(self, n_params, dtype, learning_rate_init, schedule="constant",
                 power_t=0.5, momentum=0.9, nesterov=True):
        super().__init__(n_params, dtype, learning_rate_init, schedule, power_t)
        self.momentum = momentum
        self.nesterov = nesterov

    def _hyperparameters(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(_Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction folded into the step size."""

    code = _CODES["adam"]

    def __init__(self, n_params, dtype, learning_rate_init, schedule="constant",
                 power_t=0.5, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        super().__init__(n_params, dtype, learning_rate_init, schedule, power_t)
        self.state_b = np.zeros(n_params, dtype=dtype)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def _hyperparameters(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSProp(_Optimizer):
    """RMSProp: divide the gradient by a running RMS of its recent values."""

    code = _CODES["rmsprop"]

    def __init__(self, n_params, dtype, learning_rate_init, schedule="constant",
                 power_t=0.5, rho=0.9, epsilon=1e-8):
        super().__init__(n_params, dtype, learning_rate_init, schedule, power_t)
        self.rho = rho
        self.epsilon = epsilon

    def _hyperparameters(self):
        return {"rho": self.rho, "epsilon": self.epsilon}


def make_optimizer(estimator, n_params, dtype):
    """The optimizer an estimator's parameters ask for."""
    common = (n_params, dtype, estimator.learning_rate_init, estimator.learning_rate,
              estimator.power_t)
    if estimator.solver == "sgd":
        return SGD(*common, estimator.momentum, estimator.nesterovs_momentum)
    if estimator.solver == "adam":
        return Adam(*common, estimator.beta_1, estimator.beta_2, estimator.epsilon)
    return RMSProp(*common, estimator.rho, estimator.epsilon)
