#!/usr/bin/env bash
# Build fastlm with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option FASTLM_SANITIZE) into a
# throwaway virtual environment and run the whole test suite against that build.
#
#   tools/sanitize.sh [extra pytest arguments]
#
# Exits non-zero on any sanitizer report (ASan aborts the process, UBSan halts on the first report) and on
# any test failure. Needs GCC or Clang with their sanitizer runtimes (libasan, libubsan). The venv uses
# --system-site-packages so that large test dependencies already installed (torch) are reused; whatever
# the [test] extras list that is missing is installed into the venv.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"
export CC

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastlm-sanitize.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "== venv in $WORK"
"$PYTHON" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"

# Build without isolation so that the build dependencies installed here are used (no download when they
# are present); install any that are missing first.
if ! "$VPY" -c 'import scikit_build_core, Cython, numpy' 2>/dev/null; then
    "$VPY" -m pip install --quiet "scikit-build-core>=0.10" "cython>=3.0" "numpy>=2.0"
fi

echo "== building fastlm with FASTLM_SANITIZE=ON"
# Non-editable, unstripped (symbolized reports), with the test extras (those installed are left alone).
"$VPY" -m pip install --quiet --no-build-isolation \
    -Ccmake.define.FASTLM_SANITIZE=ON -Cinstall.strip=false -Cbuild-dir="$WORK/build" "$SRC[test]"

# The sanitizer runtimes of the compiler that built the extension.
LIBASAN="$("$CC" -print-file-name=libasan.so)"
LIBUBSAN="$("$CC" -print-file-name=libubsan.so)"
for lib in "$LIBASAN" "$LIBUBSAN"; do
    if [[ ! -e "$lib" ]]; then
        echo "sanitize.sh: $lib not found (install the compiler's sanitizer runtimes)" >&2
        exit 2
    fi
done

# detect_leaks=0: CPython does not free everything at exit (interned objects, module state, arenas kept
# by design), so LeakSanitizer would report leaks that are not fastlm's; fastlm's own leaks are what
# tests/test_leaks.py checks (run below).
# abort_on_error / halt_on_error: the first report kills the process, so pytest exits non-zero.
# detect_stack_use_after_return stays off (the default): its fake stack frames are not 64-byte aligned,
# while GCC 12 gives small local arrays read as one AVX-512 vector (the tail buffers of vmath.h) that
# alignment and loads them with vmovaps, a fault that is the instrumentation's, not the code's.
ASAN_DEFAULTS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:check_initialization_order=1"
UBSAN_DEFAULTS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
export ASAN_OPTIONS="$ASAN_DEFAULTS${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="$UBSAN_DEFAULTS${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# The extension is an instrumented library in an uninstrumented interpreter, so the ASan runtime must be
# preloaded. The tests run under a wrapper that preloads it (and sets the options where the environment
# has none) and then starts the venv's interpreter under the wrapper's own name: sys.executable is the
# wrapper, so the tests that start a fresh interpreter with a scrubbed environment (FASTLM_SIMD) get the
# runtime as well.
REALPY="$(readlink -f "$VPY")"
SANPY="$WORK/venv/bin/python-sanitized"
cat > "$SANPY" <<EOF
#!$(command -v bash)
export LD_PRELOAD="$LIBASAN:$LIBUBSAN\${LD_PRELOAD:+:\$LD_PRELOAD}"
export ASAN_OPTIONS="\${ASAN_OPTIONS-$ASAN_DEFAULTS}"
export UBSAN_OPTIONS="\${UBSAN_OPTIONS-$UBSAN_DEFAULTS}"
exec -a "$SANPY" "$REALPY" "\$@"
EOF
chmod +x "$SANPY"

# The extension must be the sanitized build from the venv, not a source tree or another install.
EXT="$(cd "$WORK" && env -i "$SANPY" -c 'import fastlm._kernels as k; print(k.__file__)')"
case "$EXT" in
    "$WORK/venv/"*) echo "== extension: $EXT" ;;
    *) echo "sanitize.sh: imported $EXT instead of the venv's build" >&2; exit 2 ;;
esac
if [[ "$(ldd "$EXT")" != *libasan* ]]; then
    echo "sanitize.sh: $EXT is not linked against libasan (FASTLM_SANITIZE not applied?)" >&2
    exit 2
fi

# From outside the source tree, so that the installed build is imported. --capture=sys leaves fd 2 to
# the sanitizers, so that a report is printed although the process is killed; faulthandler is off so
# that a fault reaches ASan, which reports it with the native stack.
cd "$WORK"
PYTEST=("$SANPY" -m pytest -p no:cacheprovider -p no:faulthandler --capture=sys -q)
fail() {
    echo "sanitize.sh: FAILED ($1: pytest exit status $2; a sanitizer report aborts the process)" >&2
    exit "$2"
}

# 0. The C check of every SIMD level against the scalar kernels (tests/c/check_levels.c), an instrumented
#    program of its own: no preload, and LeakSanitizer on, since no interpreter is involved.
echo "== tests/c/check_levels under ASan + UBSan"
"${CMAKE:-cmake}" -S "$SRC" -B "$WORK/cbuild" -DCMAKE_C_COMPILER="$CC" -DFASTLM_SANITIZE=ON \
    -DFASTLM_C_TESTS=ON >/dev/null
"${CMAKE:-cmake}" --build "$WORK/cbuild" --target check_levels -j "$(nproc)" >/dev/null
status=0
ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" "$WORK/cbuild/check_levels" | tail -n 1 || status=$?
[[ $status -eq 0 ]] || { echo "sanitize.sh: FAILED (check_levels: exit status $status)" >&2; exit "$status"; }

# 1. Everything but tests/test_leaks.py, with ASan's quarantine on (freed memory is held back so that a
#    use after free is caught). The leak tests measure the resident set size, which the quarantine (up
#    to 256 MiB, resident) makes grow with every free, so they cannot hold in this run.
echo "== running the test suite under ASan + UBSan"
status=0
"${PYTEST[@]}" "$SRC/tests" --ignore="$SRC/tests/test_leaks.py" "$@" || status=$?
[[ $status -eq 0 ]] || fail "test suite" "$status"

# 2. tests/test_leaks.py, still under both sanitizers, with the quarantine off so that the RSS counts
#    live memory again (its subprocesses inherit the options).
if [[ -e "$SRC/tests/test_leaks.py" ]]; then
    echo "== running tests/test_leaks.py under ASan + UBSan, quarantine off"
    status=0
    ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=0:thread_local_quarantine_size_kb=0" \
        "${PYTEST[@]}" "$SRC/tests/test_leaks.py" "$@" || status=$?
    [[ $status -eq 0 ]] || fail "tests/test_leaks.py" "$status"
fi
echo "sanitize.sh: OK"
