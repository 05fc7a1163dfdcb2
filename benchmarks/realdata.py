"""Accuracy on real data: cbptt's defaults against a tuned setting, the same
recipe in PyTorch and a non-recurrent reference, on public UCR/UEA datasets.

Why: speed is worth nothing if the defaults do not train well on the data
users bring. This script fits each model on the official train split of
datasets that the ``aeon`` package bundles (offline), scores the official
test split, and prints the mean and spread of the accuracy over seeds with
the fit time:

* ``defaults``: ``RNNClassifier(random_state=seed)``, nothing else set;
* ``tuned``: a setting chosen by hand for the suite (``TUNED``);
* ``torch``: the defaults' recipe (cell, size, head, input averaging,
  optimizer, learning rate and its schedule, batch size, clipping and
  skipping overflowing steps, epochs, stopping rule) written in PyTorch,
  with its Adam in cbptt's form (from the same weights and minibatches,
  the two train alike to rounding);
* ``minirocket``: aeon's MiniRocket classifier, a convolutional-kernel
  method that is strong on these sets (series of unequal length are padded
  with zeros to the longest).

Each channel is standardised with the training split's mean and standard
deviation (``SequenceScaler``); the univariate sets also come z-normalised
per series from the archive, as is customary. Needs ``pip install aeon`` (``torch`` for the PyTorch column)::

    python benchmarks/realdata.py                      # every dataset, 3 seeds
    python benchmarks/realdata.py --datasets GunPoint --models defaults torch
    python benchmarks/realdata.py --json results.json --plot accuracy.png
    # two processes of one thread each on a two-core machine, then one table:
    python benchmarks/realdata.py --threads 1 --models torch --json torch.json &
    python benchmarks/realdata.py --threads 1 --models defaults tuned minirocket \
        --json rest.json; wait
    python benchmarks/realdata.py --merge rest.json torch.json --plot accuracy.png
"""

import argparse
import json
import time
import warnings

import numpy as np

# name: (aeon loader, what it is)
DATASETS = {
    "ItalyPowerDemand": ("load_italy_power_demand", "univariate, T=24"),
    "BasicMotions": ("load_basic_motions", "6 channels, T=100"),
    "JapaneseVowels": ("load_japanese_vowels", "12 channels, T=7-29"),
    "GunPoint": ("load_gunpoint", "univariate, T=150"),
    "ArrowHead": ("load_arrow_head", "univariate, T=251"),
    "PickupGestureWiimoteZ": ("load_pickup_gesture_wiimoteZ", "univariate, T=29-361"),
    "OSULeaf": ("load_osuleaf", "univariate, T=427"),
    "ACSF1": ("load_acsf1", "univariate, T=1460"),
}

# The hand-tuned setting (on top of the defaults).
TUNED = {"bidirectional": True}


