# The network's description (Model), the rows of a chunk over one segment of
# time (Chunk), and where a chunk's buffers lie in its thread's workspace
# (Layout).
#
# Why: every other piece of the kernels reads these three structs and nothing
# else to know the shapes, so a layout change is made here, once. Inside a
# chunk, every buffer of every layer and direction is laid out
# (row, step, unit) with step 0 holding the initial state:
#
#   inp     (rows, S + 1, D_in)   the layer's input, zero padded
#   gates   (rows, S + 1, G H)    pre-activations, then activated gates
#   hs      (rows, S + 1, H)      hidden states, hs[:, 0] = h_0 (the Elman
#                                 cell's h overwrites its gates)
#   aux     (rows, S + 1, H)      LSTM: cell states; GRU: W_hn h + b_hn
#   d_gates (rows, S + 1, G H)    gradient of the pre-activations, zero where unused
#   d_out   (rows, S + 1, H)      gradient arriving at hs from above: the next
#                                 layer, or a head that reads every step
#
# so that the input projection, the weight gradients and the gradient into
# the layer's input are each ONE GEMM over all steps (the recurrent weight
# gradient pairs row r + 1 of d_gates with row r of hs), and step s only
# touches the prefix of rows whose sequences are at least s long: no
# arithmetic on padding. S is the segment's longest sequence. A reverse
# direction reads each sequence reversed within its own length, so it too
# runs forward over a prefix; its outputs are un-reversed between layers.
#
# Parameters are one flat vector in PyTorch's state_dict order; `Model.params`
# holds where each (layer, direction) block starts, then come weight_out and
# bias_out (`Model.head`).

cdef enum:
    MAX_LAYERS = 16
    MAX_CHUNK_ROWS = 64             # the most _chunk_rows returns
    # Steps per block of the forward-only prefix (_chunk.pxi): long enough
    # for efficient input-projection GEMMs.
    BLOCK_STEPS = 64
    MAX_BLOCKS = 2 * MAX_LAYERS     # (layer, direction) pairs
    # Where the module has small_gemm.h, the float32 per-step products use
    # it at any hidden size, with packed weights; up to this hidden size so
    # do the products over all steps, whose large inner dimension favours
    # BLAS beyond it.
    SMALL_H_MAX = 64

# What the head reads of the top layer's output sequence, and what the loss
# scores (_head.pxi, _losses.pxd).
cdef enum:
    HEAD_LAST = 0                   # each direction's state after its last step
    HEAD_MEAN = 1                   # the mean over each sequence's valid steps
    HEAD_MAX = 2                    # the elementwise max over the valid steps
    HEAD_SEQUENCE = 3               # an output at every valid step

cdef enum:
    CROSS_ENTROPY = 0
    SQUARED_ERROR = 1

# The codes the Python layer passes in a Spec.
cell_codes = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
head_codes = {"last": HEAD_LAST, "mean": HEAD_MEAN, "max": HEAD_MAX,
              "sequence": HEAD_SEQUENCE}
loss_codes = {"cross_entropy": CROSS_ENTROPY, "squared_error": SQUARED_ERROR}


cdef struct Spec:
    # The network as the Python layer describes it (a dict with these keys,
    # cbptt._functional.Network.spec); the layer sizes come as an array.
    int cell
    bint relu
    intp_t n_dirs
    intp_t n_features
    intp_t n_outputs                # rows of weight_out
    int head
    int loss
    double dropout                  # probability of zeroing a layer's output unit


cdef struct Model:
    int cell
    bint relu
    int head
    int loss
    intp_t n_layers
    intp_t n_dirs
    intp_t n_features
    intp_t n_outputs
    intp_t n_timesteps              # steps of X (and of per-step targets)
    intp_t x_stride                 # elements between consecutive samples of X
    # Steps per sequence whose activations are kept for the backward pass
    # and the head: in training, the `truncate` steps backpropagated (BPTT
    # truncated to them when fewer than the sequence); in predict,
    # BLOCK_STEPS; every step in a bidirectional network. The per-step head
    # cuts each sequence into windows of this many steps from its first.
    intp_t window
    bint packs                      # float32 in a module with small_gemm.h
    double dropout
    uint64_t seed                   # dropout masks hash (seed, sample, step, unit)
    intp_t hidden[MAX_LAYERS]
    intp_t params[MAX_BLOCKS]       # offset of weight_ih of block (layer, direction)
    intp_t head_params              # offset of weight_out
    intp_t n_params
    intp_t state_size               # per row: every block's carried h (and c)


