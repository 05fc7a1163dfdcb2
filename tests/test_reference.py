"""Checks of the NumPy reference BPTT (tests/reference.py) itself.

The Cython kernels are tested against the reference, so the reference has to be right on
its own: its gradient is compared with central finite differences of its loss, with an
independent per-sample NumPy forward pass (for truncated BPTT), and, when PyTorch is
installed, with torch autograd on the same weights. The pooling heads (output="mean",
"max") and the squared-error loss get the same checks, plus an independent per-sequence
forward pass and hand computations. So does the per-step head (output="sequence"), and its
windowed truncated BPTT is checked against finite differences of an independent forward
pass whose windows start from frozen (constant) states, and against torch runs that hand
each window a detached state.
"""

import warnings

import numpy as np
import pytest

try:
    from reference import (
        LOSSES,
        N_GATES,
        OUTPUTS,
        init_weights,
        numerical_grad,
        reference_loss,
        reference_loss_and_grad,
    )
except ImportError:  # tests/ imported as a package
    from tests.reference import (
        LOSSES,
        N_GATES,
        OUTPUTS,
        init_weights,
        numerical_grad,
        reference_loss,
        reference_loss_and_grad,
    )

N_SAMPLES, N_TIMESTEPS, N_FEATURES, N_CLASSES = 4, 5, 3, 3
RAGGED_LENGTHS = np.array([5, 2, 1, 4])  # includes a full-length and a length-1 sequence
SAMPLE_WEIGHT = np.array([0.5, 2.0, 1.0, 0.25])

CELLS = {
    "rnn-tanh": ("rnn", "tanh"),
    "rnn-relu": ("rnn", "relu"),
    "lstm": ("lstm", "tanh"),
    "gru": ("gru", "tanh"),
}
# name -> (hidden_sizes, bidirectional)
TOPOLOGIES = {
    "single": ([4], False),
    "stacked": ([3, 4], False),
    "bidir": ([3], True),
    "bidir-stacked": ([3, 2], True),
}
UNIDIRECTIONAL = {k: v for k, v in TOPOLOGIES.items() if not v[1]}
# name -> (use lengths, use sample_weight)
BATCHES = {
    "full": (False, False),
    "ragged": (True, False),
    "ragged-weighted": (True, True),
}
# finite differences are slow: unweighted ragged batches are left to the torch comparison
FD_BATCHES = {k: v for k, v in BATCHES.items() if k != "ragged"}

# The FD step balances truncation error (eps**2) against rounding (1e-16 / eps); 1e-5
# gives ~1e-9 relative error on these problems, 1e-6 ~1e-7.
FD_EPS = 1e-5
FD_RTOL = 1e-6

# the heads with one target per sample; output="sequence" has one per step
MANY_TO_ONE = tuple(output for output in OUTPUTS if output != "sequence")
# (output, loss) many-to-one heads other than the default ("last", "cross_entropy")
HEADS = {f"{output}-{loss}": (output, loss) for output in MANY_TO_ONE for loss in LOSSES
         if (output, loss) != ("last", "cross_entropy")}
POOLED_HEADS = {name: head for name, head in HEADS.items() if head[0] != "last"}


def make_problem(cell, hidden_sizes, bidirectional, seed=0, loss="cross_entropy",
                 output="last"):
    """Random weights and X; y are class indices, or normal targets (n, C) for squared error
    (drawn after X, so that weights and X do not depend on the loss). output="sequence":
    one target per step, random classes (n, T) or normal targets (n, T, C)."""
    rng = np.random.default_rng(seed)
    weights = init_weights(rng, cell, N_FEATURES, hidden_sizes, N_CLASSES,
                           bidirectional=bidirectional)
    X = rng.normal(size=(N_SAMPLES, N_TIMESTEPS, N_FEATURES))
    per_step = (N_TIMESTEPS,) if output == "sequence" else ()
    if loss == "squared_error":
        return weights, X, rng.normal(size=(N_SAMPLES, *per_step, N_CLASSES))
    if output == "sequence":
        return weights, X, rng.integers(0, N_CLASSES, size=(N_SAMPLES, N_TIMESTEPS))
    y = np.array([0, 1, 2, 1])
    return weights, X, y


def assert_grads_close(grads, expected, rtol, atol=0.0):
    assert set(grads) == set(expected)
    for key in expected:
        assert grads[key].shape == expected[key].shape, key
        assert np.all(np.isfinite(grads[key])), key
        err = np.linalg.norm(grads[key] - expected[key])
        scale = np.linalg.norm(expected[key])
        assert err <= rtol * scale + atol, f"{key}: |diff| {err:.3e}, |expected| {scale:.3e}"


def assert_grads_equal(grads, expected):
    assert set(grads) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(grads[key], expected[key], err_msg=key)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ----------------------------------------------------------------------------------------
# Finite differences
# ----------------------------------------------------------------------------------------


def test_numerical_grad_of_known_function():
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=4)}
    coef = rng.normal(size=4)

    def f(w):
        return float(np.sum(w["a"] ** 3) + coef @ np.sin(w["b"]))

    before = {k: v.copy() for k, v in weights.items()}
    fd = numerical_grad(f, weights)
    np.testing.assert_allclose(fd["a"], 3 * weights["a"] ** 2, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(fd["b"], coef * np.cos(weights["b"]), rtol=1e-8, atol=1e-9)
    # the caller's arrays come back untouched
    for key in weights:
        np.testing.assert_array_equal(weights[key], before[key])


@pytest.mark.parametrize("batch", FD_BATCHES)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_grad_matches_finite_differences(cell_name, topology, batch):
    # rnn-relu: with these seeds no pre-activation lies within FD_EPS of the kink at 0,
    # so the same tolerance applies to it.
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    use_lengths, use_weights = FD_BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity,
                  lengths=RAGGED_LENGTHS if use_lengths else None,
                  sample_weight=SAMPLE_WEIGHT if use_weights else None)

    loss, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert isinstance(loss, float) and np.isfinite(loss) and loss > 0
    assert loss == reference_loss(weights, X, y, **kwargs)
    fd = numerical_grad(lambda w: reference_loss(w, X, y, **kwargs), weights, eps=FD_EPS)
    assert_grads_close(grads, fd, rtol=FD_RTOL, atol=1e-10)
    assert list(grads) == list(weights)
    assert all(g.dtype == np.float64 for g in grads.values())


# Finite differences are slow: every cell and topology on the ragged, weighted batch, and
# the full batch on a stacked and a bidirectional network.
FD_HEAD_CASES = [(cell_name, topology, "ragged-weighted")
                 for cell_name in CELLS for topology in TOPOLOGIES]
FD_HEAD_CASES += [(cell_name, topology, "full")
                  for cell_name in CELLS for topology in ("stacked", "bidir")]


@pytest.mark.parametrize("cell_name, topology, batch", FD_HEAD_CASES,
                         ids=["-".join(case) for case in FD_HEAD_CASES])
@pytest.mark.parametrize("head", HEADS)
def test_head_grad_matches_finite_differences(head, cell_name, topology, batch):
    # output="max": with continuous random data no two valid steps tie for a unit's max;
    # with these seeds the largest two differ by >= 2e-4, far above the ~1e-5 an FD step
    # moves them, so the max is differentiable where FD samples it. rnn-relu does have
    # exact ties at 0 (units off at every valid step), but their pre-activations are < 0
    # at all those steps, so the gradient through them is 0 whichever step is picked, for
    # the reference and for FD alike. As above, no relu pre-activation lies within FD_EPS
    # of the kink (the closest is 4e-3 away).
    output, loss = HEADS[head]
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    use_lengths, use_weights = BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, loss=loss)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, output=output, loss=loss,
                  lengths=RAGGED_LENGTHS if use_lengths else None,
                  sample_weight=SAMPLE_WEIGHT if use_weights else None)

    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert value == reference_loss(weights, X, y, **kwargs)
    fd = numerical_grad(lambda w: reference_loss(w, X, y, **kwargs), weights, eps=FD_EPS)
    assert_grads_close(grads, fd, rtol=FD_RTOL, atol=1e-10)
    assert list(grads) == list(weights)


# ----------------------------------------------------------------------------------------
# Truncated BPTT against an independent forward pass with a frozen prefix
# ----------------------------------------------------------------------------------------


