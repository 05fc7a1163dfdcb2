#!/usr/bin/env bash
# Sanitizer check: build the kernels with AddressSanitizer and
# UndefinedBehaviorSanitizer and run the kernel tests and a short fuzz under
# them, once for each instruction-set build this CPU runs.
#
#  1. The working tree is copied and pip-installed into a fresh venv with
#     CFLAGS="-O1 -g -fsanitize=address,undefined ..." (setup.py puts CFLAGS
#     after its own -O3, so they take effect); every compiled module must then
#     call into the ASan and UBSan runtimes.
#  2. Positive control: forward() is handed a workspace half the size it
#     needs (the Python layer never does this; the release kernels do not
#     check). ASan must stop the process with a heap report,
#     for each instruction set, or the job fails: it cannot pass vacuously.
#  3. Python is not instrumented, so libasan is preloaded; leak detection is
#     off (CPython keeps memory until exit by design) and any UBSan report
#     aborts the run.
#
# Called by .ci/run; runs alone too: bash .ci/sanitizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
step() { echo "== sanitizers [$((SECONDS - started))s]: $*"; }

flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
step "build the working tree with CFLAGS=\"$flags\""
mkdir "$work/src" "$work/scratch"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
    | tar --null -T - -cf - | tar -xf - -C "$work/src"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
(cd "$work/src" && CFLAGS="$flags" "$py" -m pip install --quiet --no-cache-dir ".[test]") \
    >"$work/build.log" 2>&1 || { tail -n 50 "$work/build.log"; exit 1; }

site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
for so in "$site"/cbptt/_kernels/*.so; do
    symbols=$(nm -D --undefined-only "$so")
    grep -q "__asan_report" <<<"$symbols" && grep -q "__ubsan_handle" <<<"$symbols" \
        || { echo "$(basename "$so") is not instrumented"; exit 1; }
done
echo "  instrumented: $(cd "$site/cbptt/_kernels" && echo *.so)"

# The ASan runtime the modules were linked with, preloaded for the Python
# commands only (not for the shell tools between them).
libasan=$(ldd "$site"/cbptt/_kernels/_utils*.so | awk '/libasan/ {print $3}')
[ -f "$libasan" ] || { echo "the modules do not link libasan"; exit 1; }
asan_py() {
    LD_PRELOAD=$libasan ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
        "$py" "$@"
}
cd "$work/scratch"  # the source tree's cbptt/ has no compiled modules
isas=$(asan_py -c "
import cbptt._kernels as k, importlib.util as u
print(' '.join(i for i in k._utils.cpu_instruction_sets()
               if i == 'baseline' or u.find_spec(f'cbptt._kernels._network_{i}')))")
echo "  instruction sets: $isas"

for isa in $isas; do
    step "positive control ($isa): an undersized workspace must be caught"
    if CBPTT_INSTRUCTION_SET=$isa asan_py - >"$work/control.log" 2>&1 <<'EOF'
import numpy as np
from cbptt._functional import Network
from cbptt._kernels import network as kernels

net = Network("gru", "tanh", n_features=4, hidden_sizes=[8], n_outputs=3)
X = np.ones((16, 10, 4), dtype=np.float32)
lengths = np.full(16, 10, dtype=np.intp)
batch = np.arange(16, dtype=np.intp)
params = np.zeros(net.n_params, dtype=np.float32)
workspace, _ = net._buffers(np.float32, [16], 10, n_threads=1)
too_small = np.empty((1, workspace.shape[1] // 2), dtype=np.float32)
kernels.forward(net.spec, net.hidden_sizes, X, lengths, batch, params,
                np.empty((16, 3), dtype=np.float32), too_small, 1)
print("the overrun went unnoticed")
EOF
    then
        cat "$work/control.log"; echo "ASan did not stop the overrun"; exit 1
    fi
    # Past the buffer lies a redzone or freed memory: either report will do.
    grep -q "ERROR: AddressSanitizer: heap-" "$work/control.log" \
        || { cat "$work/control.log"; echo "no ASan report"; exit 1; }
    grep -m1 -A3 "ERROR: AddressSanitizer" "$work/control.log" | sed 's/^/  /'
done

widest=${isas##* }
for isa in $isas; do
    tests=("$work/src/tests/test_kernels.py")
    # The widest build is the one users get: it also runs the property-based
    # fuzz (the hypothesis tests of the predict and fit paths).
    [ "$isa" = "$widest" ] && tests+=("$work/src/tests"/test_properties*.py)
    step "tests under the sanitizers ($isa): ${tests[*]##*/}"
    CBPTT_INSTRUCTION_SET=$isa PYTHONDONTWRITEBYTECODE=1 \
        asan_py -m pytest -p no:cacheprovider -q "${tests[@]}" >"$work/pytest.log" 2>&1 \
        || { tail -n 80 "$work/pytest.log"; exit 1; }
    tail -n 1 "$work/pytest.log"
    if grep -q "Sanitizer" "$work/pytest.log"; then
        grep -B2 -A20 "Sanitizer" "$work/pytest.log" | head -n 60; exit 1
    fi
done
step "passed"
