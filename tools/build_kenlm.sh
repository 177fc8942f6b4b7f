#!/usr/bin/env bash
# Builds the n-gram anchors the agreement tests and the bench compare against: KenLM's lmplz (from the
# `kenlm` source distribution on the package index, which carries lm/builder) and the `kenlm` Python
# module, into the active Python environment. Needs root for Debian's boost dev packages.
#
#   bash tools/build_kenlm.sh [PREFIX]     # lmplz and build_binary land in PREFIX/bin (default: $VIRTUAL_ENV)
#
# The tests find lmplz on PATH (or in $FASTLM_LMPLZ); inside the venv both are on PATH once it is active.
set -euo pipefail
prefix="${1:-${VIRTUAL_ENV:?activate a virtual environment or pass PREFIX}}"
max_order=10  # KenLM's compile-time limit on the order (its default is 6)
need=(libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev
      libbz2-dev liblzma-dev cmake make g++)
if ! dpkg -s "${need[@]}" >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
src="$(mktemp -d "${TMPDIR:-/tmp}/kenlm-src.XXXXXX")"
trap 'rm -rf "$src"' EXIT
python -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$src" "kenlm==0.3.0"
tar -xzf "$src"/kenlm-*.tar.gz -C "$src"
dir="$(echo "$src"/kenlm-*/)"
log="$src/build.log"
quiet() { "$@" >>"$log" 2>&1 || { tail -n 40 "$log"; echo "build_kenlm.sh: failed: $*" >&2; exit 1; }; }
quiet cmake -S "$dir" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=$max_order
quiet cmake --build "$src/build" -j "$(nproc)" --target lmplz build_binary
mkdir -p "$prefix/bin"
cp "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$prefix/bin/"
MAX_ORDER=$max_order quiet python -m pip install --no-build-isolation "$dir"
printf 'a b c\na b\n' | "$prefix/bin/lmplz" -o 2 --discount_fallback -S 100M -T "$src" >/dev/null 2>&1 ||
    { echo "build_kenlm.sh: the built lmplz does not run" >&2; exit 1; }
python -c "import kenlm"
echo "lmplz: $prefix/bin/lmplz"