def _cell_step(cell, nonlinearity, params, x, h, c):
    """One step of one sequence, written independently of reference.py."""
    weight_ih, weight_hh, bias_ih, bias_hh = params
    gi = weight_ih @ x + bias_ih
    gh = weight_hh @ h + bias_hh
    if cell == "rnn":
        a = gi + gh
        return (np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)), c
    if cell == "lstm":
        i, f, g, o = np.split(gi + gh, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    r_i, z_i, n_i = np.split(gi, 3)
    r_h, z_h, n_h = np.split(gh, 3)
    r = _sigmoid(r_i + r_h)
    z = _sigmoid(z_i + z_h)
    n = np.tanh(n_i + r * n_h)
    return (1.0 - z) * n + z * h, c


def _stack_steps(weights, x, state, cell, nonlinearity):
    """Run one sequence x (L, D) alone through a unidirectional stack, step by step, from
    ``state`` (a list of per-layer (h, c); None: zeros). Returns the top layer's states
    (L, H) and the state after each step (a list of L lists of per-layer (h, c))."""
    n_layers = sum(key.startswith("weight_ih_l") for key in weights)
    sizes = [weights[f"weight_hh_l{k}"].shape[1] for k in range(n_layers)]
    if state is None:
        state = [(np.zeros(n_hidden), np.zeros(n_hidden)) for n_hidden in sizes]
    top, states = [], []
    for x_t in x:
        below, state_t = x_t, []
        for k, (h, c) in enumerate(state):
            params = [weights[f"{name}_l{k}"]
                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = _cell_step(cell, nonlinearity, params, below, h, c)
            state_t.append((h, c))
            below = h
        state = state_t
        top.append(below)
        states.append(state)
    return np.reshape(top, (len(x), sizes[-1])), states


def _top_layer_outputs(live, frozen, x, start, cell, nonlinearity):
    """The top layer's states h_0 .. h_{L-1} (L, H) of one sequence x (L, D) run alone
    through a unidirectional network; steps t < start use the weights ``frozen``."""
    start = max(start, 0)
    prefix, prefix_states = _stack_steps(frozen, x[:start], None, cell, nonlinearity)
    entering = prefix_states[-1] if start > 0 else None
    rest, _ = _stack_steps(live, x[start:], entering, cell, nonlinearity)
    return np.concatenate([prefix, rest])


def _row_loss(weights, features, target, loss):
    """The loss l(z, y) of one head row: z = weight_out @ features + bias_out."""
    logits = weights["weight_out"] @ features + weights["bias_out"]
    if loss == "cross_entropy":
        return np.log(np.sum(np.exp(logits))) - logits[target]
    return 0.5 * np.mean((logits - target) ** 2)


def _sequence_loss(weights, outputs, target, output, loss):
    """l_i of one sequence from its top-layer states (L, H): pool over time, affine, loss."""
    pooled = {"last": outputs[-1], "mean": outputs.mean(axis=0),
              "max": outputs.max(axis=0)}[output]
    return _row_loss(weights, pooled, target, loss)


def _frozen_prefix_loss(live, frozen, X, y, lengths, bptt_truncate, cell, nonlinearity,
                        sample_weight=None, output="last", loss="cross_entropy"):
    """Unidirectional loss where steps t < lengths[i] - k use the constant weights ``frozen``.

    Its gradient with respect to ``live`` at live == frozen is exactly the truncated-BPTT
    gradient: the states entering the last k steps are constants. With bptt_truncate=None
    it is an independent forward pass of the whole loss.
    """
    w = np.ones(len(y)) if sample_weight is None else sample_weight
    total = 0.0
    for i in range(len(y)):
        length = lengths[i]
        start = 0 if bptt_truncate is None else length - bptt_truncate
        outputs = _top_layer_outputs(live, frozen, X[i, :length], start, cell, nonlinearity)
        total += w[i] * _sequence_loss(live, outputs, y[i], output, loss)
    return total / np.sum(w)


@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_loss_matches_independent_forward(cell_name, topology):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=2)
    loss = reference_loss(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                          lengths=RAGGED_LENGTHS, sample_weight=SAMPLE_WEIGHT)
    expected = _frozen_prefix_loss(weights, weights, X, y, RAGGED_LENGTHS, None, cell,
                                   nonlinearity, SAMPLE_WEIGHT)
    assert loss == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("bptt_truncate", [1, 2, 3])
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_truncated_grad_matches_finite_differences(cell_name, topology, bptt_truncate):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=3)
    lengths = RAGGED_LENGTHS
    _, grads = reference_loss_and_grad(
        weights, X, y, cell=cell, nonlinearity=nonlinearity, lengths=lengths,
        bptt_truncate=bptt_truncate, sample_weight=SAMPLE_WEIGHT)

    def f(live):
        return _frozen_prefix_loss(live, weights, X, y, lengths, bptt_truncate, cell,
                                   nonlinearity, SAMPLE_WEIGHT)

    fd = numerical_grad(f, weights, eps=FD_EPS)
    assert_grads_close(grads, fd, rtol=FD_RTOL, atol=1e-10)

    # and truncation really changed the recurrent gradient (lengths 5 and 4 exceed k)
    _, full = reference_loss_and_grad(
        weights, X, y, cell=cell, nonlinearity=nonlinearity, lengths=lengths,
        sample_weight=SAMPLE_WEIGHT)
    diff = np.linalg.norm(grads["weight_hh_l0"] - full["weight_hh_l0"])
    assert diff > 1e-6 * np.linalg.norm(full["weight_hh_l0"])
    # the head does not depend on time, so its gradient is unchanged
    np.testing.assert_array_equal(grads["weight_out"], full["weight_out"])
    np.testing.assert_array_equal(grads["bias_out"], full["bias_out"])


@pytest.mark.parametrize("lengths", [None, RAGGED_LENGTHS], ids=["full", "ragged"])
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_truncation_at_least_max_length_is_no_truncation(cell_name, topology, lengths):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=4)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=lengths)
    loss, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    for k in (N_TIMESTEPS, N_TIMESTEPS + 3):
        loss_k, grads_k = reference_loss_and_grad(weights, X, y, bptt_truncate=k, **kwargs)
        assert loss_k == loss
        assert_grads_equal(grads_k, grads)
    # one step short of the longest sequence: step 0 drops out of the backward pass. Its
    # weight_hh term is zero anyway (h_{-1} = 0), but its weight_ih term is not.
    _, grads_short = reference_loss_and_grad(weights, X, y, bptt_truncate=N_TIMESTEPS - 1,
                                             **kwargs)
    assert not np.allclose(grads_short["weight_ih_l0"], grads["weight_ih_l0"])


def test_truncation_one_step_rnn_by_hand():
    """bptt_truncate=1, one tanh layer: only the last step's Jacobian, h_{L-2} a constant."""
    weights, X, y = make_problem("rnn", [4], False, seed=5)
    lengths = RAGGED_LENGTHS
    W_ih, W_hh = weights["weight_ih_l0"], weights["weight_hh_l0"]
    b = weights["bias_ih_l0"] + weights["bias_hh_l0"]
    W_out, b_out = weights["weight_out"], weights["bias_out"]

    expected = {key: np.zeros_like(value) for key, value in weights.items()}
    loss = 0.0
    for i in range(N_SAMPLES):
        h = np.zeros(4)
        for t in range(lengths[i] - 1):
            h = np.tanh(W_ih @ X[i, t] + W_hh @ h + b)
        h_prev, x_last = h, X[i, lengths[i] - 1]
        h_last = np.tanh(W_ih @ x_last + W_hh @ h_prev + b)
        logits = W_out @ h_last + b_out
        p = np.exp(logits - logits.max())
        p /= p.sum()
        loss += -np.log(p[y[i]]) / N_SAMPLES
        d_logits = (p - np.eye(N_CLASSES)[y[i]]) / N_SAMPLES
        d_pre = (W_out.T @ d_logits) * (1.0 - h_last**2)
        expected["weight_out"] += np.outer(d_logits, h_last)
        expected["bias_out"] += d_logits
        expected["weight_ih_l0"] += np.outer(d_pre, x_last)
        expected["weight_hh_l0"] += np.outer(d_pre, h_prev)
        expected["bias_ih_l0"] += d_pre
        expected["bias_hh_l0"] += d_pre

    got_loss, grads = reference_loss_and_grad(weights, X, y, cell="rnn", lengths=lengths,
                                              bptt_truncate=1)
    assert got_loss == pytest.approx(loss, rel=1e-13)
    assert_grads_close(grads, expected, rtol=1e-13, atol=1e-16)
    _, full = reference_loss_and_grad(weights, X, y, cell="rnn", lengths=lengths)
    assert not np.allclose(full["weight_hh_l0"], expected["weight_hh_l0"])


# ----------------------------------------------------------------------------------------
# Padding, lengths, sample weights, dtypes
# ----------------------------------------------------------------------------------------


