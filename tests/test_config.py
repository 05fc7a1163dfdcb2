"""cbptt.show_config(): every section is printed and agrees with the build.

What it prints is read from three places (the compiled ``_utils`` module, the
build record ``cbptt/_build_info.py`` written by setup.py, and threadpoolctl),
so these tests check each section against the first-hand source. They run the
same against an editable install, a wheel and a serial build.

With ``CBPTT_REQUIRE_OPENMP=1`` in the environment (set when wheels are
tested, by cibuildwheel and .ci/wheel_check.sh), a build without OpenMP fails
``test_openmp_is_required_when_asked``.
"""

import io
import os
from importlib import metadata

import numpy
import pytest
import scipy
import sklearn
import threadpoolctl

import cbptt
from cbptt._kernels._utils import debug_build, openmp_enabled, openmp_max_threads

SECTIONS = [
    "cbptt",
    "Python",
    "Dependencies",
    "OpenMP",
    "BLAS (threadpoolctl)",
    "Build",
    "Environment",
]


def _show_config():
    out = io.StringIO()
    cbptt.show_config(file=out)
    return out.getvalue()


def _sections(text):
    """{title: [item lines, stripped]} from show_config's output."""
    sections, title = {}, None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            title = line
            sections[title] = []
        else:
            sections[title].append(line.strip())
    return sections


@pytest.fixture(scope="module")
def config():
    return _sections(_show_config())


def _value(lines, key):
    """The value of the first ``key: value`` line."""
    for line in lines:
        if line.startswith(key + ": "):
            return line[len(key) + 2 :]
    raise AssertionError(f"no {key!r} line in {lines}")


def test_show_config_is_public_and_prints_to_stdout(capsys):
    assert "show_config" in cbptt.__all__
    assert cbptt.show_config() is None
    assert capsys.readouterr().out == _show_config()


def test_every_section_is_printed_in_order():
    text = _show_config()
    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert titles == SECTIONS
    assert all(_sections(text)[title] for title in SECTIONS)


def test_version_is_the_package_version(config):
    assert _value(config["cbptt"], "version") == cbptt.__version__
    # One version, one place: the installed metadata is read from __version__.
    assert metadata.version("cbptt") == cbptt.__version__
    location = _value(config["cbptt"], "location")
    assert os.path.samefile(location, os.path.dirname(cbptt.__file__))


def test_dependency_versions(config):
    deps = config["Dependencies"]
    assert _value(deps, "numpy") == numpy.__version__
    assert _value(deps, "scipy") == scipy.__version__
    assert _value(deps, "scikit-learn") == sklearn.__version__
    assert _value(deps, "threadpoolctl") == threadpoolctl.__version__
    assert _value(config["Python"], "executable")


def test_openmp_section_agrees_with_the_build(config):
    lines = config["OpenMP"]
    enabled = _value(lines, "enabled")
    assert int(_value(lines, "max threads")) == openmp_max_threads()
    if openmp_enabled():
        assert enabled == "yes"
        assert _value(lines, "runtime")
    else:
        assert enabled.startswith("no: serial build")
        assert "one thread" in enabled
        assert openmp_max_threads() == 1


def test_blas_section_names_the_kernels_blas(config):
    lines = config["BLAS (threadpoolctl)"]
    libraries = [line for line in lines if line.startswith("library")]
    assert libraries, lines
    assert any(line.startswith("library (SciPy's, used by the kernels)") for line in lines)
    assert all("kernel " in line and " threads" in line for line in libraries)
    assert "scipy.linalg.cython_blas" in _value(lines, "kernels")


def test_build_section_agrees_with_the_build(config):
    lines = config["Build"]
    assert _value(lines, "debug checks").startswith("on" if debug_build() else "off")
    assert _value(lines, "dtypes") == "float32, float64"
    assert not any(line.startswith("record: none") for line in lines), (
        "cbptt/_build_info.py is missing: it is written when setup.py compiles "
        "the extensions (rebuild, e.g. pip install -e .)"
    )
    assert _value(lines, "compiler")
    compile_command = _value(lines, "compile")
    openmp_flag = "/openmp" in compile_command or "-fopenmp" in compile_command
    assert openmp_flag == openmp_enabled(), compile_command
    assert _value(lines, "Cython")
    assert _value(lines, "NumPy at build time")


def test_environment_section_shows_thread_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    lines = _sections(_show_config())["Environment"]
    assert _value(lines, "OMP_NUM_THREADS") == "3"
    assert _value(lines, "OPENBLAS_CORETYPE") == "(not set)"


def test_openmp_is_required_when_asked():
    if os.environ.get("CBPTT_REQUIRE_OPENMP") != "1":
        pytest.skip("CBPTT_REQUIRE_OPENMP=1 is set only when testing wheels")
    assert openmp_enabled(), "this wheel was built without OpenMP"


def test_openmp_waits_passively_unless_the_user_chose(tmp_path):
    # The runtime is loaded with OMP_WAIT_POLICY=PASSIVE, which must not leak
    # into the environment of the process; a user's own choice is kept.
    import subprocess
    import sys

    code = (
        "import os, cbptt, cbptt._kernels as k; "
        "print(k.WAIT_POLICY, os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["PASSIVE", "None"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ACTIVE", "ACTIVE"]


def test_source_tree_without_compiled_modules_says_what_to_do(tmp_path):
    # A cbptt/ with the .py files only, as in a checkout installed with
    # `pip install .`: run from its parent, Python imports it, not the
    # installed package, and must say so instead of a circular-import error.
    import shutil
    import subprocess
    import sys

    source = os.path.dirname(cbptt.__file__)

    def all_but_python_files(folder, names):
        return [name for name in names if name == "__pycache__" or not (
            name.endswith(".py") or os.path.isdir(os.path.join(folder, name)))]

    shutil.copytree(source, tmp_path / "cbptt", ignore=all_but_python_files)
    assert not list((tmp_path / "cbptt").rglob("*.so"))
    assert not list((tmp_path / "cbptt").rglob("*.pyd"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    result = subprocess.run([sys.executable, "-c", "import cbptt; cbptt.show_config()"],
                            env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(
        f"ImportError: cbptt was imported from {tmp_path / 'cbptt'}, which has no "
        "compiled extensions for this Python (no cbptt/_kernels/_utils."
    )
    assert "run Python from another directory" in message
    assert "`pip install -e .`" in message
    assert "circular import" not in result.stderr
