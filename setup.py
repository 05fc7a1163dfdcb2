"""Declare cbptt's Cython extensions; all metadata lives in pyproject.toml.

Why this file exists: setuptools needs code to decide, per compiler, how to
enable OpenMP, and to switch the Cython safety checks on for debug builds.

Environment variables read at build time:

``CBPTT_DEBUG=1``
    Compile with ``boundscheck``, ``wraparound`` and ``initializedcheck`` on.
``CBPTT_NO_OPENMP=1``
    Build without OpenMP (serial kernels), even if the compiler supports it.
"""

import os
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_network", "_utils"]


def _env_flag(name):
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler):
    """Return (compile_args, link_args) enabling OpenMP for ``compiler``."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs libomp (e.g. from Homebrew); its location is
        # passed through CPPFLAGS/LDFLAGS by the wheel build.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _compiler_has_openmp(compiler, compile_args, link_args):
    """Compile and link a tiny OpenMP program to see whether the flags work."""
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check_openmp.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_executable(
                objects, os.path.join(tmp, "check_openmp"), extra_postargs=link_args
            )
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Add OpenMP and optimisation flags that depend on the compiler."""

    def build_extensions(self):
        compile_args, link_args = _openmp_flags(self.compiler)
        if _env_flag("CBPTT_NO_OPENMP"):
            use_openmp = False
            reason = "CBPTT_NO_OPENMP is set"
        else:
            use_openmp = _compiler_has_openmp(self.compiler, compile_args, link_args)
            reason = "the compiler could not build an OpenMP program"
        if not use_openmp:
            warnings.warn(
                f"Building cbptt WITHOUT OpenMP ({reason}): training will use a "
                "single thread. cbptt.show_config() reports this build as serial.",
                stacklevel=1,
            )
            print(f"cbptt: building without OpenMP ({reason})", file=sys.stderr)
            compile_args, link_args = [], []
        if self.compiler.compiler_type == "msvc":
            opt_args = ["/O2"]
        else:
            opt_args = ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args = opt_args + compile_args
            ext.extra_link_args = link_args
        super().build_extensions()


def _extensions():
    debug = _env_flag("CBPTT_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "cpow": True,
    }
    extensions = [
        Extension(
            f"cbptt._kernels.{name}",
            [f"cbptt/_kernels/{name}.pyx"],
            include_dirs=[np.get_include()],
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                ("CBPTT_DEBUG_BUILD", "1" if debug else "0"),
            ],
        )
        for name in KERNELS
    ]
    return cythonize(extensions, compiler_directives=directives)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
