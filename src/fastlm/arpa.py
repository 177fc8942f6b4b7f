"""Backoff n-gram models: ARPA files in and out, and scoring many sequences in one C call (csrc/README.md,
"N-gram scoring").

An ArpaLM holds, per order, the sorted rank keys of its n-grams (_ngram_tables.py), their log10
probabilities and log10 backoffs, and the words; KenLM's query rule gives
    log10 p(w | h) = log10 p(longest n-gram of h w in the model) + the backoffs of the longer contexts of h
                     that are in the model.
"""

from __future__ import annotations

import gc
import math
import os
import re
from itertools import chain, repeat
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._config import resolve_threads
from ._ngram_tables import Duplicate, aligned_state, build, ids_of

__all__ = ["ArpaLM", "SequenceScores", "TokenScores"]

LN10 = math.log(10.0)


class SequenceScores(NamedTuple):
    """Per sequence: log probability (natural log unless log10 was asked), predicted tokens, OOV tokens."""
    logprob: NDArray[np.float64]
    tokens: NDArray[np.int64]
    oov: NDArray[np.int64]


class TokenScores(NamedTuple):
    """Per predicted token (KenLM's full_scores): log probability, the order of the n-gram that gave it,
    whether the token is out of vocabulary; offsets[s]:offsets[s+1] are sequence s's tokens."""
    logprob: NDArray[np.float64]
    ngram_length: NDArray[np.int32]
    oov: NDArray[np.bool_]
    offsets: NDArray[np.int64]


def gather(sequences: Any, vocab: Any, check: Any, name_of: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(all ids as one int64 array, length of each sequence) of a list of str (through vocab, in bulk) or id
    sequences (each checked: integer dtype, 1-D; then check(flat, name) with errors naming the sequence)."""
    from .ngram import _ids  # the id checks of the count models

    seqs = sequences if isinstance(sequences, list) else list(sequences)
    name_of = name_of or (lambda s: f"sequences[{s}]")
    if seqs and all(isinstance(q, (str, bytes)) for q in seqs):
        if vocab is None:
            raise TypeError(f"{name_of(0)} is text but the model has no vocab: pass token ids")
        return vocab.encode_many(seqs)
    arrays = []
    for s, q in enumerate(seqs):
        if isinstance(q, (str, bytes)):
            if vocab is None:
                raise TypeError(f"{name_of(s)} is text but the model has no vocab: pass token ids")
            arrays.append(np.asarray(vocab.encode(q), np.int64))
        else:
            arrays.append(_ids(q, name_of(s)))
    lengths = np.fromiter(map(len, arrays), np.int64, len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    if check is not None and flat.size:
        try:
            check(flat, "x")
        except ValueError:  # name the sequence and position
            for s, q in enumerate(arrays):
                check(q, name_of(s))
            raise
    return flat.astype(np.int64, copy=False), lengths


def layout(flat: np.ndarray, lengths: np.ndarray, pad: list[int], eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (flat ids split by lengths) with the pad ids before and eos after each, as one uint32
    array and the starts of each padded sequence."""
    p, e = len(pad), int(eos is not None)
    starts = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths + p + e, out=starts[1:])
    if p == 0 and e == 0:
        return flat.astype(np.uint32), starts
    tokens = np.empty(int(starts[-1]), np.uint32)
    body = np.ones(tokens.size, bool)
    first = starts[:-1]
    for j, v in enumerate(pad):
        tokens[first + j] = v
        body[first + j] = False
    if eos is not None:
        tokens[starts[1:] - 1] = eos
        body[starts[1:] - 1] = False
    tokens[body] = flat
    return tokens, starts


