"""A plain, vectorized NumPy Elman BPTT: the baseline a user could write.

Why: cbptt must beat what a competent NumPy user gets with batched matrix
products and ``np.tanh``. Full-length sequences, many-to-one, softmax
cross-entropy, Adam; the same parameter layout as cbptt.
"""

import numpy as np


class NumpyElman:
    """Train an Elman RNN (tanh) with Adam, one minibatch at a time."""

    def __init__(self, n_features, n_hidden, n_classes, dtype=np.float32, seed=0,
                 learning_rate=1e-3):
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(n_hidden)
        def u(*shape):
            return rng.uniform(-bound, bound, size=shape).astype(dtype)
        self.params = [u(n_hidden, n_features), u(n_hidden, n_hidden), u(n_hidden),
                       u(n_classes, n_hidden), u(n_classes)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.learning_rate = learning_rate

    def loss_and_grad(self, X, y):
        W_ih, W_hh, b, W_out, b_out = self.params
        n, T, _ = X.shape
        Xt = X.transpose(1, 0, 2)                 # (T, n, D)
        pre_in = Xt @ W_ih.T + b                   # input projection, all steps
        hs = np.zeros((T + 1, n, W_hh.shape[0]), dtype=X.dtype)
        for t in range(T):
            hs[t + 1] = np.tanh(pre_in[t] + hs[t] @ W_hh.T)
        logits = hs[T] @ W_out.T + b_out
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(n), y]))
        d_logits = p
        d_logits[np.arange(n), y] -= 1
        d_logits /= n
        g_W_out = d_logits.T @ hs[T]
        g_b_out = d_logits.sum(axis=0)
        dh = d_logits @ W_out
        d_pre = np.empty_like(hs[1:])
        for t in range(T - 1, -1, -1):
            d_pre[t] = dh * (1 - hs[t + 1] ** 2)   # backprop through tanh
            dh = d_pre[t] @ W_hh                   # backprop into h_{t-1}
        H = W_hh.shape[0]
        flat_d = d_pre.reshape(-1, H)
        g_W_ih = flat_d.T @ Xt.reshape(T * n, -1)
        g_W_hh = flat_d.T @ hs[:-1].reshape(-1, H)
        g_b = flat_d.sum(axis=0)
        return loss, [g_W_ih, g_W_hh, g_b, g_W_out, g_b_out]

    def adam_step(self, grads, beta_1=0.9, beta_2=0.999, eps=1e-8):
        self.t += 1
        # A Python float: a NumPy float64 scalar would upcast every update to float64.
        step = float(self.learning_rate * np.sqrt(1 - beta_2**self.t)
                     / (1 - beta_1**self.t))
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= beta_1
            m += (1 - beta_1) * g
            v *= beta_2
            v += (1 - beta_2) * g * g
            p -= step * m / (np.sqrt(v) + eps)

    def epoch(self, X, y, batch_size, rng):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            _, grads = self.loss_and_grad(X[idx], y[idx])
            self.adam_step(grads)