cdef struct Data:
    # The samples as the kernels read them. A struct cannot hold fused
    # types, so the floating arrays are untyped here; the kernels cast them
    # to their own dtype, which the entry points checked.
    const void* X                   # (n_samples, n_timesteps, n_features), padded
    const intp_t* lengths           # valid steps of each sample
    const intp_t* labels            # cross-entropy: the class index of each
                                    # sample, or of each step (n_samples, n_timesteps)
    const void* targets             # squared error: (n_samples, n_outputs) values,
                                    # or (n_samples, n_timesteps, n_outputs)
    const void* sample_weight       # NULL: every weight is one


cdef struct Chunk:
    # The rows of a chunk over one segment of time: row i is sample
    # samples[i] over its steps offset[i] + 1 .. offset[i] + length[i];
    # lengths do not increase with i.
    const intp_t* samples
    intp_t n_rows
    intp_t length[MAX_CHUNK_ROWS]
    intp_t offset[MAX_CHUNK_ROWS]


cdef struct Layout:
    # Offsets (in elements) of one chunk's buffers in its workspace; per
    # block b = layer * n_dirs + direction where indexed.
    intp_t n_steps1                 # S + 1
    intp_t state_h[MAX_BLOCKS]      # (rows, H) hidden state carried between segments
    intp_t state_c[MAX_BLOCKS]      # (rows, H) LSTM cell state carried
    intp_t head_in                  # (rows, n_dirs H_last) what weight_out reads,
                                    # pooled across segments by mean/max heads
                                    # (none for the per-step head)
    intp_t inp[MAX_BLOCKS]
    intp_t gates[MAX_BLOCKS]
    intp_t hs[MAX_BLOCKS]
    intp_t aux[MAX_BLOCKS]
    intp_t d_gates[MAX_BLOCKS]
    intp_t d_gh[MAX_BLOCKS]         # GRU: gradient of the hidden-side pre-activations
    intp_t d_out[MAX_BLOCKS]        # gradient arriving at hs at every step
    intp_t d_inp[MAX_BLOCKS]        # gradient into inp (layers > 0)
    # Weights packed for small_sgemm (small_gemm.h's cbptt_pack):
    intp_t packed_ih_t[MAX_BLOCKS]  # weight_ih^T, (D_in, G H)
    intp_t packed_hh_t[MAX_BLOCKS]  # weight_hh^T, (H, G H)
    intp_t packed_hh[MAX_BLOCKS]    # weight_hh, (G H, H), for the backward pass
    intp_t grad_ih_t                # (D_in, G H) weight_ih's gradient, transposed
    intp_t dh                       # (rows, H_max) running d loss / d h
    intp_t dc                       # (rows, H_max) running d loss / d c (LSTM)
    intp_t gh                       # (rows, 3 H_max) W_hh h_prev of one step (GRU)
    intp_t d_head_in                # (rows, n_dirs H_last)
    # Per-step head of a bidirectional network: the top layer's outputs in
    # forward time order, [h_forward, h_reverse] (rows, S + 1, 2 H_last),
    # and their gradient.
    intp_t seq_in
    intp_t d_seq_in
    intp_t out                      # (rows, n_outputs), per-step head (rows, S + 1,
                                    # n_outputs): the output, then d loss / d output
    intp_t end


cdef inline intp_t _input_size(const Model* m, intp_t k) noexcept nogil:
    return m.n_features if k == 0 else m.n_dirs * m.hidden[k - 1]


cdef inline intp_t _head_size(const Model* m) noexcept nogil:
    """Features weight_out reads: the top layer's units per direction."""
    return m.n_dirs * m.hidden[m.n_layers - 1]


cdef inline bint _pooled(const Model* m) noexcept nogil:
    """Whether the head pools the valid steps (mean or max)."""
    return m.head == HEAD_MEAN or m.head == HEAD_MAX


cdef inline bint _reads_every_step(const Model* m) noexcept nogil:
    """Whether the head's gradient enters the core at every valid step."""
    return m.head != HEAD_LAST


cdef inline bint _small(const Model* m, intp_t H) noexcept nogil:
    """Whether all products of a layer of H units use small_sgemm; where the
    model packs (Model.packs), the per-step products do at any H."""
    return m.packs and H <= SMALL_H_MAX


cdef inline bint _transposed_grad_ih(const Model* m, intp_t k) noexcept nogil:
    """Whether layer k forms weight_ih's gradient transposed, (D_in, G H), in
    small_sgemm: its rows fill the vector lanes, and with fewer inputs than
    gate units the transpose has the longer rows."""
    return _small(m, m.hidden[k]) and _input_size(m, k) < n_gates(m.cell) * m.hidden[k]