def _with_padding(X, lengths, value):
    X = X.copy()
    for i, length in enumerate(lengths):
        X[i, length:] = value
    return X


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_padding_is_never_read(cell_name, topology):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=6)
    truncations = [None] if bidirectional else [None, 2]
    for bptt_truncate in truncations:
        kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
                      bptt_truncate=bptt_truncate)
        loss, grads = reference_loss_and_grad(X=X, weights=weights, y=y, **kwargs)
        for value in (np.nan, np.inf, 1e300):
            X_pad = _with_padding(X, RAGGED_LENGTHS, value)
            loss_pad, grads_pad = reference_loss_and_grad(weights, X_pad, y, **kwargs)
            assert np.isfinite(loss_pad)
            assert loss_pad == loss
            assert_grads_equal(grads_pad, grads)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_ragged_batch_equals_separate_sequences(cell_name, topology):
    """A padded batch gives the weighted mean of each sequence run alone at its length."""
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=7)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity)
    loss, grads = reference_loss_and_grad(weights, X, y, lengths=RAGGED_LENGTHS,
                                          sample_weight=SAMPLE_WEIGHT, **kwargs)
    w = SAMPLE_WEIGHT / SAMPLE_WEIGHT.sum()
    expected_loss = 0.0
    expected = {key: np.zeros_like(value) for key, value in weights.items()}
    for i, length in enumerate(RAGGED_LENGTHS):
        loss_i, grads_i = reference_loss_and_grad(weights, X[i:i + 1, :length], y[i:i + 1],
                                                  **kwargs)
        expected_loss += w[i] * loss_i
        for key in expected:
            expected[key] += w[i] * grads_i[key]
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    assert_grads_close(grads, expected, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("cell_name", ["rnn-tanh", "lstm", "gru"])
def test_full_lengths_equal_no_lengths(cell_name):
    cell, _ = CELLS[cell_name]
    weights, X, y = make_problem(cell, [3, 4], True, seed=8)
    loss, grads = reference_loss_and_grad(weights, X, y, cell=cell)
    loss_l, grads_l = reference_loss_and_grad(weights, X, y, cell=cell,
                                              lengths=np.full(N_SAMPLES, N_TIMESTEPS))
    assert loss_l == loss
    assert_grads_equal(grads_l, grads)


@pytest.mark.parametrize("cell_name", ["rnn-tanh", "lstm", "gru"])
def test_integer_sample_weight_equals_repeating_samples(cell_name):
    cell, _ = CELLS[cell_name]
    weights, X, y = make_problem(cell, [4], True, seed=9)
    sample_weight = np.array([2, 1, 0, 3])
    loss, grads = reference_loss_and_grad(weights, X, y, cell=cell, lengths=RAGGED_LENGTHS,
                                          sample_weight=sample_weight)
    repeat = np.repeat(np.arange(N_SAMPLES), sample_weight)
    loss_r, grads_r = reference_loss_and_grad(weights, X[repeat], y[repeat], cell=cell,
                                              lengths=RAGGED_LENGTHS[repeat])
    assert loss == pytest.approx(loss_r, rel=1e-13)
    assert_grads_close(grads, grads_r, rtol=1e-12, atol=1e-16)
    # unit weights are the plain mean
    loss_1, grads_1 = reference_loss_and_grad(weights, X, y, cell=cell, lengths=RAGGED_LENGTHS,
                                              sample_weight=np.ones(N_SAMPLES))
    loss_0, grads_0 = reference_loss_and_grad(weights, X, y, cell=cell, lengths=RAGGED_LENGTHS)
    assert loss_1 == pytest.approx(loss_0, rel=1e-15)
    assert_grads_close(grads_1, grads_0, rtol=1e-14)


def test_float32_inputs_are_computed_in_float64():
    weights, X, y = make_problem("lstm", [4], False, seed=10)
    weights32 = {key: value.astype(np.float32) for key, value in weights.items()}
    X32 = X.astype(np.float32)
    loss, grads = reference_loss_and_grad(weights32, X32, y, cell="lstm")
    loss64, grads64 = reference_loss_and_grad(
        {key: value.astype(np.float64) for key, value in weights32.items()},
        X32.astype(np.float64), y, cell="lstm")
    assert loss == loss64
    assert_grads_equal(grads, grads64)
    assert all(g.dtype == np.float64 for g in grads.values())


def test_init_weights_names_and_shapes():
    for cell, n_gates in N_GATES.items():
        weights = init_weights(0, cell, 3, [4, 2], 5, bidirectional=True, scale=0.1,
                               dtype=np.float32)
        assert weights["weight_ih_l0"].shape == (n_gates * 4, 3)
        assert weights["weight_hh_l0_reverse"].shape == (n_gates * 4, 4)
        assert weights["weight_ih_l1"].shape == (n_gates * 2, 8)
        assert weights["bias_hh_l1_reverse"].shape == (n_gates * 2,)
        assert weights["weight_out"].shape == (5, 4)
        assert weights["bias_out"].shape == (5,)
        assert len(weights) == 2 * 2 * 4 + 2
        assert all(v.dtype == np.float32 and np.abs(v).max() <= 0.1 for v in weights.values())
    single = init_weights(0, "gru", 2, 3, 2)
    assert sorted(single) == sorted(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                     "bias_hh_l0", "weight_out", "bias_out"])


def test_bad_arguments():
    weights, X, y = make_problem("rnn", [3], True)
    with pytest.raises(ValueError, match="bidirectional"):
        reference_loss_and_grad(weights, X, y, bptt_truncate=2)
    weights, X, y = make_problem("rnn", [3], False)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="bptt_truncate"):
            reference_loss_and_grad(weights, X, y, bptt_truncate=bad)
    with pytest.raises(ValueError, match="lengths"):
        reference_loss_and_grad(weights, X, y, lengths=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="lengths"):
        reference_loss_and_grad(weights, X, y, lengths=[1, 2, 3, N_TIMESTEPS + 1])
    with pytest.raises(ValueError, match=r"weight_ih_l0: expected shape \(12, 3\)"):
        reference_loss_and_grad(weights, X, y, cell="lstm")
    with pytest.raises(ValueError, match="weight_ih_l0"):
        reference_loss_and_grad(weights, X[:, :, :2], y)
    with pytest.raises(ValueError, match=r"missing \['bias_out'\]"):
        reference_loss_and_grad({k: v for k, v in weights.items() if k != "bias_out"}, X, y)
    with pytest.raises(ValueError, match="y must"):
        reference_loss_and_grad(weights, X, np.array([0, 1, 2, N_CLASSES]))
    with pytest.raises(ValueError, match="nonlinearity"):
        reference_loss_and_grad(weights, X, y, nonlinearity="sigmoid")


# ----------------------------------------------------------------------------------------
# Pooling heads and squared error
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_default_head_is_last_cross_entropy(cell_name, topology):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=20)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
                  sample_weight=SAMPLE_WEIGHT)
    explicit = dict(output="last", loss="cross_entropy")
    assert reference_loss(weights, X, y, **explicit, **kwargs) == \
        reference_loss(weights, X, y, **kwargs)
    for bptt_truncate in [None] if bidirectional else [None, 2]:
        value, grads = reference_loss_and_grad(weights, X, y, bptt_truncate=bptt_truncate,
                                               **kwargs)
        value_e, grads_e = reference_loss_and_grad(weights, X, y, bptt_truncate=bptt_truncate,
                                                   **explicit, **kwargs)
        assert value_e == value
        assert_grads_equal(grads_e, grads)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_head_loss_matches_independent_forward(cell_name, topology, head):
    """Pooling and losses against a per-sequence forward that pools its own outputs."""
    output, loss = HEADS[head]
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=21, loss=loss)
    value = reference_loss(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                           lengths=RAGGED_LENGTHS, sample_weight=SAMPLE_WEIGHT,
                           output=output, loss=loss)
    expected = _frozen_prefix_loss(weights, weights, X, y, RAGGED_LENGTHS, None, cell,
                                   nonlinearity, SAMPLE_WEIGHT, output=output, loss=loss)
    assert value == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("output", MANY_TO_ONE)
def test_squared_error_by_hand(output):
    """loss = sum_i w_i 0.5 mean_c (z_ic - y_ic)^2 / sum_i w_i and the head's gradient."""
    weights, X, y = make_problem("gru", [4], False, seed=22, loss="squared_error")
    W_out, b_out = weights["weight_out"], weights["bias_out"]
    w = SAMPLE_WEIGHT / SAMPLE_WEIGHT.sum()
    pool = {"last": lambda o: o[-1], "mean": lambda o: o.mean(axis=0),
            "max": lambda o: o.max(axis=0)}[output]
    loss = 0.0
    expected = {"weight_out": np.zeros_like(W_out), "bias_out": np.zeros_like(b_out)}
    for i, length in enumerate(RAGGED_LENGTHS):
        pooled = pool(_top_layer_outputs(weights, weights, X[i, :length], 0, "gru", "tanh"))
        residual = W_out @ pooled + b_out - y[i]
        loss += w[i] * 0.5 * np.sum(residual**2) / N_CLASSES
        d_z = w[i] * residual / N_CLASSES
        expected["weight_out"] += np.outer(d_z, pooled)
        expected["bias_out"] += d_z

    value, grads = reference_loss_and_grad(weights, X, y, cell="gru", lengths=RAGGED_LENGTHS,
                                           sample_weight=SAMPLE_WEIGHT, output=output,
                                           loss="squared_error")
    assert value == pytest.approx(loss, rel=1e-13)
    for key in expected:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("output", MANY_TO_ONE)
