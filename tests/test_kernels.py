"""The Cython kernels against the NumPy reference BPTT, and their invariants.

The reference (tests/reference.py) is itself checked by finite differences and
PyTorch autograd; here the kernels must agree with it: float64 to ~1e-10
relative, float32 to ~1e-4, with ragged lengths, truncation and sample
weights, and bit-identically for any number of threads.
"""

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import softmax as scipy_softmax

from cbptt import RNNClassifier, loss_and_grad
from cbptt._kernels._utils import all_finite, softmax, tanh_float32

try:
    from reference import init_weights, reference_loss_and_grad
except ImportError:  # pragma: no cover - when tests is imported as a package
    from tests.reference import init_weights, reference_loss_and_grad


CELLS = {"rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu"),
         "lstm": ("lstm", "tanh"), "gru": ("gru", "tanh")}
TOPOLOGIES = {"single": ([5], False), "stacked": ([4, 6, 3], False),
              "bidirectional": ([5], True), "stacked-bidirectional": ([3, 4], True)}


def _problem(seed, n=7, T=6, D=3, H=5, C=4, ragged=True, weighted=False,
             cell="rnn", bidirectional=False):
    rng = np.random.default_rng(seed)
    hidden = H if isinstance(H, list) else [H]
    weights = init_weights(rng, cell, D, hidden, C, bidirectional=bidirectional, scale=0.6)
    X = rng.normal(size=(n, T, D))
    y = rng.integers(0, C, size=n)
    lengths = rng.integers(1, T + 1, size=n) if ragged else None
    sample_weight = rng.uniform(0.1, 2.0, size=n) if weighted else None
    return weights, X, y, lengths, sample_weight


def _max_relative_error(grads, expected):
    return max(
        np.max(np.abs(grads[k] - expected[k])) / (np.max(np.abs(expected[k])) + 1e-300)
        for k in expected
    )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bptt_truncate", [None, 1, 3])
def test_float64_matches_reference(nonlinearity, ragged, weighted, bptt_truncate):
    weights, X, y, lengths, sw = _problem(0, ragged=ragged, weighted=weighted)
    kwargs = dict(nonlinearity=nonlinearity, lengths=lengths,
                  bptt_truncate=bptt_truncate, sample_weight=sw)
    loss, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_loss, ref_grads = reference_loss_and_grad(weights, X, y, cell="rnn", **kwargs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert set(grads) == set(weights)
    for name in weights:
        assert grads[name].shape == weights[name].shape
        assert grads[name].dtype == np.float64
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("topology, bptt_truncate", [
    (topology, truncate) for topology, (_, bidirectional) in TOPOLOGIES.items()
    for truncate in ([None] if bidirectional else [None, 2])  # undefined with reverse
])
@pytest.mark.parametrize("cell_name", CELLS)
def test_every_cell_and_topology_matches_reference(cell_name, topology, bptt_truncate):
    cell, nonlinearity = CELLS[cell_name]
    hidden, bidirectional = TOPOLOGIES[topology]
    # 70 rows: three chunks, the last one partial.
    weights, X, y, lengths, sw = _problem(7, n=70, T=7, H=hidden, weighted=True,
                                          cell=cell, bidirectional=bidirectional)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=lengths,
                  bptt_truncate=bptt_truncate, sample_weight=sw)
    loss, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_loss, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("topology", ["stacked", "stacked-bidirectional"])
@pytest.mark.parametrize("cell_name", CELLS)
def test_matches_torch_autograd_directly(cell_name, topology):
    pytest.importorskip("torch")
    from test_reference import torch_loss_and_grad

    cell, nonlinearity = CELLS[cell_name]
    hidden, bidirectional = TOPOLOGIES[topology]
    weights, X, y, lengths, sw = _problem(8, n=40, T=6, H=hidden, weighted=True,
                                          cell=cell, bidirectional=bidirectional)
    expected_loss, expected = torch_loss_and_grad(weights, X, y, cell, nonlinearity,
                                                  lengths, sw)
    loss, grads = loss_and_grad(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                                lengths=lengths, sample_weight=sw)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert _max_relative_error(grads, expected) < 1e-10


