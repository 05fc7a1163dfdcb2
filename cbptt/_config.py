"""``show_config()``: what this installed copy of cbptt is made of.

Why: speed, and whether training uses more than one core, depend on facts that
``pip list`` does not show: whether the kernels were compiled with OpenMP,
which OpenMP runtime and which BLAS the process loaded, how many threads each
may use, and which compiler and flags built the extensions. Some of these only
the compiler knew (``cbptt._kernels._utils``, and ``cbptt/_build_info.py``
written by setup.py at build time); the rest is read at run time, through
threadpoolctl. One call prints all of it, for bug reports.
"""

import os
import platform
import sys

import cbptt
from cbptt._kernels import WAIT_POLICY, _utils, network

_ENVIRONMENT = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "MKL_NUM_THREADS",
)


def show_config(file=None):
    """Print the versions, OpenMP, BLAS and build details of this cbptt.

    Include its output when reporting a problem::

        python -c "import cbptt; cbptt.show_config()"

    Sections: cbptt (version, location), Python, dependencies (NumPy, SciPy,
    scikit-learn, threadpoolctl), OpenMP (whether the kernels were compiled
    with it, the threads they would use, the runtime loaded), BLAS (each BLAS
    library loaded, with its kernel type and thread count, as threadpoolctl
    reports them; the kernels call SciPy's through
    ``scipy.linalg.cython_blas``), build (compiler, flags, Cython and NumPy
    versions, debug checks) and the threading environment variables.

    Parameters
    ----------
    file : file-like, default=None
        Where to write; None means ``sys.stdout``.
    """
    file = sys.stdout if file is None else file
    for i, (title, items) in enumerate(_sections()):
        if i:
            print(file=file)
        print(title, file=file)
        for key, value in items:
            print(f"  {key}: {value}", file=file)


def _sections():
    """``[(title, [(key, value), ...]), ...]`` as printed by show_config."""
    libraries = _loaded_libraries()
    return [
        ("cbptt", [
            ("version", cbptt.__version__),
            ("location", os.path.dirname(os.path.abspath(cbptt.__file__))),
        ]),
        ("Python", [
            ("version", " ".join(sys.version.split())),
            ("executable", sys.executable),
            ("platform", platform.platform()),
        ]),
        ("Dependencies", _dependency_versions()),
        ("OpenMP", _openmp_items(libraries)),
        ("BLAS (threadpoolctl)", _blas_items(libraries)),
        ("Build", _build_items()),
        ("Environment", [
            (name, os.environ.get(name, "(not set)")) for name in _ENVIRONMENT
        ]),
    ]


def _dependency_versions():
    import numpy
    import scipy
    import sklearn
    import threadpoolctl

    return [
        ("numpy", numpy.__version__),
        ("scipy", scipy.__version__),
        ("scikit-learn", sklearn.__version__),
        ("threadpoolctl", threadpoolctl.__version__),
    ]


def _loaded_libraries():
    """threadpoolctl's view of the BLAS and OpenMP libraries in this process."""
    # The kernels' BLAS is SciPy's; make sure it is loaded before looking.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().info()


def _path_parts(path):
    return os.path.normcase(os.path.abspath(path)).split(os.sep)


def _bundled_by(path):
    """Name of the package whose wheel bundled the library at ``path``, if any.

    auditwheel and delvewheel put libraries in ``<name>.libs/`` next to the
    package, delocate in ``<name>/.dylibs/``.
    """
    parts = _path_parts(path)
    for i, part in enumerate(parts[:-1]):
        if part.endswith(".libs") and len(part) > len(".libs"):
            return part[: -len(".libs")]
        if part == ".dylibs" and i > 0:
            return parts[i - 1]
    return None


def _describe(library):
    name = library.get("prefix") or library.get("internal_api")
    version = library.get("version")
    return f"{name} {version}" if version else name


def _openmp_items(libraries):
    if not _utils.openmp_enabled():
        reason = _build_info().get("serial_reason") or "compiled without OpenMP"
        return [
            ("enabled", f"no: serial build ({reason}); training runs on one thread"),
            ("max threads", _utils.openmp_max_threads()),
        ]
    items = [
        ("enabled", "yes"),
        ("max threads", _utils.openmp_max_threads()),
        ("wait policy", WAIT_POLICY),
    ]
    runtimes = [lib for lib in libraries if lib.get("user_api") == "openmp"]
    # cbptt's runtime is the one its wheel bundled or, for a build from
    # source, the compiler's own; others come with other packages' wheels.
    ours = [lib for lib in runtimes if _bundled_by(lib["filepath"]) == "cbptt"]
    if not ours:
        ours = [lib for lib in runtimes if _bundled_by(lib["filepath"]) is None]
    others = [lib for lib in runtimes if lib not in ours]
    for lib in ours or [None]:
        if lib is None:
            items.append(("runtime", "not found by threadpoolctl"))
        else:
            items.append(("runtime", f"{_describe(lib)} ({lib['filepath']})"))
    for lib in others:
        items.append((
            "also loaded",
            f"{_describe(lib)} ({lib['filepath']}), bundled with "
            f"{_bundled_by(lib['filepath'])}",
        ))
    return items


def _blas_items(libraries):
    blas = [lib for lib in libraries if lib.get("user_api") == "blas"]
    if not blas:
        return [("library", "none found by threadpoolctl")]
    items = []
    for lib in blas:
        used = _bundled_by(lib["filepath"]) == "scipy" or "scipy" in _path_parts(
            lib["filepath"]
        )
        details = [
            f"{lib.get('internal_api')}",
            f"kernel {lib.get('architecture', 'unknown')}",
            f"{lib.get('num_threads')} threads",
        ]
        if lib.get("threading_layer"):
            details.append(f"threading {lib['threading_layer']}")
        label = "library (SciPy's, used by the kernels)" if used else "library"
        items.append((label, f"{_describe(lib)}: {', '.join(details)}"))
        items.append(("  path", lib["filepath"]))
    items.append((
        "kernels",
        "call SciPy's BLAS through scipy.linalg.cython_blas, one thread per "
        "OpenMP thread",
    ))
    return items


def _build_info():
    try:
        from cbptt._build_info import BUILD_INFO
    except ImportError:
        return {}
    return BUILD_INFO


def _build_items():
    info = _build_info()
    items = [
        ("debug checks", "on (CBPTT_DEBUG=1)" if _utils.debug_build() else "off"),
        ("dtypes", "float32, float64"),
        ("kernels", f"{network.instruction_set} (CPU runs "
                    f"{', '.join(_utils.cpu_instruction_sets())}; CBPTT_INSTRUCTION_SET "
                    "chooses)"),
    ]
    if not info:
        return [(
            "record",
            "none: cbptt/_build_info.py is written by setup.py when it "
            "compiles the extensions",
        )] + items
    items = [
        ("compiler", info.get("compiler", "unknown")),
        ("compile", info.get("compile_command", "unknown")),
        ("link", info.get("link_command", "unknown")),
        ("Cython", info.get("cython", "unknown")),
        ("NumPy at build time", info.get("numpy", "unknown")),
        ("platform", info.get("platform", "unknown")),
        ("instruction sets built", ", ".join(info.get("instruction_sets", ["baseline"]))),
    ] + items
    for name, value in info.get("environment", {}).items():
        items.append((f"build environment {name}", value))
    return items
