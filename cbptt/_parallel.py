"""Thread counts for the OpenMP kernels, and BLAS kept single-threaded around them.

Why: the kernels run one OpenMP task per chunk of the minibatch and call BLAS
inside each task. A multi-threaded BLAS there would oversubscribe the cores, so
every kernel call runs under a one-thread BLAS limit, and the OpenMP thread
count respects ``OMP_NUM_THREADS``/``threadpoolctl`` with ``n_threads`` as a cap.
"""

import contextlib
import functools

from threadpoolctl import ThreadpoolController

from cbptt._kernels._utils import openmp_max_threads


@functools.lru_cache(maxsize=1)
def _controller():
    # Scanning the loaded libraries is slow; do it once per process.
    return ThreadpoolController()


def effective_n_threads(n_threads=None):
    """Threads the kernels use: OpenMP's current maximum, capped by n_threads."""
    available = openmp_max_threads()
    if n_threads is None:
        return available
    return max(1, min(int(n_threads), available))


@contextlib.contextmanager
def single_threaded_blas():
    """Limit every BLAS library to one thread while the kernels run."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
