"""The `fastlm` command: `fastlm info`, `fastlm bench`."""

from __future__ import annotations

import argparse
import platform
import sys


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cmd_info(args) -> int:
    import fastlm

    fastlm.show_config()
    print(f"{'cpu':15s} {_cpu_model()}")
    return 0


def cmd_bench(args) -> int:
    import fastlm
    from fastlm import _kernels, bench

    if args.simd:
        _kernels.simd_select(args.simd)
    shapes = bench.QUICK_SHAPES if args.quick else bench.FULL_SHAPES
    print(f"fastlm {fastlm.__version__} bench: float32 logits, {args.threads} thread(s), SIMD {_kernels.simd_active()}, "
          f"CPU {_cpu_model()}; best of {args.repeat}", flush=True)
    results = bench.run(shapes, threads=args.threads, repeat=args.repeat, include_numpy=not args.no_numpy,
                        log=lambda r: print(f"  measured {r['case']} {r['shape']}", file=sys.stderr, flush=True))
    print(bench.format_table(results))
    print()
    print("Decoding (softmax: fastlm.softmax of the same array, the cost of one normalization):")
    dec = bench.run_decoding(bench.DECODE_SHAPES[:1] if args.quick else None, threads=args.threads,
                             repeat=args.repeat,
                             log=lambda r: print(f"  measured {r['case']} {r['shape']}", file=sys.stderr, flush=True))
    print(bench.format_decoding_table(dec))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastlm", description="fastlm: fused kernels for LM probability math")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, SIMD levels (compiled / available / active), threads")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("bench", help="time fastlm against numpy, torch and np.copyto; print a table")
    p.add_argument("--quick", action="store_true", help="smaller shapes (seconds instead of a minute)")
    p.add_argument("--threads", type=int, default=1, help="threads for fastlm and torch (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per measurement (best is kept)")
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference timings")
    p.add_argument("--simd", choices=["scalar", "avx2", "avx512", "neon"], help="force a SIMD level")
    p.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