def test_many_chunks_and_ties_match_reference():
    # More rows than one chunk (32), many equal lengths: chunking and the
    # stable sort by length must not change the result.
    weights, X, y, lengths, sw = _problem(1, n=150, T=9, D=2, H=6, C=3, weighted=True)
    loss, grads = loss_and_grad(weights, X, y, lengths=lengths, sample_weight=sw)
    ref_loss, ref_grads = reference_loss_and_grad(
        weights, X, y, cell="rnn", lengths=lengths, sample_weight=sw
    )
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float32_close_to_float64(cell):
    weights, X, y, lengths, _ = _problem(2, n=40, T=12, D=4, H=[16, 8], C=5, cell=cell,
                                         bidirectional=True)
    loss64, grads64 = loss_and_grad(weights, X, y, lengths=lengths, cell=cell)
    loss32, grads32 = loss_and_grad(weights, X.astype(np.float32), y, lengths=lengths,
                                    cell=cell)
    assert all(g.dtype == np.float32 for g in grads32.values())
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert _max_relative_error(grads32, grads64) < 1e-4


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_content_never_matters(cell):
    weights, X, y, lengths, _ = _problem(3, n=9, H=[4, 3], cell=cell, bidirectional=True)
    X_nan = X.copy()
    for i, length in enumerate(lengths):
        X_nan[i, length:] = np.nan
    expected = loss_and_grad(weights, X, y, lengths=lengths, cell=cell)
    loss, grads = loss_and_grad(weights, X_nan, y, lengths=lengths, cell=cell)
    assert loss == expected[0]
    for name in grads:
        np.testing.assert_array_equal(grads[name], expected[1][name])


def test_truncation_longer_than_sequences_is_full_bptt():
    weights, X, y, lengths, _ = _problem(4)
    full = loss_and_grad(weights, X, y, lengths=lengths)
    truncated = loss_and_grad(weights, X, y, lengths=lengths, bptt_truncate=X.shape[1])
    for name in full[1]:
        np.testing.assert_array_equal(full[1][name], truncated[1][name])


# Sequences longer than the kernels keep in memory at once (64 steps; the
# steps before run forward only, block by block, carrying the state): lengths
# spread over 1..200, so the blocks cut sequences at different steps and lose
# rows as they go; stacked layers carry one state each.
LONG = dict(n=70, T=200, D=2, H=[4, 3], C=3)


@pytest.mark.parametrize("bptt_truncate", [None, 5, 70, 150])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_long_sequences_match_reference(cell, bptt_truncate):
    weights, X, y, lengths, sw = _problem(12, weighted=True, cell=cell, **LONG)
    kwargs = dict(cell=cell, lengths=lengths, bptt_truncate=bptt_truncate,
                  sample_weight=sw)
    loss, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_loss, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("bptt_truncate", [None, 5])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_long_sequences_float32_close_to_float64(cell, bptt_truncate):
    # 40 units: the float32 per-step products take the small-GEMM path. The
    # weights are halved so that the recurrence contracts: at full scale a
    # 200-step Elman network amplifies float32 rounding to 2e-4, whatever
    # the kernels do.
    weights, X, y, lengths, _ = _problem(14, cell=cell, **{**LONG, "H": [40, 3]})
    weights = {name: 0.5 * value for name, value in weights.items()}
    kwargs = dict(cell=cell, lengths=lengths, bptt_truncate=bptt_truncate)
    loss64, grads64 = loss_and_grad(weights, X, y, **kwargs)
    loss32, grads32 = loss_and_grad(weights, X.astype(np.float32), y, **kwargs)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert _max_relative_error(grads32, grads64) < 1e-4


