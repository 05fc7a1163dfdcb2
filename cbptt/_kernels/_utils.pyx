# What the compiled build and the CPU can do (OpenMP or not, how many threads,
# which instruction sets), access for tests to the kernels' elementwise math,
# and the two passes over arrays that the Python layer makes at every call.
#
# Why: the Python layer picks thread counts and kernels, and show_config()
# reports them; both need facts only the C compiler and the CPU know. The
# finite check of the input and the softmax of predict_proba took a tenth of
# a small model's prediction through scikit-learn and SciPy (a pairwise sum
# over X; NumPy reductions over a few classes, set up row by row); here each
# is one pass in C.

from libc.float cimport DBL_MAX, FLT_MAX
from libc.math cimport fabs, log

from cython cimport floating

from cbptt._kernels._common cimport exp_, tanh_approx

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


cdef extern from *:
    """
    /* The CPU's features as the compiler's runtime reads them (CPUID, and
       XGETBV for the OS saving the wide registers). */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int cbptt_cpu_runs_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    static int cbptt_cpu_runs_avx512(void) {
        __builtin_cpu_init();
        return cbptt_cpu_runs_avx2() && __builtin_cpu_supports("avx512f")
               && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512dq");
    }
    #else
    static int cbptt_cpu_runs_avx2(void) { return 0; }
    static int cbptt_cpu_runs_avx512(void) { return 0; }
    #endif
    """
    bint cpu_runs_avx2 "cbptt_cpu_runs_avx2"()
    bint cpu_runs_avx512 "cbptt_cpu_runs_avx512"()


def cpu_instruction_sets():
    """The instruction sets, of those cbptt has kernels for, this CPU runs."""
    return ["baseline"] + ["avx2"] * cpu_runs_avx2() + ["avx512"] * cpu_runs_avx512()


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


def all_finite(const floating[::1] x):
    """Whether no element of x is NaN or infinite."""
    cdef Py_ssize_t i
    cdef floating largest = FLT_MAX if floating is float else DBL_MAX
    cdef bint bad = False
    with nogil:
        for i in range(x.shape[0]):
            # False for NaN too; no early exit, so that the loop vectorizes.
            bad |= not (fabs(x[i]) <= largest)
    return not bad


def softmax(floating[:, ::1] z, bint log_probabilities):
    """Replace each row of z by its softmax, or by its logarithm."""
    cdef Py_ssize_t i, c, n = z.shape[1]
    cdef floating z_max
    cdef double total
    with nogil:
        for i in range(z.shape[0]):
            z_max = z[i, 0]
            for c in range(1, n):
                z_max = max(z_max, z[i, c])
            total = 0
            if log_probabilities:
                for c in range(n):
                    z[i, c] = z[i, c] - z_max
                    total += exp_(z[i, c])
                total = log(total)
                for c in range(n):
                    z[i, c] = z[i, c] - total
            else:
                for c in range(n):
                    z[i, c] = exp_(<floating> (z[i, c] - z_max))
                    total += z[i, c]
                total = 1 / total
                for c in range(n):
                    z[i, c] = z[i, c] * total
