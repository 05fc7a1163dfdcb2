# The losses, one sample at a time: each scores the head's output z (n_outputs
# values) against the sample's target and overwrites z with the gradient.
#
# Why: a loss is the one thing a new estimator changes in the kernels, so each
# is a small point function with its math in the docstring, as in
# scikit-learn's sklearn/_loss. The head (_head.pxi) loops over a chunk's
# rows and calls one of them; it weighs the loss l returned by the sample's
# weight w, and the gradient comes scaled by w and by s (one over the
# minibatch's weight sum), so a minibatch's loss is sum_i w_i l_i / sum_i w_i.

from cbptt._kernels._common cimport exp_, floating, intp_t, log_


cdef inline floating cross_entropy(floating* z, intp_t n_outputs, intp_t label,
                                   floating weight, double scale) noexcept nogil:
    """Softmax cross-entropy of class ``label``: returns

        l = log sum_c exp(z_c) - z_label,

    and overwrites z with s * w * dl/dz = s * w * (softmax(z) - onehot(label)).
    The log-sum-exp is taken around the largest z_c, so no exp overflows.
    """
    cdef intp_t c
    cdef floating z_max = z[0], lse
    cdef double sum_exp = 0.0
    cdef floating loss
    for c in range(1, n_outputs):
        if z[c] > z_max:
            z_max = z[c]
    for c in range(n_outputs):
        sum_exp += exp_(<floating> (z[c] - z_max))
    lse = z_max + log_(<floating> sum_exp)
    loss = lse - z[label]
    for c in range(n_outputs):
        z[c] = exp_(<floating> (z[c] - lse)) * (weight * scale)
    z[label] -= weight * scale
    return loss


cdef inline double squared_error(floating* z, intp_t n_outputs, const floating* target,
                                 floating weight, double scale) noexcept nogil:
    """Half the mean squared error over the outputs (scikit-learn's
    MLPRegressor): returns

        l = 1 / (2 C) * sum_c (z_c - y_c)^2,      C = n_outputs,

    and overwrites z with s * w * dl/dz = s * w * (z - y) / C.
    """
    cdef intp_t c
    cdef floating residual
    cdef double total = 0.0
    cdef double coef = weight * scale / n_outputs
    for c in range(n_outputs):
        residual = z[c] - target[c]
        total += <double> residual * residual
        z[c] = <floating> (residual * coef)
    return 0.5 * total / n_outputs