def load(name):
    """(X_train, y_train, X_test, y_test): lists of (T_i, channels) float64
    arrays, each channel standardised with the training split's statistics
    (as ``make_pipeline(SequenceScaler(), model)`` does), and the labels."""
    import aeon.datasets

    from cbptt import channels_last
    from cbptt.preprocessing import SequenceScaler

    splits = []
    for split in ("train", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # deprecated loaders
            X, y = getattr(aeon.datasets, DATASETS[name][0])(split=split)
        splits.append((list(channels_last(X)), np.asarray(y)))
    (X, y), (X_test, y_test) = splits
    scaler = SequenceScaler().fit(X)
    return scaler.transform(X), y, scaler.transform(X_test), y_test


def as_array_if_equal(series):
    lengths = {len(s) for s in series}
    return np.stack(series) if len(lengths) == 1 else series


def fit_cbptt(params, X, y, X_test, seed):
    from cbptt import RNNClassifier

    clf = RNNClassifier(random_state=seed, n_threads=_THREADS["n"], **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(as_array_if_equal(X), y)
    seconds = time.perf_counter() - start
    return clf.predict(as_array_if_equal(X_test)), seconds, clf.n_iter_


_compiled = []

# --threads: cbptt's n_threads and PyTorch's intra-op threads (None: defaults).
_THREADS = {"n": None}


def fit_minirocket(X, y, X_test, seed):
    from aeon.classification.convolution_based import MiniRocketClassifier

    longest = max(len(s) for s in X + X_test)

    def padded(series):  # aeon's layout, (n, channels, T), zero padded
        out = np.zeros((len(series), series[0].shape[1], longest))
        for i, s in enumerate(series):
            out[i, :, : len(s)] = s.T
        return out

    if not _compiled:   # numba compiles on the first fit: not part of the time
        MiniRocketClassifier(random_state=seed).fit(padded(X[:4]), y[:4])
        _compiled.append(True)
    clf = MiniRocketClassifier(random_state=seed)
    start = time.perf_counter()
    clf.fit(padded(X), y)
    seconds = time.perf_counter() - start
    return clf.predict(padded(X_test)), seconds, 0


def fit_torch(X, y, X_test, seed):
    """The defaults' recipe in PyTorch (see cbptt.RNNClassifier's docs)."""
    import torch

    from cbptt import RNNClassifier
    from cbptt._base import average_windows
    from cbptt._sequences import check_sequences

    defaults = RNNClassifier()
    d = defaults.get_params()
    if _THREADS["n"]:
        torch.set_num_threads(_THREADS["n"])
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    classes, y_index = np.unique(y, return_inverse=True)

    def tensors(padded):   # averaged over windows, as cbptt does
        out, lengths = average_windows(*padded, window)
        return torch.from_numpy(out), torch.from_numpy(lengths)

    train = check_sequences(X, dtype=np.float32)   # padded, in cbptt's training dtype
    window = defaults._requested_window(*train)
    Xt, lt = tensors(train)
    hidden = d["hidden_layer_sizes"]
    hidden = hidden if isinstance(hidden, int) else hidden[0]
    gru = torch.nn.GRU(Xt.shape[2], hidden, batch_first=True)
    head = torch.nn.Linear(hidden, len(classes))
    params = [*gru.parameters(), *head.parameters()]
    # Keras-style initialisation, as cbptt's
    for name, p in gru.named_parameters():
        if "weight_hh" in name:
            for g in range(3):
                torch.nn.init.orthogonal_(p.data[g * hidden:(g + 1) * hidden])
        elif "weight_ih" in name:
            for g in range(3):
                torch.nn.init.xavier_uniform_(p.data[g * hidden:(g + 1) * hidden])
        else:
            torch.nn.init.zeros_(p)
    torch.nn.init.xavier_uniform_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(params, lr=d["learning_rate_init"], betas=(d["beta_1"], d["beta_2"]))
    yt = torch.from_numpy(y_index)

    def logits(Xb, lb):
        out, _ = gru(Xb)
        mask = (torch.arange(Xb.shape[1])[None, :] < lb[:, None]).unsqueeze(2)
        if d["pooling"] == "mean":
            feats = (out * mask).sum(1) / lb[:, None]
        elif d["pooling"] == "max":
            feats = out.masked_fill(~mask, -torch.inf).amax(1)
        else:
            feats = out[torch.arange(len(lb)), lb - 1]
        return head(feats)

    n = len(X)
    batch = defaults._batch_size(n)
    patience = defaults._patience(-(-n // batch))   # epochs of ceil(n / batch) steps
    start = time.perf_counter()
    best, stall, lr = np.inf, 0, d["learning_rate_init"]
    epochs = steps = 0
    for epoch in range(d["max_iter"]):
        order = rng.permutation(n)
        total = 0.0
        for b in range(0, n, batch):
            idx = torch.from_numpy(order[b:b + batch])
            loss = torch.nn.functional.cross_entropy(logits(Xt[idx], lt[idx]), yt[idx])
            l2 = sum((p ** 2).sum() for name, p in [*gru.named_parameters(),
                     *head.named_parameters()] if "weight" in name)
            # The penalised loss, as cbptt's loss_curve_ and stopping rule
            # read it (as MLPClassifier's).
            loss = loss + d["alpha"] / (2 * len(idx)) * l2
            opt.zero_grad()
            loss.backward()
            total += loss.item() * len(idx)
            norm = torch.nn.utils.clip_grad_norm_(params, d["clip_norm"] or np.inf)
            if not torch.isfinite(norm):   # an overflowing gradient: skipped, as cbptt does
                continue
            # cbptt's Adam (scikit-learn's and Keras's form) folds the bias
            # corrections into the step size: PyTorch's with this epsilon.
            steps += 1
            for group in opt.param_groups:
                group["eps"] = d["epsilon"] / np.sqrt(1 - d["beta_2"] ** steps)
            opt.step()
        epochs += 1
        total /= n
        if total <= best - d["tol"]:
            best, stall = total, 0
        else:
            best, stall = min(best, total), stall + 1
        if stall > patience:
            if d["learning_rate"] == "adaptive" and lr > 1e-6:
                lr /= 5
                for group in opt.param_groups:
                    group["lr"] = lr
                stall = 0
                continue
            break
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = logits(*tensors(check_sequences(X_test, dtype=np.float32))).argmax(1).numpy()
    return classes[pred], seconds, epochs


MODELS = {
    "defaults": lambda X, y, Xt, s: fit_cbptt({}, X, y, Xt, s),
    "tuned": lambda X, y, Xt, s: fit_cbptt(TUNED, X, y, Xt, s),
    "torch": fit_torch,
    "minirocket": fit_minirocket,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS),
                        choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int,
                        help="threads for cbptt and PyTorch (default: all they take)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="print (and --plot) the results of earlier --json runs "
                             "together instead of fitting")
    parser.add_argument("--plot", help="write a bar chart of the accuracies here (PNG)")
    args = parser.parse_args()

    if args.merge:
        results = {}
        for path in args.merge:
            with open(path) as f:
                for name, models in json.load(f).items():
                    results.setdefault(name, {}).update(models)
        datasets = [d for d in DATASETS if d in results]
        models = [m for m in MODELS if all(m in results[d] for d in datasets)]
        _print_table(results, datasets, models)
    else:
        if args.threads:
            _THREADS["n"] = args.threads
        results = _run(args.datasets, args.models, args.seeds)
        datasets, models = args.datasets, args.models
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        _plot(results, datasets, models, args.plot)


def _run(datasets, models, n_seeds):
    results = {}
    _print_header(models)
    for name in datasets:
        X, y, X_test, y_test = load(name)
        for model in models:
            seeds = 1 if model == "minirocket" else n_seeds
            accuracies, seconds = [], []
            for seed in range(seeds):
                pred, sec, _ = MODELS[model](X, y, X_test, seed)
                accuracies.append(float(np.mean(pred == y_test)))
                seconds.append(sec)
            results.setdefault(name, {})[model] = {"accuracy": accuracies,
                                                   "seconds": seconds}
        _print_row(results, name, models)
    _print_footer(results, datasets, models)
    return results


def _print_header(models):
    header = f"{'dataset':24s}" + "".join(f"{m:>26s}" for m in models)
    print(header + "\n" + "-" * len(header))


def _print_row(results, name, models):
    row = f"{name:24s}"
    for model in models:
        accuracies, seconds = (results[name][model][k] for k in ("accuracy", "seconds"))
        spread = max(accuracies) - min(accuracies)
        row += f"{np.mean(accuracies):>10.3f} ±{spread:5.3f} {np.median(seconds):8.1f}s"
    print(row, flush=True)


def _print_footer(results, datasets, models):
    means = {m: np.mean([np.mean(results[d][m]["accuracy"]) for d in datasets])
             for m in models}
    print("-" * (24 + 26 * len(models)))
    print(f"{'mean accuracy':24s}" + "".join(f"{means[m]:>10.3f}{'':16s}"
                                           for m in models))
    print("(each cell: mean test accuracy over seeds, max - min over seeds, "
          "median fit seconds)")


def _print_table(results, datasets, models):
    _print_header(models)
    for name in datasets:
        _print_row(results, name, models)
    _print_footer(results, datasets, models)


def _plot(results, datasets, models, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        acc = [results[d][model]["accuracy"] for d in datasets]
        x = np.arange(len(datasets)) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, [np.mean(a) for a in acc], width, label=model,
               # max(0, .): the mean of equal values can round past them
               yerr=[[max(0, np.mean(a) - min(a)) for a in acc],
                     [max(0, max(a) - np.mean(a)) for a in acc]],
               capsize=2)
    ax.set_xticks(np.arange(len(datasets)), datasets, rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(ncol=len(models), loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
