"""Stochastic optimizers that update the flat parameter vector in place.

Why: every parameter of a model lives in one contiguous vector, so an update
is a handful of whole-vector NumPy operations with preallocated state, the
same for any cell or depth. Semantics follow scikit-learn's MLP solvers
(including the learning-rate schedules of ``solver="sgd"``) and PyTorch's
RMSprop.
"""

import numpy as np


class SGD:
    """SGD with optional (Nesterov) momentum and MLPClassifier's schedules."""

    def __init__(self, n_params, dtype, learning_rate_init, learning_rate="constant",
                 power_t=0.5, momentum=0.9, nesterov=True):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.schedule = learning_rate
        self.power_t = power_t
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocity = np.zeros(n_params, dtype=dtype)

    def step(self, params, grad):
        # v <- momentum * v - lr * g; Nesterov looks ahead along the new v.
        self.velocity *= self.momentum
        self.velocity -= self.learning_rate * grad
        if self.nesterov:
            params += self.momentum * self.velocity
            params -= self.learning_rate * grad
        else:
            params += self.velocity

    def epoch_ends(self, n_samples_seen):
        if self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (n_samples_seen + 1) ** self.power_t

    def reduce_learning_rate(self):
        """For the "adaptive" schedule: divide the rate by 5; False when it is
        already too small to go on."""
        if self.schedule != "adaptive" or self.learning_rate <= 1e-6:
            return False
        self.learning_rate /= 5.0
        return True


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction folded into the step size."""

    def __init__(self, n_params, dtype, learning_rate_init, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8):
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)
        self._scratch = np.empty(n_params, dtype=dtype)

    def step(self, params, grad):
        self.t += 1
        self.m *= self.beta_1
        self.m += (1 - self.beta_1) * grad
        self.v *= self.beta_2
        np.multiply(grad, grad, out=self._scratch)
        self._scratch *= 1 - self.beta_2
        self.v += self._scratch
        step = (self.learning_rate * np.sqrt(1 - self.beta_2**self.t)
                / (1 - self.beta_1**self.t))
        np.sqrt(self.v, out=self._scratch)
        self._scratch += self.epsilon
        np.divide(self.m, self._scratch, out=self._scratch)
        self._scratch *= step
        params -= self._scratch

    def epoch_ends(self, n_samples_seen):
        pass

    def reduce_learning_rate(self):
        return False


class RMSProp:
    """RMSProp: divide the gradient by a running RMS of its recent values."""

    def __init__(self, n_params, dtype, learning_rate_init, rho=0.9, epsilon=1e-8):
        self.learning_rate = float(learning_rate_init)
        self.rho = rho
        self.epsilon = epsilon
        self.square_avg = np.zeros(n_params, dtype=dtype)
        self._scratch = np.empty(n_params, dtype=dtype)

    def step(self, params, grad):
        self.square_avg *= self.rho
        np.multiply(grad, grad, out=self._scratch)
        self._scratch *= 1 - self.rho
        self.square_avg += self._scratch
        np.sqrt(self.square_avg, out=self._scratch)
        self._scratch += self.epsilon
        np.divide(grad, self._scratch, out=self._scratch)
        self._scratch *= self.learning_rate
        params -= self._scratch

    def epoch_ends(self, n_samples_seen):
        pass

    def reduce_learning_rate(self):
        return False


def make_optimizer(estimator, n_params, dtype):
    """The optimizer an estimator's parameters ask for."""
    if estimator.solver == "sgd":
        return SGD(n_params, dtype, estimator.learning_rate_init,
                   estimator.learning_rate, estimator.power_t, estimator.momentum,
                   estimator.nesterovs_momentum)
    if estimator.solver == "adam":
        return Adam(n_params, dtype, estimator.learning_rate_init,
                    estimator.beta_1, estimator.beta_2, estimator.epsilon)
    return RMSProp(n_params, dtype, estimator.learning_rate_init, estimator.rho,
                   estimator.epsilon)
