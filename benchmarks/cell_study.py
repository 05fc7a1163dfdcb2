"""Which cell and size should RNNClassifier default to? Measure, don't guess.

Trains every cell with the estimator's defaults (only ``cell`` and, with
``--sizes``, ``hidden_layer_sizes`` changed) on three tasks and prints
held-out accuracy, epochs and fit time:

* ``digits-rows``: scikit-learn's digits, 8 rows of 8 pixels = 8 steps;
* ``digits-pixels``: the same images pixel by pixel = 64 steps of 1 feature;
* ``memory-100``: 100 steps of noise whose class is written only in the first
  step; the network must carry it across 99 steps.

Run: ``python benchmarks/cell_study.py`` (``--quick`` for a smaller run).
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from cbptt import RNNClassifier


def digits(pixels):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return X.reshape(-1, 64, 1) if pixels else X.reshape(-1, 8, 8), y


def memory_task(n_samples=2000, n_steps=100, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n_samples)
    X = rng.normal(scale=0.5, size=(n_samples, n_steps, n_classes)).astype(np.float32)
    X[np.arange(n_samples), 0, y] += 2.0
    return X, y


# The settings the cells were compared with (the estimators' defaults at the
# time): the last-state head, a constant learning rate of 0.01, minibatches
# of 64, every step. Fixed here so that the docs' table stays reproducible.
STUDY = dict(pooling="last", learning_rate="constant", learning_rate_init=0.01,
             batch_size=64, downsample=1)


def run(task, X, y, params, seed=0):
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=seed
    )
    clf = RNNClassifier(random_state=seed, **STUDY, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return clf.score(X_test, y_test), clf.n_iter_, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs")
    parser.add_argument("--sizes", default="64", help="hidden sizes, comma separated")
    parser.add_argument("--tasks", default="digits-rows,digits-pixels,memory-100")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    args = parser.parse_args()
    tasks = {
        "digits-rows": lambda: digits(pixels=False),
        "digits-pixels": lambda: digits(pixels=True),
        "memory-100": memory_task,
    }
    extra = {"max_iter": 20} if args.quick else {}
    print("| task | cell | hidden | accuracy | epochs | fit seconds | s/epoch |")
    print("|------|------|--------|----------|--------|-------------|---------|")
    for task in args.tasks.split(","):
        X, y = tasks[task]()
        for cell in args.cells.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                params = dict(cell=cell, hidden_layer_sizes=(size,), **extra)
                accuracy, epochs, seconds = run(task, X, y, params)
                print(f"| {task} | {cell} | {size} | {accuracy:.3f} | {epochs} | "
                      f"{seconds:.1f} | {seconds / epochs:.3f} |", flush=True)


if __name__ == "__main__":
    main()
