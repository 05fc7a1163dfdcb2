"""Time one training epoch of cbptt against PyTorch and a plain NumPy BPTT.

Why: cbptt exists to train RNNs fast on the CPU, so its speed must be
measured, not asserted in tests. This script trains the same network (one
layer of tanh Elman, LSTM or GRU cells, many-to-one, Adam, lr 1e-3) on the
same synthetic data with up to three contestants in one process:

* ``cbptt``: ``RNNClassifier.partial_fit`` (one epoch, input validation included);
* ``torch``: ``torch.nn.RNN/LSTM/GRU`` + ``torch.nn.Linear`` with
  ``torch.optim.Adam`` (skipped when PyTorch is not installed);
* ``numpy``: ``benchmarks/numpy_rnn.NumpyElman``, vectorized NumPy BPTT
  (Elman cell, last-state head only).

``--head`` picks what the network is scored on, the same for cbptt and
PyTorch: the last state with cross-entropy (``last``, the default), the mean
or max of the outputs over the steps with cross-entropy (``mean``, ``max``:
``RNNClassifier(pooling=...)`` against ``out.mean(1)``/``out.amax(1)``), the
last state with squared error on C real targets (``regressor``:
``RNNRegressor`` against ``torch.nn.MSELoss``), or a class at every step with
truncated BPTT over windows of ``--window`` steps (``steps``:
``RNNStepClassifier(bptt_truncate=window)`` against PyTorch running each
window from the previous one's detached state, one optimizer step per
window).

Runs alternate (cbptt, torch, numpy, cbptt, ...) after one untimed warm-up
epoch each, so that a noisy machine slows all contestants alike. It reports
the median seconds per epoch, the ratios cbptt/other as the median of the
per-round ratios, GFLOP/s (GEMM work only) as a share of the sgemm rate
(NumPy matmul, 2048x2048, timed in the same alternation, so both rates see the
same machine load), and the peak memory of one epoch, measured in
a fresh subprocess per contestant (Linux: /proc/self/status, VmHWM). It
ends with a markdown table for the README.

Run from the repository root::

    python benchmarks/bench.py                 # full: reference configs
    python benchmarks/bench.py --quick         # N/8 and 3 repeats, about a minute
    python benchmarks/bench.py --configs small,medium --cells lstm --threads 2
    python benchmarks/bench.py --head mean     # pooled head, same contestants
"""

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numpy_rnn import NumpyElman  # noqa: E402

import cbptt  # noqa: E402
from cbptt import RNNClassifier, RNNRegressor, RNNStepClassifier  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

CONFIGS = {
    "small": dict(N=4096, T=32, D=8, H=32, C=4, B=64),
    "medium": dict(N=4096, T=64, D=32, H=128, C=10, B=64),
    "large": dict(N=1024, T=128, D=64, H=512, C=10, B=128),
}
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
HEADS = ("last", "mean", "max", "regressor", "steps")
WINDOW = 16     # steps per truncated-BPTT window of the "steps" head (--window)
LEARNING_RATE = 1e-3
_BLAS = ThreadpoolController()


# -- contestants: each returns a function that trains one epoch --------------
def cbptt_classifier(cfg, threads, cell, head="last", **params):
    """The cbptt estimator of the benchmark: an RNNClassifier reading the
    ``head`` pooling, an RNNRegressor, or an RNNStepClassifier."""
    if head == "regressor":
        estimator, params = RNNRegressor, {"pooling": "last", **params}
    elif head == "steps":
        estimator, params = RNNStepClassifier, {"bptt_truncate": WINDOW, **params}
    else:
        estimator, params = RNNClassifier, {"pooling": head, **params}
    return estimator(
        cell=cell, hidden_layer_sizes=(cfg["H"],), batch_size=cfg["B"], solver="adam",
        learning_rate_init=LEARNING_RATE, alpha=0.0, clip_norm=None, shuffle=True,
        random_state=0, n_threads=threads, **params,
    )