def test_squared_error_one_output_accepts_1d_targets(output):
    rng = np.random.default_rng(23)
    weights = init_weights(rng, "lstm", N_FEATURES, [3], 1, bidirectional=True)
    X = rng.normal(size=(N_SAMPLES, N_TIMESTEPS, N_FEATURES))
    y = rng.normal(size=N_SAMPLES)
    kwargs = dict(cell="lstm", lengths=RAGGED_LENGTHS, output=output, loss="squared_error")
    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    value_2d, grads_2d = reference_loss_and_grad(weights, X, y[:, None], **kwargs)
    assert value == value_2d
    assert_grads_equal(grads, grads_2d)
    # integer targets are read as floats
    y_int = np.array([1, -2, 0, 3])
    assert reference_loss(weights, X, y_int, **kwargs) == \
        reference_loss(weights, X, y_int.astype(np.float64), **kwargs)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_pooling_length_one_sequences_is_last(cell_name, topology, loss):
    """With one valid step, mean and max read exactly what last reads, in both directions."""
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=24, loss=loss)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=np.ones(N_SAMPLES, dtype=int),
                  sample_weight=SAMPLE_WEIGHT, loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, output="last", **kwargs)
    for output in ("mean", "max"):
        value_p, grads_p = reference_loss_and_grad(weights, X, y, output=output, **kwargs)
        assert value_p == value
        assert_grads_equal(grads_p, grads)


def test_max_ties_go_to_the_first_step():
    """With weight_ih = weight_hh = 0 every valid step of a direction has the same state
    h = tanh(bias_ih + bias_hh): all steps tie. The gradient must reach the first step
    (t = 0) in both directions, which leaves its trace in the weight gradients:
    dW_ih sums outer(d_pre, x_{i,0}); the forward step 0 has h_prev = 0 (dW_hh = 0), the
    reverse step 0 has h_prev = h_reverse (its state after step 1) when lengths[i] >= 2."""
    weights, X, y = make_problem("rnn", [3], True, seed=25)
    for key in weights:
        if key.startswith(("weight_ih", "weight_hh")):
            weights[key] = np.zeros_like(weights[key])
    value, grads = reference_loss_and_grad(weights, X, y, lengths=RAGGED_LENGTHS,
                                           sample_weight=SAMPLE_WEIGHT, output="max")

    h = {s: np.tanh(weights[f"bias_ih_l0{s}"] + weights[f"bias_hh_l0{s}"])
         for s in ("", "_reverse")}
    pooled = np.concatenate([h[""], h["_reverse"]])
    logits = weights["weight_out"] @ pooled + weights["bias_out"]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    w = SAMPLE_WEIGHT / SAMPLE_WEIGHT.sum()
    assert value == pytest.approx(np.sum(w * -np.log(p[y])), rel=1e-13)
    d_pooled = [weights["weight_out"].T @ (w[i] * (p - np.eye(N_CLASSES)[y[i]]))
                for i in range(N_SAMPLES)]
    for j, s in enumerate(("", "_reverse")):
        d_pre = [d[3 * j:3 * (j + 1)] * (1.0 - h[s] ** 2) for d in d_pooled]
        h_prev = [np.zeros(3) if s == "" or length < 2 else h[s] for length in RAGGED_LENGTHS]
        expected = {
            "weight_ih": sum(np.outer(d_pre[i], X[i, 0]) for i in range(N_SAMPLES)),
            "weight_hh": sum(np.outer(d_pre[i], h_prev[i]) for i in range(N_SAMPLES)),
            "bias_ih": sum(d_pre),
            "bias_hh": sum(d_pre),
        }
        for name, expected_grad in expected.items():
            np.testing.assert_allclose(grads[f"{name}_l0{s}"], expected_grad, rtol=1e-12,
                                       atol=1e-16, err_msg=f"{name}_l0{s}")
    assert np.all(grads["weight_hh_l0"] == 0.0)
    assert np.any(grads["weight_hh_l0_reverse"] != 0.0)


@pytest.mark.parametrize("head", POOLED_HEADS)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_pooled_padding_is_never_read(cell_name, topology, head):
    output, loss = POOLED_HEADS[head]
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=26, loss=loss)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
                  output=output, loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    for pad in (np.nan, np.inf, -np.inf, 1e300):
        value_pad, grads_pad = reference_loss_and_grad(
            weights, _with_padding(X, RAGGED_LENGTHS, pad), y, **kwargs)
        assert np.isfinite(value_pad)
        assert value_pad == value
        assert_grads_equal(grads_pad, grads)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_head_ragged_batch_equals_separate_sequences(cell_name, topology, head):
    """A padded batch gives the weighted mean of each sequence run alone at its length."""
    output, loss = HEADS[head]
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=27, loss=loss)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, output=output, loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, lengths=RAGGED_LENGTHS,
                                           sample_weight=SAMPLE_WEIGHT, **kwargs)
    w = SAMPLE_WEIGHT / SAMPLE_WEIGHT.sum()
    expected_value = 0.0
    expected = {key: np.zeros_like(v) for key, v in weights.items()}
    for i, length in enumerate(RAGGED_LENGTHS):
        value_i, grads_i = reference_loss_and_grad(weights, X[i:i + 1, :length], y[i:i + 1],
                                                   **kwargs)
        expected_value += w[i] * value_i
        for key in expected:
            expected[key] += w[i] * grads_i[key]
    assert value == pytest.approx(expected_value, rel=1e-13)
    assert_grads_close(grads, expected, rtol=1e-12, atol=1e-16)


def test_bad_head_arguments():
    weights, X, y = make_problem("rnn", [3], False)
    with pytest.raises(ValueError,
                       match=r"output must be one of \('last', 'mean', 'max', 'sequence'\)"):
        reference_loss_and_grad(weights, X, y, output="first")
    with pytest.raises(ValueError, match="output must be one of"):
        reference_loss(weights, X, y, output=None)
    with pytest.raises(ValueError, match=r"loss must be one of \('cross_entropy', "):
        reference_loss_and_grad(weights, X, y, loss="hinge")
    for output in ("mean", "max"):
        with pytest.raises(ValueError,
                           match=f"bptt_truncate is only defined for output='last'.*{output}"):
            reference_loss_and_grad(weights, X, y, output=output, bptt_truncate=2)
    # cross-entropy wants class indices, squared error real targets (n, C)
    _, _, targets = make_problem("rnn", [3], False, loss="squared_error")
    with pytest.raises(ValueError, match="integer class indices.*cross_entropy"):
        reference_loss_and_grad(weights, X, targets)
    se = dict(loss="squared_error")
    for bad in (targets[:, 0], targets[:, :1], targets[:3], np.ones((N_SAMPLES, N_CLASSES + 1))):
        with pytest.raises(ValueError, match=r"y must have shape \(n_samples, n_outputs\)"):
            reference_loss_and_grad(weights, X, bad, **se)
    for bad in (targets.astype(str), targets > 0, targets.astype(complex)):
        with pytest.raises(ValueError, match="y must be real numbers"):
            reference_loss_and_grad(weights, X, bad, **se)
    for value in (np.nan, np.inf):
        bad = targets.copy()
        bad[1, 2] = value
        with pytest.raises(ValueError, match="y must be finite"):
            reference_loss(weights, X, bad, **se)


# ----------------------------------------------------------------------------------------
# Per-step head (output="sequence") and windowed truncated BPTT
# ----------------------------------------------------------------------------------------

# garbage for the padding entries of y (t >= lengths[i]), which are never read
TARGET_PADDING = {"cross_entropy": (-1, N_CLASSES, 2**62),
                  "squared_error": (np.nan, np.inf, -np.inf, 1e300)}


def _garbage_padding(X, y, lengths, loss):
    """X and per-step y with garbage past each sequence's length."""
    return (_with_padding(X, lengths, np.nan),
            _with_padding(y, lengths, TARGET_PADDING[loss][0]))


def _frozen_states(frozen, X, lengths, cell, nonlinearity):
    """Per sequence, each layer's (h, c) after every step of a unidirectional run with the
    weights ``frozen``: the constant states the windows start from."""
    return [_stack_steps(frozen, X[i, :length], None, cell, nonlinearity)[1]
            for i, length in enumerate(lengths)]


