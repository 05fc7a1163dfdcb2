"""Compiled kernels; importing this package loads the OpenMP runtime and
picks the training kernels for this CPU.

Why this file does something: OpenMP threads that spin while they wait
(libgomp's default) lose their turn on a machine whose cores are busy with
other work, and every minibatch then waits for a descheduled thread: measured
on 2 shared cores, a 0.3 ms minibatch took 10-12 ms. Sleeping threads
("passive" waiting) are woken promptly and cost nothing measurable on an idle
machine. So, unless the user set ``OMP_WAIT_POLICY`` themselves, the runtime
is loaded with it set to ``PASSIVE``, and the variable is removed again so
that nothing else in the process sees it. (The runtime reads it once, when it
is loaded; a runtime another package loaded earlier keeps its own setting.)
"""

import importlib
import importlib.machinery
import importlib.util
import os


def _not_built_error():
    """The error for a cbptt/ without compiled modules: most often the source
    tree, which Python imports instead of the installed cbptt when it runs
    from the repository root (the current directory comes first on sys.path).
    Without it, the failure reads as a circular import."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ImportError(
        f"cbptt was imported from {package}, which has no compiled extensions "
        f"for this Python (no cbptt/_kernels/_utils"
        f"{importlib.machinery.EXTENSION_SUFFIXES[0]}). If that is cbptt's "
        "source tree (Python looks in the current directory first, so running "
        "it from the repository root imports the tree instead of the installed "
        "cbptt), run Python from another directory, or build the extensions in "
        "the tree with `pip install -e .`."
    )


_USER_SET = "OMP_WAIT_POLICY" in os.environ
WAIT_POLICY = os.environ["OMP_WAIT_POLICY"] if _USER_SET else "PASSIVE"
os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
try:
    from cbptt._kernels import _utils  # loads the runtime
except ImportError:
    # Looked up only on failure: a module that exists but cannot load (a
    # missing OpenMP runtime, say) keeps its own error.
    if importlib.util.find_spec("cbptt._kernels._utils") is None:
        raise _not_built_error() from None
    raise
finally:
    if not _USER_SET:
        del os.environ["OMP_WAIT_POLICY"]


def _load_network():
    """The widest build of the training kernels that this CPU runs.

    x86-64 builds compile _network.pxi for the baseline (SSE2), AVX2 and
    AVX-512 instruction sets (setup.py, ISA_VARIANTS); the wider ones run the
    elementwise passes 25-45% faster. CBPTT_INSTRUCTION_SET=baseline, avx2 or
    avx512 asks for one build (for comparisons); asking for one this CPU or
    this build lacks is an error, not a silent fallback.
    """
    runs = _utils.cpu_instruction_sets()
    built = [name for name in ("avx512", "avx2")
             if importlib.util.find_spec(f"cbptt._kernels._network_{name}")]
    requested = os.environ.get("CBPTT_INSTRUCTION_SET", "").strip().lower()
    if requested:
        if requested not in ("baseline", "avx2", "avx512"):
            raise ImportError(
                f"CBPTT_INSTRUCTION_SET={requested!r} is not one of 'baseline', "
                "'avx2', 'avx512'; unset it to use the best kernels for this CPU."
            )
        if requested not in runs or (requested != "baseline" and requested not in built):
            raise ImportError(
                f"CBPTT_INSTRUCTION_SET={requested!r}, but this CPU runs "
                f"{runs} and this build of cbptt has kernels for "
                f"{['baseline'] + built[::-1]}; unset it or choose one of both."
            )
        choice = requested
    else:
        choice = next((name for name in built if name in runs), "baseline")
    suffix = "" if choice == "baseline" else f"_{choice}"
    return importlib.import_module(f"cbptt._kernels._network{suffix}")


network = _load_network()
