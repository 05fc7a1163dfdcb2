# The elementwise step of each recurrent cell, forward and backward, for one
# row of the minibatch at one time step. Equations and gate order are
# PyTorch's (torch.nn.RNN, LSTM, GRU).
#
# Why: a cell differs from another only here. The orchestration (GEMMs over
# all steps, the time loop, layers, directions, chunks) is shared and lives in
# _core.pxi; each function below is one fused pass over the H units that
# reads the GEMM results and writes activations (forward) or the gradients of
# the pre-activations (backward). Derivatives come from stored outputs.

from cbptt._kernels._common cimport floating, intp_t, tanh_

# Cython writes a bare 1 in `1 - x` as the C double 1.0, which would turn the
# float32 passes into double arithmetic; each function below uses `one`, a
# constant of the pass's own type, instead.

cdef enum:
    RNN = 0
    LSTM = 1
    GRU = 2


cdef inline intp_t n_gates(int cell) noexcept nogil:
    return 1 if cell == RNN else (4 if cell == LSTM else 3)


cdef inline floating sigmoid_(floating x) noexcept nogil:
    cdef floating half = 0.5
    return half + half * tanh_(half * x)


# --- Elman: h = f(pre + b_ih + b_hh) -----------------------------------------

cdef inline void rnn_forward(intp_t H, bint relu, const floating* pre,
                             const floating* b_ih, const floating* b_hh,
                             floating* h) noexcept nogil:
    cdef intp_t j
    cdef floating v
    if relu:
        for j in range(H):
            v = pre[j] + b_ih[j] + b_hh[j]
            h[j] = v if v > 0 else 0
    else:
        for j in range(H):
            h[j] = tanh_(<floating> (pre[j] + b_ih[j] + b_hh[j]))


cdef inline void rnn_backward(intp_t H, bint relu, const floating* dh,
                              const floating* h, floating* d_pre) noexcept nogil:
    # Backprop through f, from its output: tanh' = 1 - h^2, relu' = [h > 0].
    cdef intp_t j
    cdef floating one = 1
    if relu:
        for j in range(H):
            d_pre[j] = dh[j] if h[j] > 0 else 0
    else:
        for j in range(H):
            d_pre[j] = dh[j] * (one - h[j] * h[j])


# --- LSTM: gates (i, f, g, o); c = f c_prev + i g; h = o tanh(c) ------------

cdef inline void lstm_forward(intp_t H, floating* gates, const floating* b_ih,
                              const floating* b_hh, const floating* c_prev,
                              floating* c, floating* h) noexcept nogil:
    """gates holds the pre-activations without biases; it is overwritten
    with the activated gates."""
    cdef intp_t j
    cdef floating i, f, g, o
    for j in range(H):
        i = sigmoid_(<floating> (gates[j] + b_ih[j] + b_hh[j]))
        f = sigmoid_(<floating> (gates[H + j] + b_ih[H + j] + b_hh[H + j]))
        g = tanh_(<floating> (gates[2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]))
        o = sigmoid_(<floating> (gates[3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]))
        gates[j] = i
        gates[H + j] = f
        gates[2 * H + j] = g
        gates[3 * H + j] = o
        c[j] = f * c_prev[j] + i * g
        h[j] = o * tanh_(c[j])


cdef inline void lstm_backward(intp_t H, const floating* dh, floating* dc,
                               const floating* gates, const floating* c_prev,
                               const floating* c, floating* d_gates) noexcept nogil:
    """dc carries d loss / d c_s in and d loss / d c_{s-1} out."""
    cdef intp_t j
    cdef floating one = 1
    cdef floating i, f, g, o, tanh_c, dc_total
    for j in range(H):
        i = gates[j]
        f = gates[H + j]
        g = gates[2 * H + j]
        o = gates[3 * H + j]
        tanh_c = tanh_(c[j])
        # Backprop into c through h = o tanh(c), plus what flowed from c_{s+1}.
        dc_total = dc[j] + dh[j] * o * (one - tanh_c * tanh_c)
        # Backprop into each gate's pre-activation.
        d_gates[j] = dc_total * g * i * (one - i)
        d_gates[H + j] = dc_total * c_prev[j] * f * (one - f)
        d_gates[2 * H + j] = dc_total * i * (one - g * g)
        d_gates[3 * H + j] = dh[j] * tanh_c * o * (one - o)
        # Backprop into c_{s-1}.
        dc[j] = dc_total * f


# --- GRU: r, z, n = (r, z, n); n = tanh(gi_n + r (W_hn h + b_hn)) -----------
#          h = (1 - z) n + z h_prev

cdef inline void gru_forward(intp_t H, floating* gates, const floating* gh,
                             const floating* b_ih, const floating* b_hh,
                             const floating* h_prev, floating* hn_out,
                             floating* h) noexcept nogil:
    """gates holds W_ih x (3H, no bias) and gh holds W_hh h_prev (3H, no
    bias); gates is overwritten with (r, z, n) and hn_out gets W_hn h + b_hn."""
    cdef intp_t j
    cdef floating one = 1
    cdef floating r, z, n, hn
    for j in range(H):
        r = sigmoid_(<floating> (gates[j] + b_ih[j] + gh[j] + b_hh[j]))
        z = sigmoid_(<floating> (gates[H + j] + b_ih[H + j] + gh[H + j] + b_hh[H + j]))
        hn = gh[2 * H + j] + b_hh[2 * H + j]
        n = tanh_(<floating> (gates[2 * H + j] + b_ih[2 * H + j] + r * hn))
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn_out[j] = hn
        h[j] = (one - z) * n + z * h_prev[j]


cdef inline void gru_backward(intp_t H, floating* dh, const floating* gates,
                              const floating* hn, const floating* h_prev,
                              floating* d_gi, floating* d_gh) noexcept nogil:
    """d_gi and d_gh get the gradients of the input-side and hidden-side
    pre-activations (they differ in the n block); dh is replaced by its
    direct path into h_prev, dh * z (the GEMM with W_hh adds the rest)."""
    cdef intp_t j
    cdef floating one = 1
    cdef floating r, z, n, dn_pre, dz_pre, dr_pre
    for j in range(H):
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        dn_pre = dh[j] * (one - z) * (one - n * n)
        dz_pre = dh[j] * (h_prev[j] - n) * z * (one - z)
        dr_pre = dn_pre * hn[j] * r * (one - r)
        d_gi[j] = dr_pre
        d_gi[H + j] = dz_pre
        d_gi[2 * H + j] = dn_pre
        d_gh[j] = dr_pre
        d_gh[H + j] = dz_pre
        d_gh[2 * H + j] = dn_pre * r
        dh[j] = dh[j] * z