def _frozen_carry_loss(live, frozen_states, X, y, lengths, bptt_truncate, cell, nonlinearity,
                       sample_weight=None, loss="cross_entropy"):
    """The output="sequence" loss of a unidirectional network, with each sequence cut into
    windows [0, k), [k, 2k), ...: the state entering the window that starts at step s is
    ``frozen_states[i][s - 1]`` (``_frozen_states``, a constant); the window's steps run on
    from it with ``live``, whose head gives their losses l_it;
    loss = sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i.

    When the frozen states come from live's own weights, this is the loss, and its gradient
    with respect to ``live`` is the windowed truncated gradient: the states entering the
    windows are constants. bptt_truncate=None: one window per sequence (frozen_states is
    not read), an independent forward pass.
    """
    w = np.ones(len(y)) if sample_weight is None else sample_weight
    total = 0.0
    for i, length in enumerate(lengths):
        window = length if bptt_truncate is None else bptt_truncate
        for start in range(0, length, window):
            stop = min(start + window, length)
            entering = frozen_states[i][start - 1] if start > 0 else None
            outputs, _ = _stack_steps(live, X[i, start:stop], entering, cell, nonlinearity)
            total += w[i] * sum(_row_loss(live, o_t, y[i, t], loss)
                                for t, o_t in zip(range(start, stop), outputs))
    return total / np.sum(w * lengths)


@pytest.mark.parametrize("cell_name, topology, batch", FD_HEAD_CASES,
                         ids=["-".join(case) for case in FD_HEAD_CASES])
@pytest.mark.parametrize("loss", LOSSES)
def test_sequence_grad_matches_finite_differences(loss, cell_name, topology, batch):
    # seed 0: the weights and X of the FD tests above (y is drawn after them), so the
    # same remarks on rnn-relu's kink apply
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    use_lengths, use_weights = BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, loss=loss,
                                 output="sequence")
    if use_lengths:
        X, y = _garbage_padding(X, y, RAGGED_LENGTHS, loss)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, output="sequence", loss=loss,
                  lengths=RAGGED_LENGTHS if use_lengths else None,
                  sample_weight=SAMPLE_WEIGHT if use_weights else None)

    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert value == reference_loss(weights, X, y, **kwargs)
    fd = numerical_grad(lambda w: reference_loss(w, X, y, **kwargs), weights, eps=FD_EPS)
    assert_grads_close(grads, fd, rtol=FD_RTOL, atol=1e-10)
    assert list(grads) == list(weights)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_sequence_loss_matches_independent_forward(cell_name, topology, loss):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, _ = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, False, seed=30, loss=loss,
                                 output="sequence")
    value = reference_loss(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                           lengths=RAGGED_LENGTHS, sample_weight=SAMPLE_WEIGHT,
                           output="sequence", loss=loss)
    expected = _frozen_carry_loss(weights, None, X, y, RAGGED_LENGTHS, None, cell,
                                  nonlinearity, SAMPLE_WEIGHT, loss)
    assert value == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_sequence_head_by_hand(loss):
    """loss = sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i, and the head's gradient, from
    z_it = W_out o_it + b_out at every valid step of an independent forward pass."""
    weights, X, y = make_problem("gru", [4], False, seed=31, loss=loss, output="sequence")
    W_out, b_out = weights["weight_out"], weights["bias_out"]
    total_weight = np.sum(SAMPLE_WEIGHT * RAGGED_LENGTHS)  # 8.5 weighted steps
    value = 0.0
    expected = {"weight_out": np.zeros_like(W_out), "bias_out": np.zeros_like(b_out)}
    for i, length in enumerate(RAGGED_LENGTHS):
        outputs = _top_layer_outputs(weights, weights, X[i, :length], 0, "gru", "tanh")
        for t in range(length):
            z = W_out @ outputs[t] + b_out
            if loss == "cross_entropy":
                p = np.exp(z - z.max())
                p /= p.sum()
                l_it, d_z = -np.log(p[y[i, t]]), p - np.eye(N_CLASSES)[y[i, t]]
            else:
                residual = z - y[i, t]
                l_it, d_z = 0.5 * np.sum(residual**2) / N_CLASSES, residual / N_CLASSES
            value += SAMPLE_WEIGHT[i] * l_it / total_weight
            d_z *= SAMPLE_WEIGHT[i] / total_weight
            expected["weight_out"] += np.outer(d_z, outputs[t])
            expected["bias_out"] += d_z

    got, grads = reference_loss_and_grad(weights, X, y, cell="gru", lengths=RAGGED_LENGTHS,
                                         sample_weight=SAMPLE_WEIGHT, output="sequence",
                                         loss=loss)
    assert got == pytest.approx(value, rel=1e-13)
    for key in expected:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-16)


# finite differences of the frozen-carry loss are slow: k = 1, 2, 3, and both losses
WINDOW_CASES = [(1, "cross_entropy"), (2, "cross_entropy"), (2, "squared_error"),
                (3, "squared_error")]


@pytest.mark.parametrize("bptt_truncate, loss", WINDOW_CASES,
                         ids=[f"{k}-{loss}" for k, loss in WINDOW_CASES])
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_windowed_truncation_matches_finite_differences(cell_name, topology, bptt_truncate,
                                                        loss):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, _ = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, False, seed=3, loss=loss,
                                 output="sequence")
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
                  sample_weight=SAMPLE_WEIGHT, output="sequence", loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, bptt_truncate=bptt_truncate,
                                           **kwargs)
    value_full, full = reference_loss_and_grad(weights, X, y, **kwargs)
    # truncation changes the gradient only: the forward state crosses the windows
    assert value == value_full

    frozen_states = _frozen_states(weights, X, RAGGED_LENGTHS, cell, nonlinearity)

    def f(live):
        return _frozen_carry_loss(live, frozen_states, X, y, RAGGED_LENGTHS, bptt_truncate,
                                  cell, nonlinearity, SAMPLE_WEIGHT, loss)

    assert value == pytest.approx(f(weights), rel=1e-13)
    fd = numerical_grad(f, weights, eps=FD_EPS)
    assert_grads_close(grads, fd, rtol=FD_RTOL, atol=1e-10)

    # and truncation really changed the recurrent gradient (lengths 5 and 4 exceed k)
    diff = np.linalg.norm(grads["weight_hh_l0"] - full["weight_hh_l0"])
    assert diff > 1e-6 * np.linalg.norm(full["weight_hh_l0"])
    # the head does not depend on time, so its gradient is unchanged
    np.testing.assert_array_equal(grads["weight_out"], full["weight_out"])
    np.testing.assert_array_equal(grads["bias_out"], full["bias_out"])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("lengths", [None, RAGGED_LENGTHS], ids=["full", "ragged"])
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_windowed_truncation_at_least_max_length_is_no_truncation(cell_name, topology,
                                                                  lengths, loss):
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, _ = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, False, seed=32, loss=loss,
                                 output="sequence")
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=lengths, output="sequence",
                  loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    for k in (N_TIMESTEPS, N_TIMESTEPS + 3):
        value_k, grads_k = reference_loss_and_grad(weights, X, y, bptt_truncate=k, **kwargs)
        assert value_k == value
        assert_grads_equal(grads_k, grads)
    # one step short of the longest sequence: windows [0, T-1) and [T-1, T), so the
    # gradient of the loss at step T-1 no longer reaches the earlier steps (in some layer:
    # with relu, units off at step T-1 may block it in one)
    _, grads_short = reference_loss_and_grad(weights, X, y, bptt_truncate=N_TIMESTEPS - 1,
                                             **kwargs)
    assert not all(np.allclose(grads_short[key], grads[key])
                   for key in grads if key.startswith("weight_hh"))