def padded(sequences: list[Any], vocab: Any, check: Any, pad: list[int], eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """layout(*gather(...)): a list of str goes through the vocabulary in one pass that writes the padding
    with the ids."""
    if sequences and all(isinstance(q, (str, bytes)) for q in sequences) and vocab is not None:
        ids, lengths = vocab.encode_many(sequences, pre=pad, post=eos)
        starts = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        return ids.astype(np.uint32), starts
    return layout(*gather(sequences, vocab, check), pad, eos)


class Scoring:
    """Scoring shared by the n-gram models (threads: fastlm.get_num_threads(), or the attribute num_threads
    when set; results do not depend on it). A subclass provides `order`, `vocab` (or None), `_padding()`
    -> (left pad ids, eos id or None), `_c_args()` -> the model arguments of _kernels.ngram_score, and
    `_check_ids(a, name)`."""

    order: int
    vocab: Any
    num_threads: int | None = None

    def _padding(self) -> tuple[list[int], int | None]:
        raise NotImplementedError

    def _c_args(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _check_ids(self, a: np.ndarray, name: str) -> None:
        raise NotImplementedError

    def _query(self, w: np.ndarray, h: np.ndarray) -> np.ndarray | None:
        """The kernel's log of w after each context row h (already cut to n-1), where a model has a faster
        path than scoring each row as a sequence; None otherwise."""
        return None

    def _score(self, tokens: np.ndarray, starts: np.ndarray, skip: int, per_token: bool) -> tuple[Any, ...]:
        orders, add_alpha, alpha, vocab, total, unseen, unk = self._c_args()
        return _kernels.ngram_score(orders, add_alpha, alpha, vocab, total, unseen, unk, tokens, starts, skip,
                                    per_token, resolve_threads(self.num_threads))

    # ------------------------------------------------------------------ inputs
    def _encode(self, seq: Any, name: str) -> np.ndarray:
        flat, _ = gather([seq], self.vocab, None, name_of=lambda s: name)
        self._check_ids(flat, name)
        return flat

    def _flat(self, sequences: Any, offsets: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(padded uint32 tokens, starts) of many sequences: a list of str / id sequences, or a flat id
        array with offsets (offsets[s]:offsets[s+1] is sequence s)."""
        from ._arrays import int_array

        pad, eos = self._padding()
        if offsets is not None:
            flat = self._encode(sequences, "tokens")
            off = int_array(offsets, "offsets").reshape(-1)
            if off.size == 0 or off[0] != 0 or off[-1] != flat.size or np.any(np.diff(off) < 0):
                raise ValueError(f"offsets must run from 0 to len(tokens) = {flat.size}, non-decreasing; got "
                                 f"{off[:4].tolist()}...{off[-2:].tolist() if off.size else []}")
            return layout(flat, np.diff(off), pad, eos)
        if isinstance(sequences, (str, bytes)) or (isinstance(sequences, np.ndarray) and sequences.ndim == 1):
            raise TypeError("sequences must be a list of sequences (use score() for one)")
        return padded(sequences if isinstance(sequences, list) else list(sequences), self.vocab, self._check_ids,
                      pad, eos)

    def _run(self, tokens: np.ndarray, starts: np.ndarray, per_token: bool) -> tuple[Any, ...]:
        return self._score(tokens, starts, len(self._padding()[0]), per_token)

    def _unit(self, logp: np.ndarray, log10: bool) -> np.ndarray:
        """Convert the kernel's log (log10 for backoff models, natural for add-alpha) to the asked one."""
        native10 = not self._c_args()[1]
        if native10 == log10:
            return logp
        return logp * LN10 if native10 else logp / LN10

    # ------------------------------------------------------------------ API
    def score_batch(self, sequences: Any, offsets: ArrayLike | None = None, *, log10: bool = False) -> SequenceScores:
        """Log probability of every sequence (BOS context and EOS as the model pads them), in one C call.

        sequences: a list of str (with a vocabulary) or of id sequences, or a flat id array with
        `offsets`. Returns SequenceScores(logprob, tokens, oov): natural logs unless log10=True (KenLM's
        unit)."""
        tokens, starts = self._flat(sequences, offsets)
        lp, oov, *_ = self._run(tokens, starts, False)
        pad, _ = self._padding()
        return SequenceScores(self._unit(lp, log10), np.diff(starts) - len(pad), oov)

    def score(self, sequence: Any, *, log10: bool = False) -> float:
        """Log probability of one sequence (str or ids), natural log unless log10=True (kenlm's score)."""
        return float(self.score_batch([sequence], log10=log10).logprob[0])

    def perplexity(self, sequences: Any, offsets: ArrayLike | None = None) -> float:
        """exp(-sum log p / predicted tokens) over sequences (EOS included when the model has one)."""
        s = self.score_batch(sequences, offsets)
        n = int(s.tokens.sum())
        from .metrics import exp_or_inf

        return exp_or_inf(-float(s.logprob.sum()) / n) if n else float("nan")

    def full_scores(self, sequences: Any, offsets: ArrayLike | None = None, *, log10: bool = False) -> TokenScores:
        """Per predicted token of every sequence (KenLM's full_scores, for many sequences in one call):
        log probability, the order of the n-gram used, OOV flag. A single str or id sequence is one
        sequence."""
        if isinstance(sequences, str) or (isinstance(sequences, np.ndarray) and sequences.ndim == 1
                                          and offsets is None):
            sequences = [sequences]
        tokens, starts = self._flat(sequences, offsets)
        _, _, lp, matched, oov = self._run(tokens, starts, True)
        pad, _ = self._padding()
        keep = np.ones(tokens.size, bool)
        keep[(starts[:-1, None] + np.arange(len(pad))).ravel()] = False  # (every sequence starts with the pad)
        return TokenScores(self._unit(lp[keep], log10), matched[keep], oov[keep],
                           np.concatenate([[0], np.cumsum(np.diff(starts) - len(pad))]).astype(np.int64))

    def logprob_of(self, tokens: ArrayLike, contexts: ArrayLike, *, log10: bool = False) -> NDArray[np.float64]:
        """log P(w | h) for M queries: tokens (M,) and contexts (M, c) of ids (the last n-1 are used; no
        BOS is added)."""
        from .ngram import _ids

        w = _ids(tokens, "tokens")
        h = np.asarray(contexts)
        if h.ndim == 1 and w.size == 1:
            h = h[None]
        if h.dtype.kind not in "iu":
            raise TypeError(f"contexts must hold integer ids, got dtype {h.dtype}")
        if h.ndim != 2 or h.shape[0] != w.size:
            raise ValueError(f"contexts has shape {h.shape}; expected ({w.size}, c)")
        self._check_ids(w, "tokens")
        self._check_ids(h.reshape(-1).astype(np.int64), "contexts")
        c = min(h.shape[1], self.order - 1)
        fast = self._query(w, h[:, h.shape[1] - c:])
        if fast is not None:
            return self._unit(fast, log10)
        rows = np.concatenate([h[:, h.shape[1] - c:].astype(np.uint32), w[:, None].astype(np.uint32)], axis=1)
        starts = np.arange(0, rows.size + 1, c + 1, dtype=np.int64)
        lp, *_ = self._score(rows.reshape(-1), starts, c, False)
        return self._unit(lp, log10)


_HEADER = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)\s*$")
_SECTION = re.compile(r"^\\(\d+)-grams:\s*$")


class ArpaLM(Scoring):
    """A backoff n-gram model read from an ARPA file (KenLM's, SRILM's) or estimated by NgramLM
    (Kneser-Ney). Scores as KenLM does: sequences get one BOS of context and an EOS; words outside the
    vocabulary are <unk> (its probability; -100 when the file has no <unk>, as KenLM).

    Attributes: order, words (id -> word), keys / prob / backoff per order (rank keys, log10 values).
    """

    def __init__(self, words: list[str], keys: list[np.ndarray], prob: list[np.ndarray],
                 backoff: list[np.ndarray], *, unseen: float | None = None,
                 specials: tuple[int | None, int | None, int | None] | None = None, vocab: Any = None,
                 discounts: list[tuple[float, float, float]] | None = None) -> None:
        from .ngram import WordVocab

        self.order = len(keys)
        self.words = list(words)
        self.vocab = vocab if vocab is not None else WordVocab(self.words)
        self.keys, self.prob = keys, [np.ascontiguousarray(p, np.float64) for p in prob]
        self.backoff = [np.ascontiguousarray(b, np.float64) for b in backoff]
        self.discounts = discounts
        if specials is None:
            ids = {w: i for i, w in enumerate(self.words)}
            specials = (ids.get("<s>"), ids.get("</s>"), ids.get("<unk>"))
        self.bos_id, self.eos_id, self.unk_id = specials
        self._unseen = -100.0 if unseen is None else unseen
        self._args: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its arrays (out of band with protocol 5); the scoring tables are rebuilt when used."""
        state = dict(self.__dict__)
        state["_args"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        aligned_state(self, state)

    # --------------------------------------------------------------- Scoring hooks
    def _padding(self):
        return ([self.bos_id] if self.bos_id is not None else []), self.eos_id

    def _check_ids(self, a: np.ndarray, name: str) -> None:
        bad = (a < 0) | (a >= len(self.words))
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(f"{name}[{j}] = {int(a[j])} is not a word id in [0, {len(self.words)})")

    def _c_args(self):
        if self._args is None:
            n = self.order
            orders = [_kernels.ngram_entries(self.keys[k], self.prob[k], self.backoff[k] if k < n - 1 else None)
                      for k in range(n)]
            self._args = (orders, False, 0.0, 0.0, 0.0, self._unseen, -1 if self.unk_id is None else self.unk_id)
        return self._args

    # --------------------------------------------------------------- ARPA
    def counts(self) -> list[int]:
        """Number of n-grams of each order (NaN-probability context entries excluded)."""
        return [int(np.count_nonzero(~np.isnan(p))) for p in self.prob]

    def ngrams(self, k: int) -> NDArray[np.uint32]:
        """(M, k) word ids of order k, lexicographically sorted (context-only entries included)."""
        return ids_of(self.keys, k)

    def to_arpa(self, path: str | os.PathLike[str]) -> None:
        """Write a standard ARPA file: \\data\\ counts, then per order `log10 p<TAB>words[<TAB>log10 backoff]`
        (no backoff column at the top order), lexicographic by word id, numbers with 8 significant digits
        (as lmplz; csrc/README.md, "ARPA files"); the lines are formatted in C."""
        n = self.order
        data = [w.encode("utf-8") for w in self.words]
        words = b"".join(data)
        off = np.zeros(len(data) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, data), np.int64, len(data)), out=off[1:])
        with open(path, "wb") as f:
            f.write(b"\\data\\\n" + "".join(f"ngram {k}={c}\n" for k, c in enumerate(self.counts(), 1)).encode())
            for k in range(1, n + 1):
                f.write(f"\n\\{k}-grams:\n".encode())
                prob = self.prob[k - 1]
                real = ~np.isnan(prob)
                for lo in range(0, prob.size, 1 << 20):  # in blocks: the text of one block at a time
                    hi = min(prob.size, lo + (1 << 20))
                    r = real[lo:hi]
                    f.write(_kernels.arpa_lines(ids_of(self.keys, k, lo, hi), prob[lo:hi],
                                                self.backoff[k - 1][lo:hi] if k < n else None,
                                                None if r.all() else r, words, off))
            f.write(b"\n\\end\\\n")

    @classmethod
    def from_arpa(cls, path: str | os.PathLike[str]) -> ArpaLM:
        """Read an ARPA file. ValueError naming the file and line for anything malformed: a missing or
        inconsistent \\data\\ header, a section out of order, a line that is not `log10p words [backoff]`
        with the section's number of words, a count that does not match the header, a duplicate n-gram."""
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None
        lines = text.splitlines()
        collect = gc.isenabled()
        gc.disable()  # millions of short-lived lists: the collector's passes would cost more than the parse
        try:
            return _parse(lines, str(path))
        finally:
            if collect:
                gc.enable()


def _parse(lines: list[str], name: str) -> ArpaLM:
    def bad(i: int, msg: str) -> ValueError:
        return ValueError(f"{name}:{i + 1}: {msg}")

    i = 0
    while i < len(lines) and lines[i].strip() != "\\data\\":
        i += 1
    if i == len(lines):
        raise ValueError(f"{name}: not an ARPA file (no \\data\\ line)")
    i += 1
    declared: list[int] = []
    while i < len(lines) and lines[i].strip():
        m = _HEADER.match(lines[i].strip())
        if not m:
            raise bad(i, f"expected 'ngram N=count' in the \\data\\ header, got {lines[i]!r}")
        if int(m.group(1)) != len(declared) + 1:
            raise bad(i, f"expected the count of order {len(declared) + 1}, got order {m.group(1)}")
        declared.append(int(m.group(2)))
        i += 1
    if not declared:
        raise bad(i, "the \\data\\ header declares no n-gram counts")
    n = len(declared)
    words: dict[str, int] = {}
    word_list: list[str] = []
    rows: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    backs: list[np.ndarray] = []
    first_line: list[int] = []
    for k in range(1, n + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        sec = _SECTION.match(lines[i].strip()) if i < len(lines) else None
        if sec is None or int(sec.group(1)) != k:
            raise bad(min(i, len(lines) - 1), f"expected the \\{k}-grams: section")
        i += 1
        size = declared[k - 1]
        try:
            ids, p, b = _section_fast(lines[i:i + size], k, k == n, size, words, word_list)
        except (ValueError, KeyError, IndexError):
            ids, p, b = _section_checked(lines, i, k, n, size, words, word_list, bad)
        first_line.append(i)
        i += size
        if i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("\\"):
            raise bad(i, f"the \\{k}-grams: section has more entries than the {size} the header declares")
        rows.append(ids)
        probs.append(p)
        backs.append(b)
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\end\\":
        raise bad(min(i, len(lines) - 1), "expected \\end\\ after the last section")
    # Build rank tables; contexts missing from the file become entries with no probability (NaN) and
    # backoff 0, so lookups pass through them (KenLM does the same).
    idx = [np.arange(r.shape[0], dtype=np.float64) for r in rows]
    try:
        keys, where = build(rows, idx, fill=np.nan)
    except Duplicate as e:
        raise bad(first_line[e.k - 1] + e.row, f"the \\{e.k}-grams: section repeats an n-gram") from None
    prob = []
    back = []
    for k in range(n):
        at = where[k]
        real = ~np.isnan(at)
        pk = np.full(at.size, np.nan)
        bk = np.zeros(at.size)
        pk[real] = probs[k][at[real].astype(np.int64)]
        bk[real] = backs[k][at[real].astype(np.int64)]
        prob.append(pk)
        back.append(bk)
    return ArpaLM(word_list, keys, prob, back)



def _section_fast(body: list[str], k: int, top: bool, size: int, words: dict[str, int],
                  word_list: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One section in bulk: (ids (size, k), log10 p, log10 backoff). Any irregularity raises, and the
    caller reads the section line by line for the error message."""
    if len(body) != size:
        raise ValueError
    rows = [line.split() for line in body]
    widths = set(map(len, rows))
    if not widths <= ({k + 1} if top else {k + 1, k + 2}):
        raise ValueError
    p = np.array([r[0] for r in rows], np.float64)
    b = np.array([r[k + 1] for r in rows] if widths == {k + 2} else
                 [r[k + 1] if len(r) == k + 2 else "0" for r in rows], np.float64) if not top else np.zeros(size)
    if not (np.all(p <= 0) and np.all(b < math.inf)):
        raise ValueError
    if k == 1:
        names = [r[1] for r in rows]
        start = len(word_list)
        words.update(zip(names, range(start, start + size)))
        word_list.extend(names)
        if len(words) != len(word_list):
            raise ValueError  # a repeated unigram: the line-by-line reader names it
        return np.arange(start, start + size, dtype=np.uint32)[:, None], p, b
    flat = np.fromiter(map(words.get, chain.from_iterable(r[1:k + 1] for r in rows), repeat(-1)), np.int64,
                       size * k)
    if flat.size and flat.min() < 0:
        raise ValueError
    return flat.astype(np.uint32).reshape(size, k), p, b


def _section_checked(lines: list[str], i: int, k: int, n: int, size: int, words: dict[str, int],
                     word_list: list[str], bad: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One section line by line, every error naming its line."""
    if k == 1:  # the bulk reader may have added some words
        words.clear()
        word_list.clear()
    ids = np.empty((size, k), np.uint32)
    p = np.empty(size, np.float64)
    b = np.zeros(size, np.float64)
    for j in range(size):
        if i >= len(lines) or not lines[i].strip():
            raise bad(min(i, len(lines) - 1), f"the \\{k}-grams: section has {j} entries; the header declares "
                                              f"{size}")
        parts = lines[i].split()
        if len(parts) not in (k + 1, k + 2) or (k == n and len(parts) != k + 1):
            raise bad(i, f"expected log10p, {k} word(s){', [backoff]' if k < n else ''}; got {lines[i]!r}")
        try:
            p[j] = float(parts[0])
            if len(parts) == k + 2:
                b[j] = float(parts[-1])
        except ValueError:
            raise bad(i, f"not a number in {lines[i]!r}") from None
        if not (p[j] <= 0 and b[j] < math.inf):  # -inf (log10 0) is allowed, as lmplz writes it
            raise bad(i, f"log10 probability must be <= 0 and the backoff a number below +inf, got {lines[i]!r}")
        for c, w in enumerate(parts[1:k + 1]):
            wid = words.get(w)
            if wid is None:
                if k > 1:
                    raise bad(i, f"word {w!r} has no unigram")
                wid = words[w] = len(word_list)
                word_list.append(w)
            elif k == 1:
                raise bad(i, "the \\1-grams: section repeats an n-gram")
            ids[j, c] = wid
        i += 1
    return ids, p, b
