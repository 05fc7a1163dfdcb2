"""``cbptt-demo``: train an RNNClassifier on handwritten digits and report.

Why: the first thing a newcomer runs after installing. Each 8x8 digit image
is read as a sequence of 8 rows of 8 pixels; the held-out accuracy and the
training time show that the install works and how fast it is.
"""

import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cbptt
from cbptt import RNNClassifier
from cbptt._parallel import effective_n_threads


def main():
    X, y = load_digits(return_X_y=True)
    # (n_samples, n_timesteps=8 rows, n_features=8), float64 as NumPy gives
    # it; the network trains in float32 (the estimators' default dtype).
    X = X.reshape(-1, 8, 8) / 16.0
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    clf = RNNClassifier(random_state=0)
    print(
        f"cbptt {cbptt.__version__}: training a {clf.cell.upper()} network "
        f"({clf.hidden_layer_sizes[0]} hidden units) on {len(X_train)} digits, "
        f"each 8 steps x 8 features, with {effective_n_threads()} thread(s)..."
    )
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(
        f"{clf.n_iter_} epochs in {seconds:.2f} s "
        f"({1000 * seconds / clf.n_iter_:.1f} ms per epoch); "
        f"held-out accuracy {accuracy:.3f} on {len(X_test)} digits"
    )


if __name__ == "__main__":
    main()