def test_sequence_squared_error_one_output_accepts_2d_targets():
    rng = np.random.default_rng(33)
    weights = init_weights(rng, "lstm", N_FEATURES, [3], 1, bidirectional=True)
    X = rng.normal(size=(N_SAMPLES, N_TIMESTEPS, N_FEATURES))
    y = rng.normal(size=(N_SAMPLES, N_TIMESTEPS))
    kwargs = dict(cell="lstm", lengths=RAGGED_LENGTHS, output="sequence",
                  loss="squared_error")
    value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
    value_3d, grads_3d = reference_loss_and_grad(weights, X, y[:, :, None], **kwargs)
    assert value == value_3d
    assert_grads_equal(grads, grads_3d)
    # integer targets are read as floats
    y_int = rng.integers(-3, 4, size=(N_SAMPLES, N_TIMESTEPS))
    assert reference_loss(weights, X, y_int, **kwargs) == \
        reference_loss(weights, X, y_int.astype(np.float64), **kwargs)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_sequence_padding_is_never_read(cell_name, topology, loss):
    """Garbage in X and y past each sequence's length changes nothing (y: classes out of
    range for cross-entropy, NaN and inf for squared error)."""
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=34, loss=loss,
                                 output="sequence")
    for bptt_truncate in [None] if bidirectional else [None, 2]:
        kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
                      bptt_truncate=bptt_truncate, output="sequence", loss=loss)
        value, grads = reference_loss_and_grad(weights, X, y, **kwargs)
        for x_pad in (np.nan, np.inf, 1e300):
            for y_pad in TARGET_PADDING[loss]:
                value_pad, grads_pad = reference_loss_and_grad(
                    weights, _with_padding(X, RAGGED_LENGTHS, x_pad),
                    _with_padding(y, RAGGED_LENGTHS, y_pad), **kwargs)
                assert value_pad == value
                assert_grads_equal(grads_pad, grads)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_sequence_ragged_batch_equals_separate_sequences(cell_name, topology, loss):
    """Sequence i run alone gives the mean of its l_it over its L_i steps; the padded batch
    weighs it by w_i L_i: loss = sum_i w_i L_i loss_i / sum_i w_i L_i (a mean per step,
    not per sequence). Windowed truncation starts each sequence's windows at its step 0."""
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=35, loss=loss,
                                 output="sequence")
    share = SAMPLE_WEIGHT * RAGGED_LENGTHS / np.sum(SAMPLE_WEIGHT * RAGGED_LENGTHS)
    for bptt_truncate in [None] if bidirectional else [None, 2]:
        kwargs = dict(cell=cell, nonlinearity=nonlinearity, bptt_truncate=bptt_truncate,
                      output="sequence", loss=loss)
        value, grads = reference_loss_and_grad(weights, X, y, lengths=RAGGED_LENGTHS,
                                               sample_weight=SAMPLE_WEIGHT, **kwargs)
        expected_value = 0.0
        expected = {key: np.zeros_like(v) for key, v in weights.items()}
        alone = []
        for i, length in enumerate(RAGGED_LENGTHS):
            value_i, grads_i = reference_loss_and_grad(
                weights, X[i:i + 1, :length], y[i:i + 1, :length], **kwargs)
            alone.append(value_i)
            expected_value += share[i] * value_i
            for key in expected:
                expected[key] += share[i] * grads_i[key]
        assert value == pytest.approx(expected_value, rel=1e-13)
        assert_grads_close(grads, expected, rtol=1e-12, atol=1e-16)
        # not the mean over sequences
        per_sequence = np.sum(SAMPLE_WEIGHT * alone) / np.sum(SAMPLE_WEIGHT)
        assert abs(value - per_sequence) > 1e-3 * value


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_sequence_of_length_one_is_last(cell_name, topology, loss):
    """With one valid step the per-step head reads o[i, 0] = (forward state after step 0,
    reverse state after step 0), which is what output="last" reads: the same loss and
    gradient, bit for bit."""
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=36, loss=loss,
                                 output="sequence")
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=np.ones(N_SAMPLES, dtype=int),
                  sample_weight=SAMPLE_WEIGHT, loss=loss)
    value, grads = reference_loss_and_grad(weights, X, y, output="sequence", **kwargs)
    value_last, grads_last = reference_loss_and_grad(weights, X, y[:, 0], output="last",
                                                     **kwargs)
    assert value == value_last
    assert_grads_equal(grads, grads_last)


def test_bad_sequence_arguments():
    weights, X, y = make_problem("rnn", [3], False, output="sequence")
    seq = dict(output="sequence", lengths=RAGGED_LENGTHS)
    # cross-entropy: integer classes (n, T); per-sample targets are refused, and vice versa
    for bad in (y[:, 0], y[:, :, None], y[:, :-1], y.astype(np.float64)):
        with pytest.raises(ValueError, match=r"y must be integer class indices of shape "
                           r"\(n_samples, n_timesteps\) for loss='cross_entropy' and "
                           r"output='sequence'"):
            reference_loss_and_grad(weights, X, bad, **seq)
    with pytest.raises(ValueError, match=r"integer class indices of shape \(n_samples,\)"):
        reference_loss_and_grad(weights, X, y)
    # classes are checked at the valid steps only: RAGGED_LENGTHS[3] = 4, [1] = 2
    for value in (-1, N_CLASSES):
        bad = y.copy()
        bad[3, 3] = value
        with pytest.raises(ValueError, match=r"y must lie in \[0, 3\) at the valid steps "
                           r"t < lengths\[i\]"):
            reference_loss(weights, X, bad, **seq)
        bad = y.copy()
        bad[1, 2:] = value
        reference_loss(weights, X, bad, **seq)
    # squared error: reals (n, T, C), or (n, T) when C == 1; finite at the valid steps
    _, _, targets = make_problem("rnn", [3], False, loss="squared_error", output="sequence")
    se = dict(loss="squared_error", **seq)
    for bad in (targets[:, 0], targets[:, :, 0], targets[:, :, :1], targets[:, :-1],
                np.ones((N_SAMPLES, N_TIMESTEPS, N_CLASSES + 1))):
        with pytest.raises(ValueError, match=r"y must have shape \(n_samples, n_timesteps, "
                           r"n_outputs\) = \(4, 5, 3\) for loss='squared_error' and "
                           r"output='sequence' \(or \(n_samples, n_timesteps\) when"):
            reference_loss_and_grad(weights, X, bad, **se)
    for bad in (targets.astype(str), targets > 0, targets.astype(complex)):
        with pytest.raises(ValueError, match="y must be real numbers"):
            reference_loss_and_grad(weights, X, bad, **se)
    for value in (np.nan, np.inf):
        bad = targets.copy()
        bad[3, 3, 1] = value
        with pytest.raises(ValueError, match=r"y must be finite at the valid steps "
                           r"t < lengths\[i\] for loss='squared_error'"):
            reference_loss(weights, X, bad, **se)
    # truncation: not for bidirectional networks
    weights_bi, X, y = make_problem("rnn", [3], True, output="sequence")
    with pytest.raises(ValueError, match="bptt_truncate is not defined for bidirectional"):
        reference_loss_and_grad(weights_bi, X, y, bptt_truncate=2, **seq)


# ----------------------------------------------------------------------------------------
# PyTorch autograd
# ----------------------------------------------------------------------------------------

TORCH_TOPOLOGIES = {
    **TOPOLOGIES,
    "stacked-same": ([3, 3], False),  # one torch module with num_layers=2
    "bidir-stacked-same": ([3, 3], True),
}
TORCH_RTOL = 1e-10


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _torch_modules(torch, weights, cell, nonlinearity):
    """torch RNN modules holding ``weights``, and a map module key -> reference key.

    Equal hidden sizes: one module with num_layers (the state_dict names are ours).
    Otherwise one single-layer module per layer, chained (torch needs equal sizes).
    """
    n_layers = sum(k.startswith("weight_ih_l") and not k.endswith("_reverse") for k in weights)
    bidirectional = any(k.endswith("_reverse") for k in weights)
    sizes = [weights[f"weight_hh_l{k}"].shape[1] for k in range(n_layers)]
    module_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    groups = [list(range(n_layers))] if len(set(sizes)) == 1 else [[k] for k in range(n_layers)]
    modules, names = [], []
    for group in groups:
        n_in = weights[f"weight_ih_l{group[0]}"].shape[1]
        module = module_cls(n_in, sizes[group[0]], num_layers=len(group), batch_first=True,
                            bidirectional=bidirectional, dtype=torch.float64, **extra)
        state = {}
        mapping = {}
        for key in module.state_dict():
            base, layer, suffix = _split_key(key)
            ref_key = f"{base}_l{group[layer]}{suffix}"
            state[key] = torch.from_numpy(weights[ref_key].copy())
            mapping[key] = ref_key
        module.load_state_dict(state)
        modules.append(module)
        names.append(mapping)
    return modules, names


def _split_key(key):
    base, rest = key.rsplit("_l", 1)
    if rest.endswith("_reverse"):
        return base, int(rest[: -len("_reverse")]), "_reverse"
    return base, int(rest), ""


def _torch_row_loss(torch, logits, y, loss):
    """The loss of each row of logits (R, C) for the targets y (NumPy; (R,) or (R, C))."""
    if loss == "cross_entropy":
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(y),
                                                 reduction="none")
    # 0.5 * mean over outputs of the squared error
    return 0.5 * torch.nn.functional.mse_loss(
        logits, torch.from_numpy(y).reshape(logits.shape), reduction="none").mean(dim=1)


def _torch_sample_weight(torch, sample_weight, n_samples):
    return torch.ones(n_samples, dtype=torch.float64) if sample_weight is None else \
        torch.from_numpy(np.asarray(sample_weight, dtype=np.float64))


def _torch_head_loss(torch, h, y, sample_weight, head, loss="cross_entropy"):
    logits = h @ head[0].T + head[1]
    w = _torch_sample_weight(torch, sample_weight, len(y))
    per_sample = _torch_row_loss(torch, logits, y, loss)
    return (w * per_sample).sum() / w.sum()


def _torch_pool(torch, out, lengths, output):
    """Mean or max of the top layer's output sequence over each sequence's valid steps."""
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    n_samples, n_timesteps, _ = out.shape
    lengths = torch.full((n_samples,), n_timesteps) if lengths is None else \
        torch.as_tensor(lengths)
    padding = (torch.arange(n_timesteps)[None, :] >= lengths[:, None])[:, :, None]
    if output == "mean":
        return out.masked_fill(padding, 0.0).sum(dim=1) / lengths[:, None]
    return out.masked_fill(padding, -torch.inf).amax(dim=1)


