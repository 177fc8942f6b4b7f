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
    print()
    n = 200_000 if args.quick else 2_000_000
    print(f"N-gram models: {n} Zipf ids (vocabulary 32000), trigram, one thread:")
    print(bench.format_ngram_table(bench.run_ngram(n, repeat=args.repeat)))
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


def _lines(paths):
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                yield line.rstrip(b"\n")


def _encoder(lm, unit):
    """line (bytes) -> ids, for the model's unit (the word vocabulary is built once)."""
    from . import ngram

    if unit == "bytes":
        return ngram.byte_tokens
    vocab = ngram.WordVocab(lm.metadata["words"])
    return lambda line: vocab.encode(line.decode("utf-8", errors="replace"))


def cmd_ngram_fit(args) -> int:
    import os as _os

    from . import ngram

    total = sum(_os.path.getsize(p) for p in args.files)
    if args.unit == "bytes":
        lm = ngram.NgramLM(args.order, alpha=args.alpha, vocab_size=ngram.BYTE_VOCAB, bos_id=ngram.BYTE_BOS,
                           eos_id=ngram.BYTE_EOS)
        lm.metadata = {"unit": "bytes"}
    else:
        texts = (line.decode("utf-8", errors="replace") for line in _lines(args.files))
        vocab = ngram.WordVocab.build(texts, min_count=args.min_count)
        lm = ngram.NgramLM(args.order, alpha=args.alpha, vocab_size=len(vocab), bos_id=vocab.BOS,
                           eos_id=vocab.EOS)
        lm.metadata = {"unit": "words", "words": vocab.words}
    batch, done, shown = [], 0, -1
    progress = total > (1 << 20) and sys.stderr.isatty() or args.progress
    encode = _encoder(lm, args.unit)
    for line in _lines(args.files):
        batch.append(encode(line))
        done += len(line) + 1
        if len(batch) == 100_000:
            lm.update(batch)
            batch = []
            if progress and int(100 * done / max(total, 1)) != shown:
                shown = int(100 * done / max(total, 1))
                print(f"\rfitting: {shown:3d}% of {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
    lm.update(batch)
    if progress:
        print(f"\rfitting: 100% of {total / 1e6:.1f} MB", file=sys.stderr)
    lm.save(args.output)
    print(f"{args.output}: order {lm.order}, alpha {lm.alpha:g}, |V| {lm.vocab_size}, unit {args.unit}, "
          f"n-grams " + ", ".join(f"{k}: {lm.tables[k].keys.size}" for k in sorted(lm.tables)))
    return 0


def cmd_ngram_eval(args) -> int:
    import math

    from . import ngram

    from . import metrics

    lm = ngram.NgramLM.load(args.model)
    encode = _encoder(lm, lm.metadata.get("unit", "bytes"))
    total, n, nbytes = 0.0, 0, 0
    batch = []
    for line in _lines(args.files):
        batch.append(encode(line))
        nbytes += len(line) + 1  # the newline ends the line as EOS does
        if len(batch) == 10_000:
            t, c = lm._score_all(batch)
            total, n, batch = total + t, n + c, []
    t, c = lm._score_all(batch)
    total, n = total + t, n + c
    ce = -total / n if n else float("nan")
    print(f"tokens          {n}")
    print(f"cross-entropy   {ce:.6f} nats/token")
    print(f"perplexity      {metrics.word_perplexity(total, n) if n else float('nan'):.6f}")
    print(f"bits per token  {ce / math.log(2):.6f}")
    print(f"bits per byte   {metrics.bits_per_byte(total, nbytes) if nbytes else float('nan'):.6f}")
    return 0


def cmd_ngram_generate(args) -> int:
    from . import ngram

    lm = ngram.NgramLM.load(args.model)
    unit = lm.metadata.get("unit", "bytes")
    ids = lm.generate(_encoder(lm, unit)(args.prompt.encode("utf-8")), args.n, seed=args.seed,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    ids = [int(i) for i in ids if i != lm.eos_id]  # type: ignore[assignment]
    if unit == "bytes":
        text = bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        print(args.prompt + text)
    else:
        print((args.prompt + " " + ngram.WordVocab(lm.metadata["words"]).decode(ids)).strip())
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

    ng = sub.add_parser("ngram", help="add-alpha n-gram models: fit, eval, generate").add_subparsers(
        dest="ngram_command", required=True)
    p = ng.add_parser("fit", help="count an n-gram model over text files (one sequence per line)")
    p.add_argument("files", nargs="+")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--unit", choices=["bytes", "words"], default="bytes")
    p.add_argument("--min-count", type=int, default=1, help="words seen fewer times map to <unk>")
    p.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_ngram_fit)
    p = ng.add_parser("eval", help="cross-entropy, perplexity, bits per token and per byte on text files")
    p.add_argument("model")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_ngram_eval)
    p = ng.add_parser("generate", help="continue a prompt")
    p.add_argument("model")
    p.add_argument("--prompt", default="")
    p.add_argument("-n", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.set_defaults(fn=cmd_ngram_generate)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
