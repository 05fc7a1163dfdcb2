"""Declare cbptt's Cython extensions; all metadata lives in pyproject.toml.

Why this file exists: setuptools needs code to decide, per compiler, how to
enable OpenMP, to switch the Cython safety checks on for debug builds, and to
record how the extensions were compiled (``cbptt/_build_info.py``, generated
here and read by ``cbptt.show_config()``).

Environment variables read at build time:

``CBPTT_DEBUG=1``
    Compile with ``boundscheck``, ``wraparound`` and ``initializedcheck`` on.
``CBPTT_NO_OPENMP=1``
    Build without OpenMP (serial kernels), even if the compiler supports it.

The usual ``CC``, ``CFLAGS``, ``CPPFLAGS`` and ``LDFLAGS`` apply as well (the
macOS wheel build uses them to find libomp). ``CFLAGS`` come after cbptt's own
optimisation flags, so they have the last word: ``CFLAGS="-O1 -g
-fsanitize=address,undefined"`` builds the sanitizer copy that
``.ci/sanitizers.sh`` tests, not an ``-O3`` one. Released wheels are compiled for
the baseline instruction set of each platform (no ``-march``); on x86-64 the
training kernels are compiled twice more, for AVX2 and AVX-512
(``ISA_VARIANTS``), and the widest the CPU runs is used.
"""

import glob
import os
import pprint
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_network", "_utils"]

# Copies of the training kernels (_network.pxi) compiled for wider x86-64
# instruction sets, with the flags that enable them; cbptt/_kernels/__init__.py
# imports the widest one the CPU runs. A compiler that rejects the flags
# (another architecture) or MSVC builds the baseline module only.
ISA_VARIANTS = {
    "_network_avx2": ["-mavx2", "-mfma"],
    "_network_avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq",
                        "-mavx2", "-mfma"],
}

BUILD_INFO = "_build_info.py"  # generated into the cbptt package, gitignored

# The compiler's environment: recorded in BUILD_INFO, and a change to it
# triggers a rebuild (_configuration_stamp).
COMPILER_ENVIRONMENT = ("CC", "CFLAGS", "CPPFLAGS", "LDFLAGS")


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


_GCC_ALIAS_CHECKS = "--param=vect-max-version-for-alias-checks=100"


