"""`fastlm ngram fit | eval | generate`: n-gram models from text files (one sentence per line), as KenLM's
lmplz and query are used. Files may be `-` (stdin); CRLF line ends are read as LF."""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

SMOOTHING = {"kn": "kneser-ney", "add-alpha": "add-alpha"}


def _open(path: str):
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _lines(paths: list[str]) -> Iterator[bytes]:
    for path in paths:
        f = _open(path)
        try:
            for line in f:
                yield line.rstrip(b"\n").rstrip(b"\r")
        finally:
            if f is not sys.stdin.buffer:
                f.close()


def _progress(total: int | None, desc: str, unit: str, enabled: bool):
    """A progress bar on stderr (tqdm when installed, else a percentage line); a no-op when disabled."""
    if not enabled:
        return None
    try:
        import importlib

        tqdm = importlib.import_module("tqdm").tqdm
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, leave=True)
    except ImportError:
        return _Plain(total, desc)


class _Plain:
    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.n, self.shown = total, desc, 0, -1

    def update(self, n: int) -> None:
        self.n += n
        pct = int(100 * self.n / self.total) if self.total else -1
        if pct != self.shown:
            self.shown = pct
            print(f"\r{self.desc}: {pct:3d}%", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def _size(paths: list[str]) -> int | None:
    import os

    if "-" in paths:
        return None
    return sum(os.path.getsize(p) for p in paths)


def _show(args) -> bool:
    return args.progress or (sys.stderr.isatty() and (_size(args.files) or 0) > (1 << 20))


def _read(lines: Iterator[bytes], args) -> list[bytes]:
    """All lines, with a progress bar over the bytes read (counting is then one C call)."""
    bar = _progress(_size(args.files), "reading", "B", _show(args))
    out = []
    for line in lines:
        out.append(line)
        if bar:
            bar.update(len(line) + 1)
    if bar:
        bar.close()
    return out


@contextmanager
def _dask_client(args) -> Iterator[Any]:
    """A distributed.Client for --workers N (a LocalCluster of N one-thread processes, closed with it) or
    --scheduler ADDRESS, or None without either."""
    if not (args.workers or args.scheduler):
        yield None
        return
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if "-" in args.files:
        raise ValueError("--workers/--scheduler read files, not stdin (-)")
    try:
        import distributed
    except ImportError:
        raise ValueError("--workers/--scheduler need Dask: pip install fastlm[dask]") from None
    if args.scheduler:
        with distributed.Client(args.scheduler, timeout=10) as client:
            yield client
        return
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def cmd_fit(args) -> int:
    from . import ngram

    if args.output is None and args.arpa is None:
        raise ValueError("give -o/--output (fastlm model) or --arpa (ARPA file), or both")
    smoothing = SMOOTHING[args.smoothing]
    options = {"alpha": args.alpha, "discount_fallback": args.discount_fallback, "prune": args.prune}
    if (args.workers or args.scheduler) and args.unit != "words":
        raise ValueError("--workers/--scheduler fit word models (--unit words)")
    with _dask_client(args) as client:
        if client is not None:
            from . import dask as fdask

            lm = fdask.fit_distributed(args.files, args.order, smoothing=smoothing, min_count=args.min_count,
                                       client=client, progress=_show(args), **options)
        elif args.unit == "words":
            texts = [line.decode("utf-8", errors="replace") for line in _read(_lines(args.files), args)]
            lm = ngram.NgramLM.for_words(texts, args.order, min_count=args.min_count, smoothing=smoothing, **options)
        else:
            lm = ngram.NgramLM(args.order, smoothing=smoothing, vocab_size=ngram.BYTE_VOCAB, bos_id=ngram.BYTE_BOS,
                               eos_id=ngram.BYTE_EOS, vocab=ngram.ByteVocab(), **options)
            lm.fit(_read(_lines(args.files), args))
    lm.metadata = {"unit": args.unit}
    if args.output:
        lm.save(args.output)
    if args.arpa:
        lm.to_arpa(args.arpa)
    where = " and ".join(p for p in (args.output, args.arpa) if p)
    print(f"{where}: order {lm.order}, {smoothing}{'' if smoothing == 'kneser-ney' else f' alpha {lm.alpha:g}'}, "
          f"|V| {lm.vocab_size}, unit {args.unit}, n-grams " +
          ", ".join(f"{k}: {c}" for k, c in enumerate(
              lm.backoff_model().counts() if smoothing == "kneser-ney" else lm.num_ngrams(), 1)))
    return 0


def _scores(lm, args) -> Iterator[tuple[list[bytes], Any]]:
    """(lines, their SequenceScores) in batches: read here and scored in one C call per 100,000 lines, or
    scored on the Dask cluster of --workers / --scheduler."""
    from . import ngram

    if (args.workers or args.scheduler) and not isinstance(lm.vocab, ngram.WordVocab):
        raise ValueError("--workers/--scheduler score with word models")
    with _dask_client(args) as client:
        if client is not None:
            from . import dask as fdask

            rows = fdask.compute(fdask.score_distributed(lm, args.files, client=client), client, _show(args))
    if client is not None:
        lines = [r["text"].rstrip("\n").rstrip("\r").encode("utf-8") for r in rows]
        yield lines, ngram.SequenceScores(np.array([r["logprob"] for r in rows], np.float64),
                                          np.array([r["tokens"] for r in rows], np.int64),
                                          np.array([r["oov"] for r in rows], np.int64))
        return
    bar = _progress(_size(args.files), "scoring", "B", _show(args))
    words = not isinstance(lm.vocab, ngram.ByteVocab)

    def scored(batch: list[bytes]) -> Any:  # (word models read text decoded as fit decodes it)
        return lm.score_batch([t.decode("utf-8", errors="replace") for t in batch] if words else batch)

    batch: list[bytes] = []
    for line in _lines(args.files):
        batch.append(line)
        if len(batch) == 100_000:
            yield batch, scored(batch)
            if bar:
                bar.update(sum(len(t) + 1 for t in batch))
            batch = []
    yield batch, scored(batch)
    if bar:
        bar.close()


def cmd_eval(args) -> int:
    from . import metrics, ngram

    lm = ngram.load(args.model)
    if lm.vocab is None:
        raise ValueError(f"{args.model}: the model has no vocabulary to read text with")
    total, n, oov, nbytes, sent = 0.0, 0, 0, 0, 0
    for lines, s in _scores(lm, args):
        total += float(s.logprob.sum())
        n += int(s.tokens.sum())
        oov += int(s.oov.sum())
        nbytes += sum(len(t) + 1 for t in lines)  # the newline ends the line as EOS does
        sent += len(lines)
        if args.per_sentence:
            out = sys.stdout
            for t, lp, k, o in zip(lines, s.logprob.tolist(), s.tokens.tolist(), s.oov.tolist()):
                out.write(f"{lp / math.log(10):.6f}\t{k}\t{o}\t{t.decode('utf-8', errors='replace')}\n")
    ce = -total / n if n else float("nan")
    print(f"sentences       {sent}")
    print(f"tokens          {n}")
    print(f"oov             {oov}")
    print(f"cross-entropy   {ce:.6f} nats/token")
    print(f"perplexity      {metrics.word_perplexity(total, n) if n else float('nan'):.6f}")
    print(f"bits per token  {ce / math.log(2):.6f}")
    print(f"bits per byte   {metrics.bits_per_byte(total, nbytes) if nbytes else float('nan'):.6f}")
    return 0


def cmd_generate(args) -> int:
    from . import ngram

    lm = ngram.load(args.model)
    if not isinstance(lm, ngram.NgramLM):
        raise ValueError(f"{args.model}: generate needs a fastlm model (fit one with --smoothing kn)")
    if lm.vocab is None:
        raise ValueError(f"{args.model}: the model has no vocabulary to write text with")
    print(lm.generate(args.prompt, args.n, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p))
    return 0


def _dask_flags(p) -> None:
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N one-thread worker processes (pip install fastlm[dask])")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786)")