def _torch_grads(modules, names, head):
    grads = {"weight_out": head[0].grad.numpy(), "bias_out": head[1].grad.numpy()}
    for module, mapping in zip(modules, names):
        for key, param in module.named_parameters():
            grads[mapping[key]] = param.grad.numpy()
    return grads


def torch_loss_and_grad(weights, X, y, cell, nonlinearity, lengths=None, sample_weight=None,
                        output="last", loss="cross_entropy"):
    torch = _torch()
    modules, names = _torch_modules(torch, weights, cell, nonlinearity)
    head = [torch.tensor(weights["weight_out"], requires_grad=True),
            torch.tensor(weights["bias_out"], requires_grad=True)]
    out = torch.from_numpy(X)
    if lengths is not None:
        out = torch.nn.utils.rnn.pack_padded_sequence(
            out, torch.as_tensor(lengths, dtype=torch.int64), batch_first=True,
            enforce_sorted=False)
    for module in modules:
        out, h_n = module(out)
    if cell == "lstm":
        h_n = h_n[0]
    if output != "last":
        h = _torch_pool(torch, out, lengths, output)
    elif modules[-1].bidirectional:
        h = torch.cat([h_n[-2], h_n[-1]], dim=1)  # last layer: forward, reverse
    else:
        h = h_n[-1]
    value = _torch_head_loss(torch, h, y, sample_weight, head, loss)
    value.backward()
    return value.item(), _torch_grads(modules, names, head)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("topology", TORCH_TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_matches_torch_autograd(cell_name, topology, batch):
    _torch()
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TORCH_TOPOLOGIES[topology]
    use_lengths, use_weights = BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=11)
    lengths = RAGGED_LENGTHS if use_lengths else None
    sample_weight = SAMPLE_WEIGHT if use_weights else None

    expected_loss, expected = torch_loss_and_grad(weights, X, y, cell, nonlinearity,
                                                  lengths, sample_weight)
    if use_lengths:  # padding garbage must not matter to either side
        X = _with_padding(X, RAGGED_LENGTHS, np.nan)
    loss, grads = reference_loss_and_grad(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                                          lengths=lengths, sample_weight=sample_weight)
    assert loss == pytest.approx(expected_loss, rel=TORCH_RTOL)
    assert_grads_close(grads, expected, rtol=TORCH_RTOL, atol=1e-15)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("topology", TORCH_TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("head", HEADS)
def test_head_matches_torch_autograd(head, cell_name, topology, batch):
    """Mean/max over the valid steps of torch's (packed, then padded) output sequence, and
    0.5 * mse_loss averaged over outputs. torch's max backward would split ties, but
    continuous random data has none."""
    _torch()
    output, loss = HEADS[head]
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TORCH_TOPOLOGIES[topology]
    use_lengths, use_weights = BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=28, loss=loss)
    lengths = RAGGED_LENGTHS if use_lengths else None
    sample_weight = SAMPLE_WEIGHT if use_weights else None

    expected_value, expected = torch_loss_and_grad(weights, X, y, cell, nonlinearity, lengths,
                                                   sample_weight, output=output, loss=loss)
    if use_lengths:  # padding garbage must not matter to either side
        X = _with_padding(X, RAGGED_LENGTHS, np.nan)
    value, grads = reference_loss_and_grad(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                                           lengths=lengths, sample_weight=sample_weight,
                                           output=output, loss=loss)
    assert value == pytest.approx(expected_value, rel=TORCH_RTOL)
    assert_grads_close(grads, expected, rtol=TORCH_RTOL, atol=1e-15)


def test_torch_packed_bidirectional_h_n_is_not_the_padded_run():
    """Documents why lengths matter: on the padded tensor torch's reverse direction would
    start at T-1 (reading padding), and its forward h_n would be the state at T-1.
    The reference follows the packed run, which differs from the padded one."""
    torch = _torch()
    weights, X, y = make_problem("gru", [3], True, seed=12)
    packed_loss, _ = torch_loss_and_grad(weights, X, y, "gru", "tanh", RAGGED_LENGTHS)
    padded_loss, _ = torch_loss_and_grad(weights, X, y, "gru", "tanh", None)
    ref_loss = reference_loss(weights, X, y, cell="gru", lengths=RAGGED_LENGTHS)
    assert ref_loss == pytest.approx(packed_loss, rel=TORCH_RTOL)
    assert abs(packed_loss - padded_loss) > 1e-6
    # torch's packed `output` at the last valid step holds the reverse state after ONE
    # reverse step, not h_n's reverse half (which is output[:, 0, H:])
    modules, _ = _torch_modules(torch, weights, "gru", "tanh")
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(X), torch.as_tensor(RAGGED_LENGTHS), batch_first=True,
        enforce_sorted=False)
    with torch.no_grad():
        out, h_n = modules[0](packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    rows = np.arange(N_SAMPLES)
    np.testing.assert_array_equal(out[rows, RAGGED_LENGTHS - 1, :3].numpy(), h_n[0].numpy())
    np.testing.assert_array_equal(out[:, 0, 3:].numpy(), h_n[1].numpy())
    assert not np.allclose(out[rows, RAGGED_LENGTHS - 1, 3:].numpy(), h_n[1].numpy())


def torch_truncated_loss_and_grad(weights, X, y, cell, nonlinearity, lengths, bptt_truncate,
                                  sample_weight):
    """Truncated BPTT in torch: per sequence, run the first lengths[i] - k steps without
    grad, then the last k steps from those (detached) states with grad."""
    torch = _torch()
    n_layers = sum(k.startswith("weight_ih_l") for k in weights)
    # one single-layer module per layer, so that each layer's state can be handed over
    modules, names = [], []
    for k in range(n_layers):
        sub = {key.replace(f"_l{k}", "_l0"): value for key, value in weights.items()
               if key.endswith(f"_l{k}")}
        sub["weight_out"], sub["bias_out"] = weights["weight_out"], weights["bias_out"]
        (module,), (mapping,) = _torch_modules(torch, sub, cell, nonlinearity)
        modules.append(module)
        names.append({key: ref.replace("_l0", f"_l{k}") for key, ref in mapping.items()})
    head = [torch.tensor(weights["weight_out"], requires_grad=True),
            torch.tensor(weights["bias_out"], requires_grad=True)]
    x = torch.from_numpy(X)
    last_states = []
    for i, length in enumerate(lengths):
        start = max(length - bptt_truncate, 0)
        states = [None] * n_layers
        if start > 0:
            with torch.no_grad():
                seq = x[i:i + 1, :start]
                for k, module in enumerate(modules):
                    seq, states[k] = module(seq)
        seq = x[i:i + 1, start:length]
        for k, module in enumerate(modules):
            seq, h_n = module(seq, states[k])
        last_states.append((h_n[0] if cell == "lstm" else h_n)[-1])
    h = torch.cat(last_states, dim=0)
    loss = _torch_head_loss(torch, h, y, sample_weight, head)
    loss.backward()
    return loss.item(), _torch_grads(modules, names, head)


@pytest.mark.parametrize("bptt_truncate", [1, 2, 4])
@pytest.mark.parametrize("topology", UNIDIRECTIONAL)
@pytest.mark.parametrize("cell_name", CELLS)
def test_truncated_matches_torch_detached(cell_name, topology, bptt_truncate):
    _torch()
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=13)
    expected_loss, expected = torch_truncated_loss_and_grad(
        weights, X, y, cell, nonlinearity, RAGGED_LENGTHS, bptt_truncate, SAMPLE_WEIGHT)
    loss, grads = reference_loss_and_grad(
        weights, X, y, cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
        bptt_truncate=bptt_truncate, sample_weight=SAMPLE_WEIGHT)
    assert loss == pytest.approx(expected_loss, rel=TORCH_RTOL)
    assert_grads_close(grads, expected, rtol=TORCH_RTOL, atol=1e-15)


