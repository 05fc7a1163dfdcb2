"""Plot the time of one training epoch against the hidden size H.

Why: one configuration of ``bench.py`` gives one point, but how cbptt
compares to PyTorch and to plain NumPy depends on H: at small H the per-step
overhead dominates, at large H the GEMMs do. This script regenerates the
performance plot of the docs: the "medium" config of ``bench.py`` with H
varied, for cbptt, PyTorch and NumPy (Elman cell only) side by side in one
process, timed alternating with the contestants and helpers of ``bench.py``.
It prints a markdown table and writes the plot and, next to it, a CSV of the
numbers behind it (same stem, ``.csv``).

Needs the ``bench`` extra plus matplotlib (``pip install -e .[bench]``).
Run from the repository root::

    python benchmarks/plot_hidden.py            # writes docs/_static/time_vs_hidden.png
    python benchmarks/plot_hidden.py --quick --hidden 16,32 --cells rnn --out /tmp/t.png
"""

import argparse
import csv
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    _BLAS, CONFIGS, CONTESTANTS, N_GATES, SETTLE_SECONDS, cbptt_build, cpu_model, fmt,
    make_data, paired_ratio, time_alternating, torch,
)

import cbptt  # noqa: E402

BASE_CONFIG = "medium"
DEFAULT_HIDDEN = (16, 32, 64, 128, 256, 512)
DEFAULT_OUT = "docs/_static/time_vs_hidden.png"
MARKERS = {"cbptt": "o", "torch": "s", "numpy": "^"}


def blas_lines():
    """Loaded OpenBLAS libraries (NumPy's lies in numpy.libs) and their kernel
    (core type), as printed lines."""
    lines = [f"OpenBLAS: {Path(lib['filepath']).parent.name}/{Path(lib['filepath']).name} "
             f"{lib['version']}, "
             f"kernels {lib['architecture']}"
             for lib in _BLAS.info() if lib["internal_api"] == "openblas"]
    if not lines:
        lines.append("OpenBLAS: not loaded")
    lines.append(f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    return lines


def print_header(args, base):
    torch_version = torch.__version__ if torch is not None else "not installed (skipped)"
    dims = " ".join(f"{k}={v}" for k, v in base.items() if k != "H")
    print(f"# time per epoch vs hidden size ({'quick' if args.quick else 'full'}), "
          f"{args.dtype}, {BASE_CONFIG} config {dims}, H in {args.hidden}")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"threads: {args.threads}; versions: cbptt {cbptt.__version__} "
          f"({cbptt_build()}), numpy {np.__version__}, torch {torch_version}")
    for line in blas_lines():
        print(line)
    print(f"{args.repeats} timed epochs per contestant after 1 warm-up, alternating, "
          f"{SETTLE_SECONDS} s pause before each; ratios are medians of per-round ratios")


def run_point(cfg, cell, args):
    """Medians and paired ratios of the contestants for one cell and config."""
    X, y = make_data(cfg, args.dtype)
    epochs = {c: make(cfg, X, y, args.threads, cell) for c, make in CONTESTANTS.items()}
    epochs = {c: epoch for c, epoch in epochs.items() if epoch is not None}
    times = time_alternating(epochs, args.repeats)
    row = {"cell": cell, "H": cfg["H"],
           "median": {c: statistics.median(ts) for c, ts in times.items()},
           "ratio": {o: paired_ratio(times["cbptt"], times[o])
                     for o in ("torch", "numpy") if o in times}}
    medians = ", ".join(f"{c} {m:.3f} s" for c, m in row["median"].items())
    print(f"  {cell} H={cfg['H']}: {medians} (load {os.getloadavg()[0]:.2f})")
    return row


def print_table(rows):
    print("\n| cell | H | cbptt s/epoch | torch s/epoch | numpy s/epoch | cbptt/torch "
          "| cbptt/numpy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        m, q = r["median"], r["ratio"]
        print(f"| {r['cell']} | {r['H']} | {m['cbptt']:.3f} "
              f"| {fmt(m.get('torch'), '.3f')} | {fmt(m.get('numpy'), '.3f')} "
              f"| {fmt(q.get('torch'), '.2f')} | {fmt(q.get('numpy'), '.2f')} |")


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "H", "cbptt_s_per_epoch", "torch_s_per_epoch",
                         "numpy_s_per_epoch", "cbptt_over_torch", "cbptt_over_numpy"])
        for r in rows:
            m, q = r["median"], r["ratio"]
            writer.writerow([r["cell"], r["H"], f"{m['cbptt']:.6f}",
                             fmt(m.get("torch"), ".6f", ""), fmt(m.get("numpy"), ".6f", ""),
                             fmt(q.get("torch"), ".4f", ""), fmt(q.get("numpy"), ".4f", "")])


def plot(plt, rows, args, base, path):
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 4), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        cell_rows = [r for r in rows if r["cell"] == cell]
        for name in CONTESTANTS:
            points = [(r["H"], r["median"][name]) for r in cell_rows if name in r["median"]]
            if points:
                hs, secs = zip(*points)
                ax.plot(hs, secs, marker=MARKERS.get(name, "o"), label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(args.hidden)
        ax.set_xticklabels([str(h) for h in args.hidden])
        ax.xaxis.set_minor_locator(plt.NullLocator())  # only the measured H as ticks
        ax.set_xlabel("hidden size H")
        ax.set_ylabel("seconds per epoch")
        ax.set_title(cell)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    dims = " ".join(f"{k}={v}" for k, v in base.items() if k != "H")
    fig.suptitle(f"One training epoch: {dims}, {args.dtype}, {args.threads} threads"
                 f"{' (quick)' if args.quick else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", default=",".join(map(str, DEFAULT_HIDDEN)),
                        help="comma-separated hidden sizes (default %(default)s)")
    parser.add_argument("--cells", default="rnn,gru,lstm",
                        help="comma-separated subset of rnn,gru,lstm (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of every contestant (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed epochs per contestant and point (default 3, quick 2)")
    parser.add_argument("--quick", action="store_true",
                        help="N/8 samples and 2 repeats unless --repeats is given")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="image path; the CSV goes next to it (default %(default)s)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        args.hidden = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        parser.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if any(h < 1 for h in args.hidden):
        parser.error("hidden sizes must be positive")
    args.cells = args.cells.split(",")
    if set(args.cells) - set(N_GATES):
        parser.error(f"unknown cells {sorted(set(args.cells) - set(N_GATES))}")
    return args


def main():
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    args = parse_args()
    try:  # before the long timing run, so that a missing matplotlib fails at once
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_hidden.py needs matplotlib: pip install matplotlib")
    base = dict(CONFIGS[BASE_CONFIG])
    if args.quick:
        base["N"] //= 8
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if torch is None:
        print("PyTorch is not installed: the torch contestant is skipped.")
    print_header(args, base)
    rows = [run_point({**base, "H": h}, cell, args)
            for cell in args.cells for h in args.hidden]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print_table(rows)
    csv_path = out.with_suffix(".csv")
    write_csv(rows, csv_path)
    plot(plt, rows, args, base, out)
    print(f"\nwrote {out} and {csv_path}")


if __name__ == "__main__":
    main()
