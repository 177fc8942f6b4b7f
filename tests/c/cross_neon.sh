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
for d in 32 64; do # every template once per dtype (csrc/dtype.h), the SIMD ones once per level too
    for f in softmax_simd select_simd; do
        $cc "${flags[@]}" -DFL_DTYPE=$d -c "$root/csrc/$f.c" -o "$out/$f-scalar-$d.o"
        $cc "${flags[@]}" -DFL_DTYPE=$d -DFL_SIMD_IS_NEON -c "$root/csrc/$f.c" -o "$out/$f-neon-$d.o"
        objs+=("$out/$f-scalar-$d.o" "$out/$f-neon-$d.o")
    done
    for f in softmax decode; do
        $cc "${flags[@]}" -DFL_DTYPE=$d -c "$root/csrc/$f.c" -o "$out/$f-$d.o"
        objs+=("$out/$f-$d.o")
    done
done
$cc "${flags[@]}" -DFL_HAVE_NEON "$root/csrc/dispatch.c" "$root/csrc/ngram.c" \
    "$root/tests/c/check_levels.c" "${objs[@]}" -lm -o "$out/check_levels"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/check_levels"
