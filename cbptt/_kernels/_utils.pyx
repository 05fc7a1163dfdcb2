# What the compiled build can do (OpenMP or not, how many threads), and
# access for tests to the kernels' elementwise math.
#
# Why: the Python layer picks thread counts and show_config() reports the
# build; both need facts only the C compiler knew.

from cbptt._kernels._common cimport tanh_approx

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CBPTT_OPENMP 1
    #else
    #define CBPTT_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    bint CBPTT_OPENMP
    bint CBPTT_DEBUG_BUILD
    int omp_get_max_threads() nogil


def debug_build():
    """True when built with CBPTT_DEBUG=1 (bounds and initialization checks on)."""
    return bool(CBPTT_DEBUG_BUILD)


def openmp_enabled():
    """True when the extensions were compiled with OpenMP."""
    return bool(CBPTT_OPENMP)


def openmp_max_threads():
    """Threads an OpenMP parallel region would use now (1 without OpenMP)."""
    return omp_get_max_threads()


def tanh_float32(const float[::1] x, float[::1] out):
    """The kernels' float32 tanh applied to x, into out (for tests)."""
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = tanh_approx(x[i])