def cbptt_epoch(cfg, X, y, threads, cell, head="last", **params):
    model = cbptt_classifier(cfg, threads, cell, head, **params)
    if head == "regressor":
        return lambda: model.partial_fit(X, y)
    classes = np.arange(cfg["C"])
    return lambda: model.partial_fit(X, y, classes=classes)


def torch_epoch(cfg, X, y, threads, cell, head="last"):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    dtype = getattr(torch, X.dtype.name)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = module(cfg["D"], cfg["H"], batch_first=True).to(dtype)
    linear = torch.nn.Linear(cfg["H"], cfg["C"]).to(dtype)
    optimizer = torch.optim.Adam([*rnn.parameters(), *linear.parameters()],
                                 lr=LEARNING_RATE)
    loss_fn = torch.nn.MSELoss() if head == "regressor" else torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)

    def features(out, h_n):
        if head == "mean":
            return out.mean(1)
        if head == "max":
            return out.amax(1)
        return (h_n[0] if cell == "lstm" else h_n)[0]   # LSTM returns (h_n, c_n)

    def epoch():
        for batch in torch.randperm(len(X), generator=generator).split(cfg["B"]):
            optimizer.zero_grad()
            out, h_n = rnn(X_t[batch])
            loss_fn(linear(features(out, h_n)), y_t[batch]).backward()
            optimizer.step()

    def windowed_epoch():
        # Truncated BPTT: each window starts from the previous one's state,
        # detached; one optimizer step per window.
        for batch in torch.randperm(len(X), generator=generator).split(cfg["B"]):
            state = None
            for start in range(0, cfg["T"], WINDOW):
                optimizer.zero_grad()
                out, state = rnn(X_t[batch, start:start + WINDOW], state)
                state = (tuple(s.detach() for s in state) if cell == "lstm"
                         else state.detach())
                logits = linear(out)
                loss_fn(logits.reshape(-1, cfg["C"]),
                        y_t[batch, start:start + WINDOW].reshape(-1)).backward()
                optimizer.step()
    return windowed_epoch if head == "steps" else epoch


def numpy_epoch(cfg, X, y, threads, cell, head="last"):
    if cell != "rnn" or head != "last":
        return None  # the NumPy baseline: Elman cell, last state, cross-entropy
    model = NumpyElman(cfg["D"], cfg["H"], cfg["C"], dtype=X.dtype, seed=0,
                       learning_rate=LEARNING_RATE)
    rng = np.random.default_rng(0)

    def epoch():
        with _BLAS.limit(limits=threads, user_api="blas"):
            model.epoch(X, y, cfg["B"], rng)
    return epoch


CONTESTANTS = {"cbptt": cbptt_epoch, "torch": torch_epoch, "numpy": numpy_epoch}
if torch is None:
    del CONTESTANTS["torch"]