def _long_network(cell, bidirectional=False, dropout=0.0):
    from cbptt._functional import Network

    weights, X, y, lengths, _ = _problem(13, cell=cell, bidirectional=bidirectional,
                                         **LONG)
    network = Network(cell, "tanh", X.shape[2], LONG["H"], LONG["C"],
                      bidirectional=bidirectional, dropout=dropout)
    return network, network.pack(weights, np.float64), weights, X, y, lengths


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_long_sequences_predict_matches_reference(cell, bidirectional):
    network, params, weights, X, y, lengths = _long_network(cell, bidirectional)
    logits = network.outputs(params, X, lengths, n_threads=2)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected, _ = reference_loss_and_grad(weights, X, y, cell=cell, lengths=lengths)
    assert -np.mean(log_p[np.arange(len(y)), y]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_truncation_leaves_the_forward_pass_alone(cell):
    # Truncated BPTT changes the gradient only: the loss, dropout masks
    # included, is the same whichever steps are kept for the backward pass.
    from cbptt._functional import sort_by_length

    network, params, _, X, y, lengths = _long_network(cell, dropout=0.3)
    batch = sort_by_length(lengths)
    grad = np.empty_like(params)
    losses = [
        network.loss_and_grad(params, X, lengths, batch, y.astype(np.intp), None,
                              1 / len(X), grad, truncate, 2, seed=11)
        for truncate in (X.shape[1], 70, 5)
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-12)
    assert losses[2] == pytest.approx(losses[0], rel=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_scratch_memory_does_not_grow_with_sequence_length(cell):
    from cbptt._functional import Network
    from cbptt._kernels import network as kernels

    def size(n_steps, training, truncate, n_dirs=1):
        network = Network(cell, "tanh", 3, [32, 16], 4, bidirectional=n_dirs == 2)
        return kernels.workspace_size(network.spec, network.hidden_sizes, 64, n_steps,
                                      training, truncate, True)

    # Truncated training and predict keep a bounded number of steps...
    assert size(100_000, True, 20) == size(200, True, 20)
    assert size(100_000, False, 0) == size(200, False, 0)
    # ...full BPTT and the reverse direction need every step.
    assert size(10_000, True, 10_000) > 40 * size(200, True, 200)
    assert size(10_000, False, 0, n_dirs=2) > 40 * size(200, False, 0, n_dirs=2)


# -- heads and losses -------------------------------------------------------------

HEADS = [(output, loss) for output in ("last", "mean", "max")
         for loss in ("cross_entropy", "squared_error")]


def _targets(rng, loss, n, C):
    """Class indices (cross-entropy) or (n, C) real targets (squared error)."""
    return rng.integers(0, C, size=n) if loss == "cross_entropy" else rng.normal(size=(n, C))


def _head_problem(seed, output, loss, **kwargs):
    weights, X, _, lengths, sw = _problem(seed, **kwargs)
    y = _targets(np.random.default_rng(seed + 1000), loss, len(X),
                 weights["bias_out"].shape[0])
    return weights, X, y, lengths, sw, dict(output=output, loss=loss)


@pytest.mark.parametrize("output, loss", HEADS)
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("cell_name", CELLS)
def test_every_head_and_loss_matches_reference(cell_name, topology, output, loss):
    cell, nonlinearity = CELLS[cell_name]
    hidden, bidirectional = TOPOLOGIES[topology]
    # 70 rows: three chunks, the last one partial; ragged and weighted.
    weights, X, y, lengths, sw, head = _head_problem(
        15, output, loss, n=70, T=7, H=hidden, weighted=True, cell=cell,
        bidirectional=bidirectional)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=lengths, sample_weight=sw,
                  **head)
    value, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_value, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("output, loss", HEADS)
@pytest.mark.parametrize("cell_name", CELLS)
def test_every_head_and_loss_matches_torch_autograd(cell_name, output, loss):
    pytest.importorskip("torch")
    from test_reference import torch_loss_and_grad

    cell, nonlinearity = CELLS[cell_name]
    weights, X, y, lengths, sw, head = _head_problem(
        16, output, loss, n=40, T=6, H=[4, 3], weighted=True, cell=cell,
        bidirectional=True)
    expected_loss, expected = torch_loss_and_grad(weights, X, y, cell, nonlinearity,
                                                  lengths, sw, **head)
    value, grads = loss_and_grad(weights, X, y, cell=cell, nonlinearity=nonlinearity,
                                 lengths=lengths, sample_weight=sw, **head)
    assert value == pytest.approx(expected_loss, rel=1e-12)
    assert _max_relative_error(grads, expected) < 1e-10


@pytest.mark.parametrize("output, loss", HEADS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_head_float32_close_to_float64(cell, output, loss):
    # 40 units in the first layer: its float32 products run in small_gemm.h.
    weights, X, y, lengths, _, head = _head_problem(
        17, output, loss, n=40, T=12, D=4, H=[40, 8], C=3, cell=cell, bidirectional=True)
    weights = {name: 0.5 * value for name, value in weights.items()}
    kwargs = dict(cell=cell, lengths=lengths, **head)
    loss64, grads64 = loss_and_grad(weights, X, y, **kwargs)
    loss32, grads32 = loss_and_grad(weights, X.astype(np.float32), y, **kwargs)
    assert all(g.dtype == np.float32 for g in grads32.values())
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert _max_relative_error(grads32, grads64) < 1e-4


@pytest.mark.parametrize("output, loss", [h for h in HEADS if h[0] != "last"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_pooled_heads_on_long_sequences_match_reference(cell, output, loss):
    # Training keeps every step (no truncation with a pooled head); predict
    # pools the forward-only blocks of 64 steps into a running sum or max.
    from cbptt._functional import Network

    weights, X, y, lengths, sw, head = _head_problem(18, output, loss, weighted=True,
                                                     cell=cell, **LONG)
    value, grads = loss_and_grad(weights, X, y, cell=cell, lengths=lengths,
                                 sample_weight=sw, **head)
    ref_value, ref_grads = reference_loss_and_grad(weights, X, y, cell=cell,
                                                   lengths=lengths, sample_weight=sw,
                                                   **head)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10

    network = Network(cell, "tanh", X.shape[2], LONG["H"], LONG["C"], output=output,
                      loss=loss)
    outputs = network.outputs(network.pack(weights, np.float64), X, lengths, n_threads=2)
    # The loss of the predicted outputs, in NumPy, is the reference loss.
    if loss == "cross_entropy":
        log_p = outputs - np.log(np.exp(outputs).sum(axis=1, keepdims=True))
        per_sample = -log_p[np.arange(len(y)), y]
    else:
        per_sample = 0.5 * np.mean((outputs - y) ** 2, axis=1)
    assert np.average(per_sample, weights=sw) == pytest.approx(ref_value, rel=1e-12)


@pytest.mark.parametrize("output", ["mean", "max"])
def test_pooled_heads_refuse_truncation_in_the_kernels(output):
    # The Python layer refuses it with a message; the kernels refuse it too.
    from cbptt._functional import Network, sort_by_length

    weights, X, y, lengths, _ = _problem(19, cell="gru")
    network = Network("gru", "tanh", X.shape[2], [5], 4, output=output)
    params = network.pack(weights, np.float64)
    grad = np.empty_like(params)
    with pytest.raises(ValueError, match="last-state and per-step heads only"):
        network.loss_and_grad(params, X, lengths, sort_by_length(lengths),
                              y.astype(np.intp), None, 1.0, grad, X.shape[1] - 1, 1)
    with pytest.raises(ValueError, match="bptt_truncate cannot be combined with "
                       f"output='{output}'"):
        loss_and_grad(weights, X, y, cell="gru", lengths=lengths, bptt_truncate=3,
                      output=output)


def test_max_head_gradient_goes_to_the_first_step_of_a_tie():
    # Zero input weights and a zero recurrence give every step the same
    # output: the max reads (and its gradient reaches) step 1 only, which
    # only the input projection of step 1 can show.
    weights, X, y, _, _ = _problem(20, n=6, T=5, D=2, H=3, C=2, ragged=False)
    weights = {**weights, "weight_ih_l0": np.zeros((3, 2)),
               "weight_hh_l0": np.zeros((3, 3))}
    _, grads = loss_and_grad(weights, X, y, output="max")
    _, grads_first = loss_and_grad(weights, X[:, :1], y, output="max")
    np.testing.assert_allclose(grads["weight_ih_l0"], grads_first["weight_ih_l0"],
                               rtol=1e-14)
    _, grads_mean = loss_and_grad(weights, X, y, output="mean")
    assert not np.allclose(grads_mean["weight_ih_l0"], grads_first["weight_ih_l0"])


@pytest.mark.parametrize("output, loss", HEADS)
def test_every_head_bit_identical_for_any_thread_count(output, loss):
    weights, X, y, lengths, sw, head = _head_problem(
        21, output, loss, n=200, T=10, D=3, H=[24, 8], C=4, weighted=True, cell="gru",
        bidirectional=True)
    for dtype in (np.float32, np.float64):
        results = [
            loss_and_grad(weights, X.astype(dtype), y, cell="gru", lengths=lengths,
                          sample_weight=sw, n_threads=k, **head)
            for k in (1, 2, 4)
        ]
        for value, grads in results[1:]:
            assert value == results[0][0]
            for name in grads:
                np.testing.assert_array_equal(grads[name], results[0][1][name])


# -- the per-step head ------------------------------------------------------------

def _step_problem(seed, loss, **kwargs):
    """A problem with a target at every step; padding holds garbage."""
    weights, X, _, lengths, sw = _problem(seed, **kwargs)
    rng = np.random.default_rng(seed + 2000)
    n, T = X.shape[:2]
    C = weights["bias_out"].shape[0]
    if loss == "cross_entropy":
        y = rng.integers(0, C, size=(n, T))
        garbage = -1
    else:
        y = rng.normal(size=(n, T, C))
        garbage = np.nan
    if lengths is not None:
        y[np.arange(T) >= lengths[:, np.newaxis]] = garbage
    return weights, X, y, lengths, sw


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
@pytest.mark.parametrize("topology, bptt_truncate", [
    (topology, truncate) for topology, (_, bidirectional) in TOPOLOGIES.items()
    for truncate in ([None] if bidirectional else [None, 1, 3])
])
@pytest.mark.parametrize("cell_name", CELLS)
def test_per_step_head_matches_reference(cell_name, topology, bptt_truncate, loss):
    cell, nonlinearity = CELLS[cell_name]
    hidden, bidirectional = TOPOLOGIES[topology]
    weights, X, y, lengths, sw = _step_problem(23, loss, n=70, T=7, H=hidden, weighted=True,
                                               cell=cell, bidirectional=bidirectional)
    kwargs = dict(cell=cell, nonlinearity=nonlinearity, lengths=lengths, sample_weight=sw,
                  bptt_truncate=bptt_truncate, output="sequence", loss=loss)
    value, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_value, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10


@pytest.mark.parametrize("bptt_truncate", [None, 5, 64, 70])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_per_step_head_on_long_sequences_matches_reference(cell, bptt_truncate):
    # Windows of up to 70 steps over sequences of up to 200, ragged: the
    # rows drop out window by window; predict runs windows of 64 steps.
    from cbptt._functional import Network

    weights, X, y, lengths, sw = _step_problem(24, "squared_error", weighted=True,
                                               cell=cell, **LONG)
    kwargs = dict(cell=cell, lengths=lengths, sample_weight=sw,
                  bptt_truncate=bptt_truncate, output="sequence", loss="squared_error")
    value, grads = loss_and_grad(weights, X, y, **kwargs)
    ref_value, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10

    network = Network(cell, "tanh", X.shape[2], LONG["H"], LONG["C"], output="sequence",
                      loss="squared_error")
    outputs = network.outputs(network.pack(weights, np.float64), X, lengths, n_threads=2)
    valid = np.arange(X.shape[1]) < lengths[:, np.newaxis]
    assert np.all(outputs[~valid] == 0)
    per_step = 0.5 * np.mean((outputs - np.nan_to_num(y)) ** 2, axis=2)
    step_weights = np.broadcast_to(sw[:, np.newaxis], valid.shape)
    assert np.average(per_step[valid], weights=step_weights[valid]) == pytest.approx(
        ref_value, rel=1e-12)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_per_step_head_float32_close_to_float64(cell, loss):
    weights, X, y, lengths, _ = _step_problem(25, loss, n=40, T=12, D=4, H=[40, 8], C=3,
                                              cell=cell)
    weights = {name: 0.5 * value for name, value in weights.items()}
    for kwargs in (dict(bptt_truncate=5), dict(bidirectional_weights=True)):
        if "bidirectional_weights" in kwargs:
            weights, X, y, lengths, _ = _step_problem(26, loss, n=40, T=12, D=4, H=[40, 8],
                                                      C=3, cell=cell, bidirectional=True)
            weights = {name: 0.5 * value for name, value in weights.items()}
            kwargs = {}
        kwargs.update(cell=cell, lengths=lengths, output="sequence", loss=loss)
        loss64, grads64 = loss_and_grad(weights, X, y, **kwargs)
        loss32, grads32 = loss_and_grad(weights, X.astype(np.float32), y, **kwargs)
        assert all(g.dtype == np.float32 for g in grads32.values())
        assert loss32 == pytest.approx(loss64, rel=1e-5)
        assert _max_relative_error(grads32, grads64) < 1e-4


@pytest.mark.parametrize("bptt_truncate", [None, 3])
def test_per_step_head_bit_identical_for_any_thread_count(bptt_truncate):
    weights, X, y, lengths, sw = _step_problem(27, "cross_entropy", n=200, T=10, D=3,
                                               H=[24, 8], C=4, weighted=True, cell="lstm")
    for dtype in (np.float32, np.float64):
        results = [
            loss_and_grad(weights, X.astype(dtype), y, cell="lstm", lengths=lengths,
                          sample_weight=sw, n_threads=k, bptt_truncate=bptt_truncate,
                          output="sequence")
            for k in (1, 2, 4)
        ]
        for value, grads in results[1:]:
            assert value == results[0][0]
            for name in grads:
                np.testing.assert_array_equal(grads[name], results[0][1][name])


def test_per_step_scratch_memory_follows_the_window():
    from cbptt._functional import Network
    from cbptt._kernels import network as kernels

    network = Network("gru", "tanh", 3, [32, 16], 4, output="sequence")

    def size(n_steps, training, truncate):
        return kernels.workspace_size(network.spec, network.hidden_sizes, 64, n_steps,
                                      training, truncate, True)

    assert size(100_000, True, 20) == size(200, True, 20)
    assert size(100_000, False, 0) == size(200, False, 0)
    assert size(10_000, True, 10_000) > 40 * size(200, True, 200)


def test_defaults_are_the_last_state_cross_entropy():
    weights, X, y, lengths, sw = _problem(22, cell="lstm", H=[4, 3], weighted=True)
    default = loss_and_grad(weights, X, y, cell="lstm", lengths=lengths, sample_weight=sw)
    explicit = loss_and_grad(weights, X, y, cell="lstm", lengths=lengths, sample_weight=sw,
                             output="last", loss="cross_entropy")
    assert default[0] == explicit[0]
    for name in default[1]:
        np.testing.assert_array_equal(default[1][name], explicit[1][name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_bit_identical_for_any_thread_count(dtype, cell):
    weights, X, y, lengths, sw = _problem(5, n=200, T=10, D=3, H=[24, 8], C=4,
                                          weighted=True, cell=cell, bidirectional=True)
    X = X.astype(dtype)
    results = [
        loss_and_grad(weights, X, y, cell=cell, lengths=lengths, sample_weight=sw,
                      n_threads=k)
        for k in (1, 2, 4)
    ]
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for name in grads:
            np.testing.assert_array_equal(grads[name], results[0][1][name])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("params", [
    dict(cell="rnn"),
    dict(cell="gru", hidden_layer_sizes=(8, 6), dropout=0.3),
    dict(cell="lstm", bidirectional=True),
])
def test_fit_bit_identical_for_any_thread_count(params):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 7, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    params = {"hidden_layer_sizes": (12,), **params}
    fits = [
        RNNClassifier(batch_size=128, max_iter=3, random_state=0, n_threads=k,
                      **params).fit(X, y)
        for k in (1, 2, 4)
    ]
    for fit in fits[1:]:
        for name in fit.weights_:
            np.testing.assert_array_equal(fit.weights_[name], fits[0].weights_[name])


@pytest.mark.parametrize("form", ["scalar", "baseline", "avx2", "avx512"])
def test_float32_tanh_within_6_ulp(form):
    # The scalar form serves the cells' loops; each instruction set's build
    # has a vector form for the fused Elman step (scalar in the baseline).
    x = np.concatenate([
        np.linspace(-20, 20, 400_001),
        np.geomspace(1e-38, 20, 20_000),
        -np.geomspace(1e-38, 20, 20_000),
        [0.0, np.float32(np.finfo(np.float32).max), -np.float32(np.finfo(np.float32).max)],
    ]).astype(np.float32)
    out = np.empty_like(x)
    (tanh_float32 if form == "scalar" else _kernels_for(form).tanh_vector_float32)(x, out)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - exact) / ulp) < 6
    assert np.max(np.abs(out)) <= 1.0
    assert np.all(np.sign(out) == np.sign(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_every_non_finite_value(dtype):
    # 37 elements: the vector loop's tail is checked too.
    largest = np.finfo(dtype).max
    x = (largest * np.linspace(-1, 1, 37)).astype(dtype)
    x[18] = np.finfo(dtype).smallest_subnormal
    assert all_finite(x)
    assert all_finite(np.empty(0, dtype=dtype))
    for bad in (np.nan, np.inf, -np.inf):
        for position in range(len(x)):
            y = x.copy()
            y[position] = bad
            assert not all_finite(y), (bad, position)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_scipy(dtype, log):
    rng = np.random.default_rng(0)
    z = np.vstack([
        rng.standard_normal((50, 7)) * 30,
        np.full((1, 7), 3.0),                    # a tie: uniform
        [[1e4, -1e4, 0, 0, 0, 0, 5e3]],          # exp of the raw values overflows
    ]).astype(dtype)
    out = z.copy()
    softmax(out, log)
    exact = (scipy_log_softmax if log else scipy_softmax)(z.astype(np.float64), axis=1)
    tolerance = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, exact, rtol=tolerance, atol=tolerance * (1 + log * 1e4))
    if not log:
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=tolerance)
        np.testing.assert_allclose(out[50], 1 / 7, rtol=tolerance)


def _dropout_loss(cell, dropout, seed, n_threads=None):
    from cbptt._functional import Network, sort_by_length

    weights, X, y, lengths, _ = _problem(9, n=50, T=6, H=[6, 5], cell=cell)
    network = Network(cell, "tanh", X.shape[2], [6, 5], 4, dropout=dropout)
    params = network.pack(weights, np.float64)
    grad = np.empty_like(params)
    loss = network.loss_and_grad(
        params, X, lengths, sort_by_length(lengths), y.astype(np.intp), None,
        1 / len(X), grad, X.shape[1], n_threads or 1, seed,
    )
    return loss, grad, weights, X, y, lengths


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_dropout_between_layers(cell):
    loss0, grad0, weights, X, y, lengths = _dropout_loss(cell, 0.0, 123)
    expected, _ = reference_loss_and_grad(weights, X, y, cell=cell, lengths=lengths)
    assert loss0 == pytest.approx(expected, rel=1e-12)          # p = 0: no dropout
    loss_a, grad_a, *_ = _dropout_loss(cell, 0.5, 123)
    loss_b, grad_b, *_ = _dropout_loss(cell, 0.5, 123, n_threads=2)
    loss_c, _, *_ = _dropout_loss(cell, 0.5, 124)
    assert loss_a != loss0 and loss_c != loss_a                  # masks act, per seed
    assert loss_a == loss_b                                      # same seed, same mask
    np.testing.assert_array_equal(grad_a, grad_b)


def test_dropout_gradient_matches_finite_differences():
    # With the mask fixed by the seed, the loss is a smooth function of the
    # weights, and the gradient must be its derivative.
    from cbptt._functional import Network, sort_by_length

    weights, X, y, lengths, _ = _problem(10, n=20, T=5, H=[4, 3], cell="gru")
    network = Network("gru", "tanh", X.shape[2], [4, 3], 4, dropout=0.4)
    params = network.pack(weights, np.float64)
    batch = sort_by_length(lengths)

    def loss_at(p, grad):
        return network.loss_and_grad(p, X, lengths, batch, y.astype(np.intp), None,
                                     1 / len(X), grad, X.shape[1], 1, 7)

    grad = np.empty_like(params)
    loss_at(params, grad)
    scratch = np.empty_like(params)
    numeric = np.empty_like(params)
    for j in range(len(params)):
        step = np.zeros_like(params)
        step[j] = 1e-6
        numeric[j] = (loss_at(params + step, scratch) - loss_at(params - step, scratch)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stale_workspace_never_leaks(cell):
    # The estimator reuses one workspace for every minibatch; whatever an
    # earlier call left there (here: NaN everywhere) must not matter.
    from cbptt._functional import Network, sort_by_length

    weights, X, y, lengths, _ = _problem(11, n=150, T=8, H=[5, 4], cell=cell,
                                         bidirectional=True)
    network = Network(cell, "tanh", X.shape[2], [5, 4], 4, bidirectional=True)
    params = network.pack(weights, np.float64)
    batch = sort_by_length(lengths)
    y = y.astype(np.intp)

    def loss_and_grad():
        grad = np.empty_like(params)
        loss = network.loss_and_grad(params, X, lengths, batch, y, None, 1 / len(X),
                                     grad, X.shape[1], 2)
        return loss, grad

    fresh_loss, fresh_grad = loss_and_grad()
    fresh_logits = network.outputs(params, X, lengths, 2)
    assert len(network._workspace) == 2  # training and forward-only scratch
    for buffers in network._workspace.values():
        for buffer in buffers:
            if buffer is not None:
                buffer.fill(np.nan)
    loss, grad = loss_and_grad()
    assert loss == fresh_loss
    np.testing.assert_array_equal(grad, fresh_grad)
    np.testing.assert_array_equal(network.outputs(params, X, lengths, 2), fresh_logits)
    ref_loss, _ = reference_loss_and_grad(weights, X, y, cell=cell, lengths=lengths)
    assert loss == pytest.approx(ref_loss, rel=1e-12)


def test_denormals_flushed_inside_kernels_only():
    # The kernels flush denormal floats to zero (they slow every operation
    # down ~100x), and must leave the caller's floating-point mode as it was.
    weights, X, y, lengths, _ = _problem(12, n=40, T=6)
    loss_and_grad(weights, X.astype(np.float32), y, lengths=lengths, n_threads=2)
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    assert (tiny / np.float32(4))[0] > 0  # still a denormal, not zero


def _kernels_for(instruction_set):
    """The compiled kernels for one instruction set; skip where the CPU or
    this build has none."""
    import importlib

    from cbptt._kernels import _utils

    if instruction_set not in _utils.cpu_instruction_sets():
        pytest.skip(f"this CPU does not run {instruction_set}")
    suffix = "" if instruction_set == "baseline" else f"_{instruction_set}"
    try:
        return importlib.import_module(f"cbptt._kernels._network{suffix}")
    except ImportError:
        pytest.skip(f"this build has no {instruction_set} kernels")


@pytest.mark.parametrize("instruction_set", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_instruction_set_matches_reference(instruction_set, cell, monkeypatch):
    # x86-64 builds carry the kernels compiled three times. In float32 the
    # per-step products run in intrinsics at any size, and so do all products
    # of layers up to 64 units: 37 units leave ragged rows (8 or 4 to a
    # register block) and columns in every product, 70 runs the per-step
    # products in intrinsics with BLAS for the products over all steps.
    import cbptt._functional

    kernels = _kernels_for(instruction_set)
    assert kernels.instruction_set == instruction_set
    monkeypatch.setattr(cbptt._functional, "_network", kernels)
    weights, X, y, lengths, sw = _problem(13, n=45, T=7, D=3, H=[37, 70], weighted=True,
                                          cell=cell)
    kwargs = dict(cell=cell, lengths=lengths, sample_weight=sw)
    ref_loss, ref_grads = reference_loss_and_grad(weights, X, y, **kwargs)
    loss, grads = loss_and_grad(weights, X, y, **kwargs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_relative_error(grads, ref_grads) < 1e-10
    weights32 = {k: v.astype(np.float32) for k, v in weights.items()}
    loss32, grads32 = loss_and_grad(weights32, X.astype(np.float32), y, **kwargs)
    assert loss32 == pytest.approx(ref_loss, rel=1e-4)
    assert _max_relative_error(grads32, ref_grads) < 1e-4


@pytest.mark.parametrize("value, message", [
    ("sse9", "is not one of 'baseline', 'avx2', 'avx512'"),
    ("baseline", None),
])
def test_instruction_set_can_be_chosen(value, message, tmp_path):
    import os
    import subprocess
    import sys

    # From an empty directory, so that the installed cbptt is imported.
    code = "import cbptt._kernels as k; print(k.network.instruction_set)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "CBPTT_INSTRUCTION_SET": value})
    if message is None:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == value
    else:
        assert out.returncode != 0
        assert "ImportError" in out.stderr and message in out.stderr


def test_debug_build_checks_the_scratch_buffers():
    # The release build trusts its caller; a CBPTT_DEBUG build checks that
    # the workspace fits the minibatch before any kernel touches it.
    from cbptt._functional import Network, sort_by_length
    from cbptt._kernels import network as kernels
    from cbptt._kernels._utils import debug_build

    if not debug_build():
        pytest.skip("the check is compiled into CBPTT_DEBUG=1 builds only")
    weights, X, y, lengths, _ = _problem(28, cell="gru")
    network = Network("gru", "tanh", X.shape[2], [5], 4)
    params = network.pack(weights, np.float64)
    batch = sort_by_length(lengths)
    too_small = np.empty((1, 16))
    with pytest.raises(AssertionError, match="a workspace row holds 16 elements"):
        kernels.loss_and_grad(network.spec, network.hidden_sizes, X, lengths, batch,
                              y.astype(np.intp), None, None, 1.0, params,
                              np.empty_like(params), np.empty((1, len(params))),
                              too_small, X.shape[1], 0, 1)
    with pytest.raises(AssertionError, match="a workspace row holds 16 elements"):
        kernels.forward(network.spec, network.hidden_sizes, X, lengths, batch, params,
                        np.empty((len(X), 4)), too_small, 1)
