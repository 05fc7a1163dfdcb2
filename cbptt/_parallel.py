"""Thread counts for the OpenMP kernels, and BLAS kept single-threaded around them.

Why: the kernels run one OpenMP task per chunk of the minibatch and call BLAS
inside each task. A multi-threaded BLAS there would oversubscribe the cores, so
every kernel call runs under a one-thread BLAS limit, and the OpenMP thread
count respects ``OMP_NUM_THREADS``/``threadpoolctl`` with ``n_threads`` as a cap.

Two facts of a user's process shape this module:

* The BLAS limit is process-wide state. Calls from several Python threads at
  once share one limit: the first to enter sets it, the last to leave
  restores what it found, so the process's settings are the same after any
  pattern of concurrent calls as before them.
* GNU libgomp's thread pool does not survive ``fork``: a child forked after
  the kernels ran on several threads would wait forever for threads that were
  not copied. A child forked after that runs the kernels on one thread (its
  results are the same: they never depend on the thread count).
"""

import contextlib
import functools
import os
import threading

from threadpoolctl import ThreadpoolController

from cbptt._kernels._utils import openmp_max_threads


@functools.lru_cache(maxsize=1)
def _controller():
    # Scanning the loaded libraries is slow; do it once per process.
    return ThreadpoolController()


class _ForkState:
    """Whether this process ran the kernels on several threads, and whether
    it is a child forked after such a process did (then its OpenMP runtime
    cannot start threads)."""

    threads_used = False
    forked_after_threads = False

    @classmethod
    def after_fork_in_child(cls):
        cls.forked_after_threads = cls.forked_after_threads or cls.threads_used
        # The child's own locks start free, whatever the parent held.
        _BlasLimit.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ForkState.after_fork_in_child)


def effective_n_threads(n_threads=None):
    """Threads the kernels use: OpenMP's current maximum, capped by n_threads;
    one in a child forked after the kernels used several."""
    if _ForkState.forked_after_threads:
        return 1
    available = openmp_max_threads()
    threads = available if n_threads is None else max(1, min(int(n_threads), available))
    if threads > 1:
        _ForkState.threads_used = True
    return threads


class _BlasLimit:
    """One BLAS limit for every thread that runs kernels at the moment."""

    lock = threading.Lock()
    users = 0
    limiter = None

    @classmethod
    def enter(cls):
        with cls.lock:
            if cls.users == 0:
                cls.limiter = _controller().limit(limits=1, user_api="blas")
            cls.users += 1

    @classmethod
    def leave(cls):
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                cls.limiter.restore_original_limits()
                cls.limiter = None

    @classmethod
    def reset(cls):
        """In a forked child: the threads that held the limit are gone, so
        restore what they found and start over."""
        if cls.limiter is not None:
            cls.limiter.restore_original_limits()
        cls.lock = threading.Lock()
        cls.users = 0
        cls.limiter = None


@contextlib.contextmanager
def single_threaded_blas():
    """Limit every BLAS library to one thread while the kernels run."""
    _BlasLimit.enter()
    try:
        yield
    finally:
        _BlasLimit.leave()
