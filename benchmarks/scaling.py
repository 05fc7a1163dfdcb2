"""How cbptt's cost grows: with threads, sequence length, samples, and in predict.

Why: bench.py compares contestants on fixed configurations; this script checks
the shape of cbptt's own costs (bench.py's model, solver and configurations),
each as a ratio of runs alternated in one process (medians of per-round
ratios, so machine noise cancels):

* ``threads``: epoch time with 1 thread / with 2, medium and large configs;
* ``length``: epoch time at T = 1024 / at T = 64 (ideal 16), and at 4N / N
  (ideal 4), on the medium configuration with fewer samples;
* ``predict``: fit time per sample (one epoch) / predict time per sample,
  beside the ratio of their matrix-product FLOPs, which bounds it;
* ``memory``: peak memory of one epoch above the memory before it (the data
  already loaded), for T = 256 .. 4096, with ``bptt_truncate=16`` and with
  full BPTT; one fresh subprocess per measurement (Linux /proc/self/status).

Run from the repository root::

    python benchmarks/scaling.py              # everything
    python benchmarks/scaling.py --quick      # fewer repeats and samples
    python benchmarks/scaling.py --only threads,memory
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    CONFIGS, cbptt_classifier, cbptt_epoch, make_data, paired_ratio, peak_mib,
    time_alternating,
)

CELLS = ("rnn", "gru", "lstm")
MEMORY_STEPS = (256, 1024, 4096)
MEMORY_CONFIG = dict(N=256, D=32, H=128, C=10, B=64)
TRUNCATE = 16


def threads(args):
    print("\n## 2 threads vs 1: epoch time with 1 thread / with 2 (ideal 2)")
    print("| config | cell | 1 thread s | 2 threads s | speed-up |\n|---|---|---|---|---|")
    for name in ("medium", "large"):
        cfg = dict(CONFIGS[name], N=CONFIGS[name]["N"] // args.shrink)
        X, y = make_data(cfg, np.float32)
        for cell in CELLS:
            runs = {k: cbptt_epoch(cfg, X, y, k, cell) for k in (1, 2)}
            t = time_alternating(runs, args.repeats)
            print(f"| {name} | {cell} | {statistics.median(t[1]):.3f} | "
                  f"{statistics.median(t[2]):.3f} | {paired_ratio(t[1], t[2]):.2f}x |")


def length(args):
    base = dict(CONFIGS["medium"], N=512 // args.shrink * 2)
    print(f"\n## Epoch time vs T and N (medium, N={base['N']} at T=64)")
    print("| cell | T=1024 / T=64 (ideal 16) | 4N / N (ideal 4) |\n|---|---|---|")
    for cell in CELLS:
        cfgs = {"short": base, "long": dict(base, T=1024),
                "many": dict(base, N=4 * base["N"])}
        runs = {}
        for key, cfg in cfgs.items():
            X, y = make_data(cfg, np.float32)
            runs[key] = cbptt_epoch(cfg, X, y, 2, cell)
        t = time_alternating(runs, args.repeats)
        print(f"| {cell} | {paired_ratio(t['long'], t['short']):.1f} | "
              f"{paired_ratio(t['many'], t['short']):.2f} |")


def fit_to_predict_flops(cfg):
    """Matrix-product FLOPs of training over those of predicting, per sample.

    Per step and gate row, the forward pass multiplies by W_ih and W_hh
    (inner sizes D and H); the backward pass forms the gradient into h_{s-1}
    (H) and the gradients of W_hh and W_ih (H and D), and never the gradient
    into the input, which nothing uses. The head and the elementwise work
    are left out: they are a few percent at these sizes. (bench.epoch_flops
    counts the backward pass as twice the forward, the usual convention for
    a GFLOP/s figure; this counts the products the kernels compute.)
    """
    D, H = cfg["D"], cfg["H"]
    return 1 + (2 * H + D) / (H + D)


def predict(args):
    print("\n## Predict vs fit: fit seconds per sample (one epoch) / predict seconds "
          "per sample; the ratio of their matrix-product FLOPs bounds it unless "
          "predicting runs at a higher FLOP rate than training")
    print("| config | cell | fit s/epoch | predict s | ratio | FLOP ratio |\n"
          "|---|---|---|---|---|---|")
    for name in ("small", "medium", "large"):
        cfg = dict(CONFIGS[name], N=CONFIGS[name]["N"] // args.shrink)
        X, y = make_data(cfg, np.float32)
        for cell in CELLS:
            clf = cbptt_classifier(cfg, 2, cell)
            classes = np.arange(cfg["C"])

            def fit():
                clf.partial_fit(X, y, classes=classes)
            fit()
            t = time_alternating({"fit": fit, "predict": lambda: clf.predict_proba(X)},
                                 args.repeats)
            print(f"| {name} | {cell} | {statistics.median(t['fit']):.3f} | "
                  f"{statistics.median(t['predict']):.3f} | "
                  f"{paired_ratio(t['fit'], t['predict']):.1f} | "
                  f"{fit_to_predict_flops(cfg):.2f} |")


def measure_memory(n_steps, truncate, cell):
    """Peak memory of one (first) epoch, in MiB."""
    cfg = dict(MEMORY_CONFIG, T=n_steps)
    X, y = make_data(cfg, np.float32)
    return peak_mib(cbptt_epoch(cfg, X, y, 2, cell, bptt_truncate=truncate))


def memory(args):
    print(f"\n## Peak memory of one epoch above the data already loaded (MiB); "
          f"N={MEMORY_CONFIG['N']}, H={MEMORY_CONFIG['H']}, D={MEMORY_CONFIG['D']}")
    steps = MEMORY_STEPS[:2] if args.quick else MEMORY_STEPS
    header = " | ".join(f"T={T}" for T in steps)
    print(f"| cell | BPTT | {header} |\n|---|---|" + "---|" * len(steps))
    for cell in CELLS:
        for truncate in (TRUNCATE, None):
            peaks = []
            for T in steps:
                command = [sys.executable, __file__, "--measure-memory",
                           json.dumps([T, truncate, cell])]
                out = subprocess.run(command, capture_output=True, text=True)
                peaks.append(out.stdout.strip() or "failed")
            label = f"truncated to {truncate}" if truncate else "full"
            print(f"| {cell} | {label} | " + " | ".join(peaks) + " |")
    X_mib = [MEMORY_CONFIG["N"] * T * MEMORY_CONFIG["D"] * 4 / 2**20 for T in steps]
    print("(the data itself: " + ", ".join(f"{m:.0f}" for m in X_mib) + " MiB)")


SECTIONS = {"threads": threads, "length": length, "predict": predict, "memory": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.measure_memory:
        print(f"{measure_memory(*json.loads(args.measure_memory)):.1f}")
        return
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.shrink = 8 if args.quick else 1
    print(f"# cbptt scaling ({'quick' if args.quick else 'full'}), float32, "
          f"{args.repeats} timed runs each, alternating; {time.strftime('%Y-%m-%d')}")
    for name in args.only.split(","):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