def torch_sequence_loss_and_grad(weights, X, y, cell, nonlinearity, lengths=None,
                                 sample_weight=None, loss="cross_entropy"):
    """The per-step head in torch: the packed run, padded back (pad_packed_sequence), logits
    at every step, and the per-step losses masked to the valid steps:
    sum_i w_i sum_{t < L_i} l_it / sum_i w_i L_i."""
    torch = _torch()
    n_samples, n_timesteps, _ = X.shape
    modules, names = _torch_modules(torch, weights, cell, nonlinearity)
    head = [torch.tensor(weights["weight_out"], requires_grad=True),
            torch.tensor(weights["bias_out"], requires_grad=True)]
    lengths = np.full(n_samples, n_timesteps) if lengths is None else np.asarray(lengths)
    out = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(X), torch.as_tensor(lengths, dtype=torch.int64), batch_first=True,
        enforce_sorted=False)
    for module in modules:
        out, _ = module(out)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                    total_length=n_timesteps)
    logits = out @ head[0].T + head[1]  # (n, T, C)
    valid = np.arange(n_timesteps) < lengths[:, None]
    # the padding steps get a harmless target, then a zero weight
    targets = np.where(valid.reshape(valid.shape + (1,) * (y.ndim - 2)), y, 0)
    per_step = _torch_row_loss(torch, logits.reshape(n_samples * n_timesteps, -1),
                               targets.reshape(n_samples * n_timesteps, *y.shape[2:]), loss)
    per_step = torch.where(torch.from_numpy(valid), per_step.reshape(valid.shape), 0.0)
    w = _torch_sample_weight(torch, sample_weight, n_samples)
    value = (w[:, None] * per_step).sum() / (w * torch.from_numpy(lengths)).sum()
    value.backward()
    return value.item(), _torch_grads(modules, names, head)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("topology", TORCH_TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
def test_sequence_matches_torch_autograd(loss, cell_name, topology, batch):
    _torch()
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, bidirectional = TORCH_TOPOLOGIES[topology]
    use_lengths, use_weights = BATCHES[batch]
    weights, X, y = make_problem(cell, hidden_sizes, bidirectional, seed=40, loss=loss,
                                 output="sequence")
    lengths = RAGGED_LENGTHS if use_lengths else None
    sample_weight = SAMPLE_WEIGHT if use_weights else None

    expected_value, expected = torch_sequence_loss_and_grad(
        weights, X, y, cell, nonlinearity, lengths, sample_weight, loss)
    if use_lengths:  # padding garbage must not matter to either side
        X, y = _garbage_padding(X, y, RAGGED_LENGTHS, loss)
    value, grads = reference_loss_and_grad(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                                           lengths=lengths, sample_weight=sample_weight,
                                           output="sequence", loss=loss)
    assert value == pytest.approx(expected_value, rel=TORCH_RTOL)
    assert_grads_close(grads, expected, rtol=TORCH_RTOL, atol=1e-15)


def torch_windowed_loss_and_grad(weights, X, y, cell, nonlinearity, lengths, bptt_truncate,
                                 sample_weight, loss):
    """Windowed truncated BPTT in torch: each sequence runs alone, window by window,
    [0, k), [k, 2k), ..., handing the next window its state detached (h.detach(), and c for
    the LSTM); the per-step losses of all windows are summed."""
    torch = _torch()
    modules, names = _torch_modules(torch, weights, cell, nonlinearity)
    head = [torch.tensor(weights["weight_out"], requires_grad=True),
            torch.tensor(weights["bias_out"], requires_grad=True)]
    w = np.ones(len(lengths)) if sample_weight is None else sample_weight
    total = 0.0
    for i, length in enumerate(lengths):
        states = [None] * len(modules)  # one per module: (num_layers, 1, H), or (h, c)
        for start in range(0, length, bptt_truncate):
            stop = min(start + bptt_truncate, length)
            seq = torch.from_numpy(X[i:i + 1, start:stop])
            for j, module in enumerate(modules):
                seq, state = module(seq, states[j])
                states[j] = tuple(s.detach() for s in state) if cell == "lstm" else \
                    state.detach()
            logits = seq[0] @ head[0].T + head[1]
            total = total + w[i] * _torch_row_loss(torch, logits, y[i, start:stop], loss).sum()
    value = total / np.sum(w * lengths)
    value.backward()
    return value.item(), _torch_grads(modules, names, head)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bptt_truncate", [1, 2, 4])
@pytest.mark.parametrize("topology", ["single", "stacked", "stacked-same"])
@pytest.mark.parametrize("cell_name", CELLS)
def test_windowed_truncation_matches_torch_detached(cell_name, topology, bptt_truncate,
                                                    loss):
    _torch()
    cell, nonlinearity = CELLS[cell_name]
    hidden_sizes, _ = TORCH_TOPOLOGIES[topology]
    weights, X, y = make_problem(cell, hidden_sizes, False, seed=41, loss=loss,
                                 output="sequence")
    expected_value, expected = torch_windowed_loss_and_grad(
        weights, X, y, cell, nonlinearity, RAGGED_LENGTHS, bptt_truncate, SAMPLE_WEIGHT, loss)
    value, grads = reference_loss_and_grad(
        weights, X, y, cell=cell, nonlinearity=nonlinearity, lengths=RAGGED_LENGTHS,
        bptt_truncate=bptt_truncate, sample_weight=SAMPLE_WEIGHT, output="sequence",
        loss=loss)
    assert value == pytest.approx(expected_value, rel=TORCH_RTOL)
    assert_grads_close(grads, expected, rtol=TORCH_RTOL, atol=1e-15)


# -- whole fits against a PyTorch training loop ----------------------------------------
SOLVERS_AS_TORCH = {
    # cbptt's Adam folds the bias corrections into the step size (as
    # scikit-learn's and Keras's), so its epsilon is PyTorch's times
    # sqrt(1 - beta_2 ** t); momentum SGD with a constant rate is PyTorch's
    # (v = -lr * buf); RMSProp is PyTorch's.
    "adam": (dict(solver="adam"), lambda torch, p: torch.optim.Adam(p, lr=0.01)),
    "nesterov": (dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
                 lambda torch, p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
    "rmsprop": (dict(solver="rmsprop", rho=0.9),
                lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
}


@pytest.mark.parametrize("solver", SOLVERS_AS_TORCH)
def test_fit_matches_a_pytorch_training_loop(solver):
    """Epochs of minibatches with the L2 penalty, clipping by the global
    norm and the optimizer step: the loss curve and the trained weights of a
    float64 fit are those of the same loop written in PyTorch."""
    torch = _torch()
    from sklearn.exceptions import ConvergenceWarning

    from cbptt import RNNClassifier

    params, make_optimizer = SOLVERS_AS_TORCH[solver]
    rng = np.random.default_rng(21)
    n, T, D, H, n_epochs, batch = 10, 6, 3, 5, 4, 4
    X = rng.normal(size=(n, T, D))
    y = np.arange(n) % 3
    clf = RNNClassifier(hidden_layer_sizes=H, pooling="max", downsample=1, alpha=0.01,
                        clip_norm=0.5, batch_size=batch, shuffle=False, max_iter=n_epochs,
                        learning_rate="constant", learning_rate_init=0.01, tol=0.0,
                        n_iter_no_change=n_epochs, dtype="float64", warm_start=True,
                        **params)
    start = {"weight_ih_l0": rng.normal(size=(3 * H, D)) / 2,
             "weight_hh_l0": rng.normal(size=(3 * H, H)) / 2,
             "bias_ih_l0": rng.normal(size=3 * H) / 4, "bias_hh_l0": rng.normal(size=3 * H) / 4,
             "weight_out": rng.normal(size=(3, H)), "bias_out": rng.normal(size=3) / 4}
    clf.weights_ = {name: w.copy() for name, w in start.items()}
    clf.classes_, clf.n_features_in_ = np.arange(3), D
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)

    gru = torch.nn.GRU(D, H, batch_first=True).double()
    head = torch.nn.Linear(H, 3).double()
    gru.load_state_dict({k: torch.from_numpy(start[k]) for k in gru.state_dict()})
    head.load_state_dict({"weight": torch.from_numpy(start["weight_out"]),
                          "bias": torch.from_numpy(start["bias_out"])})
    trained = [*gru.parameters(), *head.parameters()]
    optimizer = make_optimizer(torch, trained)
    penalised = [p for name, p in [*gru.named_parameters(), *head.named_parameters()]
                 if "weight" in name]
    losses, steps, clipped = [], 0, 0
    for _ in range(n_epochs):
        total = 0.0
        for first in range(0, n, batch):
            Xb = torch.from_numpy(X[first:first + batch])
            yb = torch.from_numpy(y[first:first + batch])
            loss = (torch.nn.functional.cross_entropy(head(gru(Xb)[0].amax(dim=1)), yb)
                    + 0.01 / (2 * len(yb)) * sum((p ** 2).sum() for p in penalised))
            optimizer.zero_grad()
            loss.backward()
            # Clipping by the global norm (clip_grad_norm_ adds 1e-6 to it).
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in trained))
            if norm > 0.5:
                clipped += 1
                for p in trained:
                    p.grad *= 0.5 / norm
            steps += 1
            if solver == "adam":
                optimizer.param_groups[0]["eps"] = 1e-8 / np.sqrt(1 - 0.999 ** steps)
            optimizer.step()
            total += loss.item() * len(yb)
        losses.append(total / n)

    np.testing.assert_allclose(clf.loss_curve_, losses, rtol=1e-10)
    got = {"weight_out": head.weight, "bias_out": head.bias, **dict(gru.named_parameters())}
    for name, value in got.items():
        np.testing.assert_allclose(clf.weights_[name], value.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    assert not np.allclose(clf.weights_["weight_hh_l0"], start["weight_hh_l0"])
    assert 0 < clipped < steps   # both paths of the clipping ran