# -- measurements --------------------------------------------------------------
def make_data(cfg, dtype, head="last", seed=0):
    """X and y: class indices, or (N, C) real targets for the regressor."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((cfg["N"], cfg["T"], cfg["D"]), dtype=dtype)
    if head == "regressor":
        return X, rng.standard_normal((cfg["N"], cfg["C"]), dtype=dtype)
    if head == "steps":
        return X, rng.integers(0, cfg["C"], size=(cfg["N"], cfg["T"]))
    return X, rng.integers(0, cfg["C"], size=cfg["N"])


def epoch_flops(cfg, cell, head="last"):
    """GEMM FLOPs of one epoch of BPTT; backward counts twice the forward."""
    N, T, D, H, C = (cfg[k] for k in "NTDHC")
    outputs = N * T if head == "steps" else N     # rows the output layer maps
    return 3 * (2 * N * T * N_GATES[cell] * H * (D + H) + 2 * outputs * H * C)


# Pause before each timed run: the thread pools of the previous contestant
# (PyTorch's OpenMP, OpenBLAS) spin for a while after their work ends and
# would take cores from whoever runs next.
SETTLE_SECONDS = 0.5


def time_alternating(epochs, repeats):
    """{name: [seconds of each run]}, one untimed warm-up each, runs interleaved."""
    for epoch in epochs.values():
        epoch()
    times = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, epoch in epochs.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            epoch()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(a, b):
    """Median of the per-round ratios a_i / b_i of alternating runs."""
    return statistics.median(x / y for x, y in zip(a, b))


GEMM_SIZE = 2048


def gemm_run(dtype, threads, n=GEMM_SIZE):
    """One n x n matmul of NumPy's BLAS with `threads` threads: the machine's
    practical FLOP rate, timed alongside the contestants."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=dtype) for _ in range(2))

    def run():
        with _BLAS.limit(limits=threads, user_api="blas"):
            a @ b
    return run


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_mib(run):
    """Peak RSS while ``run()`` runs above the RSS before it, in MiB (this process)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the RSS high-water mark (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def measure_memory(name, cfg, dtype, threads, cell, head):
    """Peak memory of one (first) epoch of contestant ``name``, in MiB."""
    X, y = make_data(cfg, dtype, head)
    return peak_mib(CONTESTANTS[name](cfg, X, y, threads, cell, head))


def memory_in_subprocess(name, config, cell, args):
    command = [sys.executable, __file__, "--measure-memory", name, "--configs", config,
               "--cells", cell, "--threads", str(args.threads), "--dtype", args.dtype,
               "--head", args.head, "--window", str(args.window)]
    if args.quick:
        command.append("--quick")
    out = subprocess.run(command, capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        error = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  memory of {name} not measured (exit {out.returncode}): {error}",
              file=sys.stderr)
        return None


# -- report ----------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cbptt_build():
    """The "debug checks" line of cbptt.show_config(): a debug build is no benchmark."""
    if not hasattr(cbptt, "show_config"):
        return "unknown"
    text = io.StringIO()
    cbptt.show_config(file=text)
    lines = [line.split(":", 1)[1].strip() for line in text.getvalue().splitlines()
             if line.strip().startswith("debug checks:")]
    return f"debug checks {lines[0] if lines else 'unknown'}"


def print_header(args):
    try:
        from cbptt._parallel import effective_n_threads
        cbptt_threads = effective_n_threads(args.threads)
    except ImportError:
        cbptt_threads = f"n_threads={args.threads}"
    torch_version = torch.__version__ if torch is not None else "not installed (skipped)"
    print(f"# cbptt benchmark ({'quick' if args.quick else 'full'}), {args.dtype}, "
          f"head {args.head}")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"threads: {args.threads} (cbptt OpenMP: {cbptt_threads}, "
          f"torch.set_num_threads, NumPy BLAS via threadpoolctl)")
    print(f"versions: cbptt {cbptt.__version__} ({cbptt_build()}), numpy {np.__version__}, "
          f"torch {torch_version}, python {platform.python_version()}")
    for lib in _BLAS.info():
        if lib["internal_api"] == "openblas":
            print(f"OpenBLAS: {Path(lib['filepath']).name} {lib['version']}, "
                  f"kernels {lib['architecture']}")
    print(f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print(f"{args.repeats} timed epochs per contestant after 1 warm-up, alternating "
          f"with a {GEMM_SIZE}^2 NumPy matmul ({args.threads} BLAS threads); ratios and "
          "'% gemm' are medians of per-round ratios; memory: peak RSS above the RSS "
          "before the first epoch, one fresh subprocess per contestant")


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def run_config(name, cfg, cell, args):
    X, y = make_data(cfg, args.dtype, args.head)
    epochs = {c: make(cfg, X, y, args.threads, cell, args.head)
              for c, make in CONTESTANTS.items()}
    epochs = {c: epoch for c, epoch in epochs.items() if epoch is not None}
    times = time_alternating({**epochs, "gemm": gemm_run(args.dtype, args.threads)},
                             args.repeats)
    gemm_times = times.pop("gemm")
    memory = ({c: memory_in_subprocess(c, name, cell, args) for c in epochs}
              if args.memory else {})
    gflop = epoch_flops(cfg, cell, args.head) / 1e9
    gemm_gflop = 2 * GEMM_SIZE**3 / 1e9
    dims = " ".join(f"{k}={v}" for k, v in cfg.items())
    print(f"\n## {name} {cell}: {dims}, {gflop:.2f} GFLOP/epoch; gemm "
          f"{gemm_gflop / statistics.median(gemm_times):.1f} GFLOP/s, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  {'':6} {'median s':>9} {'min s':>8} {'max s':>8} {'GFLOP/s':>8} "
          f"{'% gemm':>7} {'peak MiB':>9}")
    row = {"config": name, "cell": cell, "median": {}, "share": {}, "ratio": {}}
    for c, ts in times.items():
        median = row["median"][c] = statistics.median(ts)
        share = row["share"][c] = gflop / gemm_gflop * paired_ratio(gemm_times, ts)
        print(f"  {c:6} {median:9.3f} {min(ts):8.3f} {max(ts):8.3f} {gflop / median:8.1f} "
              f"{100 * share:6.1f}% {fmt(memory.get(c), '9.1f', '        -')}")
    for other in ("torch", "numpy"):
        if other in times:
            row["ratio"][other] = paired_ratio(times["cbptt"], times[other])
            print(f"  cbptt/{other}: {row['ratio'][other]:.3f}")
    row["gflops"] = gflop / row["median"]["cbptt"]
    return row


def print_table(rows):
    print("\n| config | cell | cbptt s/epoch | torch s/epoch | numpy s/epoch | cbptt/torch "
          "| cbptt/numpy | cbptt GFLOP/s (% of sgemm) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, q = r["median"], r["ratio"]
        print(f"| {r['config']} | {r['cell']} | {m['cbptt']:.3f} "
              f"| {fmt(m.get('torch'), '.3f')} | {fmt(m.get('numpy'), '.3f')} "
              f"| {fmt(q.get('torch'), '.3f')} | {fmt(q.get('numpy'), '.3f')} "
              f"| {r['gflops']:.1f} ({100 * r['share']['cbptt']:.0f}%) |")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N/8 samples and 3 repeats unless --repeats is given")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--cells", default="rnn,lstm,gru",
                        help="comma-separated subset of rnn,lstm,gru")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed epochs per contestant (default 7, quick 3)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--head", default="last", choices=HEADS,
                        help="what the network is scored on (see the module docstring)")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help="steps per truncated-BPTT window of --head steps")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the memory subprocesses")
    parser.add_argument("--measure-memory", metavar="CONTESTANT",
                        choices=list(CONTESTANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    args.configs = args.configs.split(",")
    args.cells = args.cells.split(",")
    if set(args.cells) - set(N_GATES):
        parser.error(f"unknown cells {sorted(set(args.cells) - set(N_GATES))}")
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    return args


def main():
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    args = parse_args()
    global WINDOW
    WINDOW = args.window
    configs = {name: dict(CONFIGS[name]) for name in args.configs}
    if args.quick:
        for cfg in configs.values():
            cfg["N"] //= 8
    if args.measure_memory:
        (cfg,) = configs.values()
        mib = measure_memory(args.measure_memory, cfg, args.dtype, args.threads,
                             args.cells[0], args.head)
        print(json.dumps(mib))
        return
    if torch is None:
        print("PyTorch is not installed: the torch contestant is skipped.")
    print_header(args)
    rows = [run_config(name, cfg, cell, args)
            for name, cfg in configs.items() for cell in args.cells]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print_table(rows)


if __name__ == "__main__":
    main()
