#!/usr/bin/env bash
# Build the C core for arm64 (the NEON level) with a cross compiler and run check_levels under qemu.
# Needs: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user (Debian / Ubuntu package names).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc=aarch64-linux-gnu-gcc
flags=(-O2 -std=c11 -fno-math-errno -I"$root/csrc")
objs=()
for f in softmax_simd select_simd; do
    $cc "${flags[@]}" -c "$root/csrc/$f.c" -o "$out/$f-scalar.o"
    $cc "${flags[@]}" -DFL_SIMD_IS_NEON -c "$root/csrc/$f.c" -o "$out/$f-neon.o"
    objs+=("$out/$f-scalar.o" "$out/$f-neon.o")
done
$cc "${flags[@]}" -DFL_HAVE_NEON "$root/csrc/dispatch.c" "$root/csrc/softmax.c" "$root/csrc/sampling.c" \
    "$root/tests/c/check_levels.c" "${objs[@]}" -lm -o "$out/check_levels"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/check_levels"