cdef Layout _layout(intp_t n_rows, intp_t n_steps, const Model* m,
                    bint training) noexcept nogil:
    """Where the buffers of a chunk of n_rows rows and a segment of n_steps
    steps lie; without training, only the forward pass's (the gradient
    buffers get size 0). The carried states, the head's input and the weights
    packed for the forward pass come first: at the same place for every
    n_steps, so that they outlive the segments of a chunk."""
    cdef Layout w
    cdef intp_t k, d, b, H, G = n_gates(m.cell), H_max = 0, grad_t_max = 0, pos = 0
    cdef intp_t plane = n_rows * (n_steps + 1)     # rows x steps
    cdef intp_t grad_plane = plane if training else 0
    cdef intp_t top = m.n_layers - 1
    w.n_steps1 = n_steps + 1
    for b in range(m.n_layers * m.n_dirs):
        H = m.hidden[b // m.n_dirs]
        w.state_h[b] = pos; pos += n_rows * H
        w.state_c[b] = pos; pos += n_rows * H if m.cell == LSTM else 0
    w.head_in = pos; pos += n_rows * _head_size(m) if m.head != HEAD_SEQUENCE else 0
    for b in range(m.n_layers * m.n_dirs):
        k = b // m.n_dirs
        H = m.hidden[k]
        w.packed_ih_t[b] = pos
        pos += packed_size(_input_size(m, k), G * H) if _small(m, H) else 0
        w.packed_hh_t[b] = pos; pos += packed_size(H, G * H) if m.packs else 0
    for k in range(m.n_layers):
        H = m.hidden[k]
        H_max = H if H > H_max else H_max
        if training and _transposed_grad_ih(m, k):
            grad_t_max = max(grad_t_max, _input_size(m, k) * G * H)
        for d in range(m.n_dirs):
            b = k * m.n_dirs + d
            w.inp[b] = pos; pos += plane * _input_size(m, k)
            w.gates[b] = pos; pos += plane * G * H
            # The Elman cell writes h over its pre-activation, in place.
            w.hs[b] = w.gates[b] if m.cell == RNN else pos
            pos += plane * H if m.cell != RNN else 0
            w.aux[b] = pos; pos += plane * H if m.cell != RNN else 0
            w.d_gates[b] = pos; pos += grad_plane * G * H
            w.d_gh[b] = pos; pos += grad_plane * G * H if m.cell == GRU else 0
            w.d_out[b] = pos
            pos += grad_plane * H if k < top or _reads_every_step(m) else 0
            w.d_inp[b] = pos; pos += grad_plane * _input_size(m, k) if k > 0 else 0
            w.packed_hh[b] = pos
            pos += packed_size(G * H, H) if m.packs and training else 0
    w.grad_ih_t = pos; pos += grad_t_max
    w.dh = pos; pos += n_rows * H_max if training else 0
    w.dc = pos; pos += n_rows * H_max if training else 0
    w.gh = pos; pos += n_rows * 3 * H_max
    if m.head == HEAD_SEQUENCE:
        w.d_head_in = pos
        w.seq_in = pos; pos += plane * _head_size(m) if m.n_dirs == 2 else 0
        w.d_seq_in = pos; pos += grad_plane * _head_size(m) if m.n_dirs == 2 else 0
        w.out = pos; pos += plane * m.n_outputs
    else:
        w.d_head_in = pos; pos += n_rows * _head_size(m) if training else 0
        w.seq_in = w.d_seq_in = pos
        w.out = pos; pos += n_rows * m.n_outputs
    w.end = pos
    return w


cdef Model _model(const Spec* spec, intp_t[::1] hidden, intp_t n_timesteps,
                  intp_t window, uint64_t seed, bint float32) except *:
    """The network's description; ``window`` as in Model.window: the steps
    backpropagated in training, BLOCK_STEPS in predict."""
    cdef Model m
    cdef intp_t k, d, pos = 0, G = n_gates(spec.cell), D_in
    if not 1 <= hidden.shape[0] <= MAX_LAYERS:
        raise ValueError(f"between 1 and {MAX_LAYERS} layers are supported")
    m.cell = spec.cell
    m.relu = spec.relu
    m.head = spec.head
    m.loss = spec.loss
    m.n_layers = hidden.shape[0]
    m.n_dirs = spec.n_dirs
    m.n_features = spec.n_features
    m.n_outputs = spec.n_outputs
    m.n_timesteps = n_timesteps
    m.x_stride = n_timesteps * spec.n_features
    m.window = n_timesteps if spec.n_dirs == 2 else min(window, n_timesteps)
    m.packs = float32 and SMALL_SGEMM
    m.dropout = spec.dropout
    m.seed = seed
    m.state_size = 0
    for k in range(m.n_layers):
        m.hidden[k] = hidden[k]
        D_in = _input_size(&m, k)
        for d in range(m.n_dirs):
            m.params[k * m.n_dirs + d] = pos
            pos += G * hidden[k] * (D_in + hidden[k] + 2)
            m.state_size += hidden[k] * (2 if m.cell == LSTM else 1)
    m.head_params = pos
    m.n_params = pos + m.n_outputs * (_head_size(&m) + 1)
    return m