def _compiler_accepts(compiler, *flags):
    """Whether compiling an empty C file with ``flags`` succeeds."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check_flag.c")
        with open(path, "w") as f:
            f.write("int cbptt_check_flag;\n")
        try:
            compiler.compile([path], output_dir=tmp, extra_postargs=list(flags))
        except Exception:
            return False
    return True


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
            # Executables are linked by the bare compiler, without LDFLAGS;
            # pass them, or a libomp found through LDFLAGS (the macOS wheel
            # build) would not count and the build would silently be serial.
            compiler.link_executable(
                objects,
                os.path.join(tmp, "check_openmp"),
                extra_preargs=shlex.split(os.environ.get("LDFLAGS", "")),
                extra_postargs=link_args,
            )
        except Exception:
            return False
    return True


def _compiler_description(compiler):
    """(name and version, compile command, link command) of ``compiler``."""
    if compiler.compiler_type == "msvc":
        if not getattr(compiler, "initialized", True):
            try:
                compiler.initialize()
            except Exception:
                pass
        # The path names the toolset, e.g. .../MSVC/14.38.33130/bin/Hostx64/x64/cl.exe
        cc = getattr(compiler, "cc", "cl.exe")
        return (
            f"MSVC {cc}",
            " ".join([cc] + list(getattr(compiler, "compile_options", []))),
            " ".join(["link.exe"] + list(getattr(compiler, "ldflags_shared", []))),
        )
    compile_cmd, link_cmd = list(compiler.compiler_so), list(compiler.linker_so)
    try:
        out = subprocess.run(
            [compile_cmd[0], "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        version = out.splitlines()[0].strip() if out.strip() else compile_cmd[0]
    except (OSError, subprocess.SubprocessError):
        version = compile_cmd[0]
    return version, " ".join(compile_cmd), " ".join(link_cmd)


class BuildExt(build_ext):
    """Add OpenMP and optimisation flags that depend on the compiler, and
    record them in ``cbptt/_build_info.py``."""

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
            # -fno-trapping-math lets GCC turn the branch-free clamps of the
            # elementwise passes into vector selects (the loops vectorize);
            # unlike -ffast-math it keeps NaN, infinity and isfinite exact.
            opt_args = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
            # The LSTM and GRU steps read and write through 7 pointers; GCC
            # vectorizes such loops only when it may check that many pairs
            # for overlap at run time (its default allows 10 checks).
            if _compiler_accepts(self.compiler, _GCC_ALIAS_CHECKS):
                opt_args.append(_GCC_ALIAS_CHECKS)
        variants = {
            name: flags for name, flags in ISA_VARIANTS.items()
            if self.compiler.compiler_type != "msvc"
            and _compiler_accepts(self.compiler, *flags)
        }
        # setuptools puts CFLAGS before extra_compile_args; repeated last,
        # the user's -O level (or -fno-omit-frame-pointer) wins over ours.
        user_args = shlex.split(os.environ.get("CFLAGS", ""))
        kept = []
        for ext in self.extensions:
            module = ext.name.rsplit(".", 1)[1]
            if module in ISA_VARIANTS and module not in variants:
                continue
            ext.extra_compile_args = (opt_args + compile_args + variants.get(module, [])
                                      + user_args)
            ext.extra_link_args = link_args
            kept.append(ext)
        self.extensions = kept
        self._write_build_info(
            opt_args + compile_args, link_args, use_openmp, None if use_openmp else reason,
            ["baseline"] + [name.rsplit("_", 1)[1] for name in variants],
        )
        super().build_extensions()

    def _write_build_info(self, compile_args, link_args, use_openmp, serial_reason,
                          instruction_sets):
        compiler, compile_cmd, link_cmd = _compiler_description(self.compiler)
        info = {
            "compiler": compiler,
            "compiler_type": self.compiler.compiler_type,
            "compile_command": " ".join([compile_cmd] + compile_args),
            "link_command": " ".join([link_cmd] + link_args),
            "openmp": use_openmp,
            "serial_reason": serial_reason,
            "instruction_sets": instruction_sets,
            "debug": _env_flag("CBPTT_DEBUG"),
            "cython": Cython.__version__,
            "numpy": np.__version__,
            "platform": sysconfig.get_platform(),
            "environment": {
                name: os.environ[name]
                for name in COMPILER_ENVIRONMENT + ("MACOSX_DEPLOYMENT_TARGET",)
                if os.environ.get(name)
            },
        }
        text = (
            '"""How this copy of cbptt was compiled (written by setup.py; not under '
            'version control)."""\n\nBUILD_INFO = '
            + pprint.pformat(info, sort_dicts=False)
            + "\n"
        )
        path = os.path.join(self.build_lib, "cbptt", BUILD_INFO)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        self._build_info_path = path

    def run(self):
        super().run()
        # An editable install or `build_ext --inplace` imports cbptt from the
        # source tree, so the record goes there too (like the compiled modules).
        if self.inplace and getattr(self, "_build_info_path", None):
            package_dir = self.get_finalized_command("build_py").get_package_dir("cbptt")
            self.copy_file(self._build_info_path, os.path.join(package_dir, BUILD_INFO))


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
            include_dirs=[np.get_include(), "cbptt/_kernels"],
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                ("CBPTT_DEBUG_BUILD", "1" if debug else "0"),
            ],
            depends=[_configuration_stamp(debug)] + sorted(
                glob.glob("cbptt/_kernels/*.pxi") + glob.glob("cbptt/_kernels/*.pxd")
                + glob.glob("cbptt/_kernels/*.h")),
        )
        for name in KERNELS + list(ISA_VARIANTS)
    ]
    # Cython regenerates a .c file only when it is older than its sources, not
    # when the directives change, so debug and release builds keep their
    # generated C apart; otherwise one would silently reuse the other's.
    build_dir = os.path.join("build", "cython", "debug" if debug else "release")
    return cythonize(extensions, compiler_directives=directives, build_dir=build_dir)


def _configuration_stamp(debug):
    """A file that is touched whenever the build configuration changes.

    setuptools recompiles an extension only when a source or dependency is
    newer than the compiled module left in build/ by the last build (pip
    builds in the source tree), so switching CBPTT_DEBUG, CBPTT_NO_OPENMP or
    the compiler flags would otherwise reinstall the previous build's modules.
    """
    config = "".join(
        f"{name}={os.environ.get(name, '')}\n"
        for name in COMPILER_ENVIRONMENT + ("CBPTT_NO_OPENMP",)
    ) + f"debug={debug}\n"
    path = os.path.join("build", "cython", "configuration.txt")
    try:
        with open(path) as f:
            unchanged = f.read() == config
    except OSError:
        unchanged = False
    if not unchanged:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(config)
    return path


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
