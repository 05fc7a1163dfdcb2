#!/usr/bin/env bash
# Install an OpenMP runtime for Apple clang into PREFIX (cibuildwheel's
# before-all on macOS; see [tool.cibuildwheel.macos] in pyproject.toml).
#
# Why conda-forge's llvm-openmp and not Homebrew's libomp: delocate copies this
# libomp.dylib into every wheel, so it must run on the oldest macOS the wheel
# claims (MACOSX_DEPLOYMENT_TARGET). Homebrew bottles target the runner's own
# macOS release; these packages target 10.9 (x86_64) and 11.0 (arm64). Same
# packages as scikit-learn's build_tools/wheels/build_wheels.sh.
set -euo pipefail
prefix=${1:?usage: macos_libomp.sh PREFIX}

case "$(uname -m)" in
    arm64) url="https://anaconda.org/conda-forge/llvm-openmp/11.1.0/download/osx-arm64/llvm-openmp-11.1.0-hf3c4609_1.tar.bz2" ;;
    x86_64) url="https://anaconda.org/conda-forge/llvm-openmp/11.1.0/download/osx-64/llvm-openmp-11.1.0-hda6cdc1_1.tar.bz2" ;;
    *) echo "macos_libomp.sh: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$prefix"
curl --fail --silent --show-error --location --retry 3 "$url" -o "$prefix/llvm-openmp.tar.bz2"
# A conda package is a tarball of its prefix: lib/libomp.dylib, include/omp.h, info/.
tar -xjf "$prefix/llvm-openmp.tar.bz2" -C "$prefix"
rm "$prefix/llvm-openmp.tar.bz2"
test -f "$prefix/include/omp.h"
test -f "$prefix/lib/libomp.dylib"
otool -L "$prefix/lib/libomp.dylib"
echo "libomp installed in $prefix"