def add_parsers(sub, formatter) -> None:
    ng = sub.add_parser("ngram", help="n-gram models (modified Kneser-Ney or add-alpha): fit, eval, generate",
                        formatter_class=formatter).add_subparsers(dest="ngram_command", required=True)
    p = ng.add_parser("fit", help="estimate a model from text files (one sentence per line; - is stdin)",
                      formatter_class=formatter)
    p.add_argument("files", nargs="+", help="text files, - for stdin")
    p.add_argument("--order", type=int, default=3, help="n")
    p.add_argument("--smoothing", choices=sorted(SMOOTHING), default="kn",
                   help="kn: interpolated modified Kneser-Ney as lmplz; add-alpha: Lidstone")
    p.add_argument("--alpha", type=float, default=1.0, help="add-alpha's alpha (the API's default too)")
    p.add_argument("--unit", choices=["bytes", "words"], default="words", help="what a token is")
    p.add_argument("--min-count", type=int, default=1, help="words seen fewer times map to <unk>")
    p.add_argument("--discount-fallback", action="store_true",
                   help="use lmplz's fallback discounts (0.5, 1, 1.5) where the counts leave them undefined")
    p.add_argument("--prune", type=int, nargs="+", default=None, metavar="T",
                   help="kn: per order, leave out n-grams seen at most T times (lmplz --prune, e.g. 0 0 1)")
    p.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    p.add_argument("-o", "--output", default=None, help="write the fastlm model here")
    p.add_argument("--arpa", default=None, help="write an ARPA file here (kn only)")
    _dask_flags(p)
    p.set_defaults(fn=cmd_fit)
    p = ng.add_parser("eval", help="log probability, OOVs, perplexity, bits per token and per byte",
                      formatter_class=formatter)
    p.add_argument("model", help="a fastlm model or an ARPA file")
    p.add_argument("files", nargs="+", help="text files, - for stdin")
    p.add_argument("--per-sentence", action="store_true",
                   help="print log10 probability, tokens, OOVs and the text of each sentence")
    p.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    _dask_flags(p)
    p.set_defaults(fn=cmd_eval)
    p = ng.add_parser("generate", help="continue a prompt", formatter_class=formatter)
    p.add_argument("model")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("-n", type=int, default=50, help="tokens to draw at most")
    p.add_argument("--seed", type=int, default=None, help="integer seed (reproducible draws)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (1: all)")
    p.set_defaults(fn=cmd_generate)


__all__ = ["add_parsers"]
_ = argparse
