"""N-gram language models: counts of every order in C, add-alpha (Lidstone) or interpolated modified
Kneser-Ney smoothing (as KenLM's lmplz estimates it), ARPA files in and out, and scoring of many
sequences in one C call (csrc/README.md, "N-gram tables", "Modified Kneser-Ney", "N-gram scoring").

Add-alpha: P_a(w | h) = (c(h, w) + a) / (c(h) + a |V|), with h the last n-1 tokens before w and
c(h) = sum_w c(h, w). Kneser-Ney: see fastlm.kneser_ney. Counts live in rank tables (_ngram_tables.py):
any order, any id below 2^32, 64-bit keys.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from typing import Any, NoReturn, SupportsInt

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from . import _ngram_tables as tables
from . import kneser_ney
from ._config import resolve_threads
from ._arrays import INT64_MAX, INT64_MIN, UINT64_MAX, integer, python_ints, real
from .arpa import ArpaLM, Scoring, SequenceScores, TokenScores, gather, layout

__all__ = ["count_ngrams", "NgramLM", "ArpaLM", "load", "byte_tokens", "WordVocab", "ByteVocab", "SequenceScores",
           "TokenScores", "BYTE_BOS", "BYTE_EOS", "BYTE_VOCAB", "MAX_ORDER"]

BYTE_BOS, BYTE_EOS, BYTE_VOCAB = 256, 257, 258
ID_LIMIT = 2**32  # token ids are uint32: every id is below this, and so is |V| - 1
MAX_ORDER = 64
SMOOTHINGS = ("add-alpha", "kneser-ney")
_VERSION = 2
_MAGIC = b"FASTLM-NGRAM" + _VERSION.to_bytes(4, "big")  # 16 bytes: name, then the format version
_HEAD = "<IIdqqqqq"  # order, smoothing (0 add-alpha, 1 kneser-ney), alpha, vocab_size, bos, eos, unk, max_id


def _ids(seq, name: str) -> np.ndarray:
    a = np.asarray(seq)
    python_ints(a, name, INT64_MIN, INT64_MAX, "int64")
    if a.dtype == object or a.dtype.kind not in "iu" or a.dtype == bool:
        if a.size == 0 and a.dtype.kind == "f":  # [] becomes float64
            return np.zeros(0, np.int64)
        raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a.astype(np.int64, copy=False)


def _check_range(a: np.ndarray, vocab, name: str):
    bad = (a < 0) if vocab is None else ((a < 0) | (a >= vocab))
    if bad.any():
        j = int(np.argmax(bad))
        where = f"[0, {vocab})" if vocab is not None else "[0, ...)"
        raise ValueError(f"{name}[{j}] = {int(a[j])} is not a token id in {where}")


def count_ngrams(tokens: ArrayLike, order: int, *,
                 num_threads: int | None = None) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """All k-grams of a 1-D id array (k = order) and their counts.

    Returns (ngrams (M, order) uint32, counts (M,) int64), lexicographically sorted. Any order up to
    MAX_ORDER and any id below 2^32 (csrc/README.md, "N-gram tables"). num_threads is accepted for the
    API's uniformity; counting runs on one thread.
    """
    del num_threads
    order = _order(order)
    t = _ids(tokens, "tokens")
    _check_range(t, ID_LIMIT, "tokens")
    if t.size < order:
        return np.zeros((0, order), np.uint32), np.zeros(0, np.int64)
    bits = tables.bits_for(int(t.max()) + 1)
    keys, counts = tables.count(t.astype(np.uint32), np.array([0, t.size], np.int64), order, bits)
    return tables.ids_of(keys, order), counts[order - 1]


def _prune(prune: Any, order: int) -> list[int] | None:
    """lmplz's pruning thresholds: non-negative, non-decreasing, at most one per order, the last repeated."""
    if prune is None:
        return None
    if isinstance(prune, (int, np.integer)):
        prune = [prune]
    t = [integer(v, f"prune[{i}]", lambda x: x >= 0, ">= 0") for i, v in enumerate(prune)]
    if not t or len(t) > order:
        raise ValueError(f"prune must give 1 to {order} thresholds (one per order), got {len(t)}")
    for i in range(1, len(t)):
        if t[i] < t[i - 1]:
            raise ValueError(f"prune must be non-decreasing (as lmplz: pruning a shorter n-gram than its "
                             f"extensions would break the model), got {t}")
    return None if not any(t) else t + [t[-1]] * (order - len(t))


def _order(order) -> int:
    return integer(order, "order", lambda v: v >= 1, ">= 1", hi=MAX_ORDER, kind="the supported n-gram orders")


class NgramLM(Scoring):
    """An n-gram language model: add-alpha (Lidstone; alpha = 1 is Laplace) or interpolated modified
    Kneser-Ney.

    Parameters
    ----------
    order : int in [1, 64]
        n: a token is predicted from the n-1 tokens before it.
    smoothing : "add-alpha" (default) or "kneser-ney"
        Kneser-Ney is lmplz's estimate (fastlm.kneser_ney): give bos_id and eos_id for sentences as lmplz
        pads them, and unk_id for out-of-vocabulary words.
    alpha : float > 0, default 1.0
        Add-alpha: P(w | h) = (c(h, w) + alpha) / (c(h) + alpha |V|). The command line uses the same default.
    vocab_size : int, optional
        |V|; default: the largest id seen + 1 (bos_id, eos_id and unk_id included).
    bos_id, eos_id, unk_id : int, optional
        With bos_id each sequence is left-padded with n-1 copies of it (context only: no k-gram ending
        in bos_id is counted, at any order, and it is never predicted). With eos_id one eos_id is
        appended to each sequence and predicted. unk_id (Kneser-Ney) is the id of <unk>, which gets the
        interpolated share of a word never seen.
    discount_fallback : bool
        Kneser-Ney on data whose counts of counts leave a discount undefined or out of range: False
        raises ValueError (lmplz's default), True warns and uses lmplz's fallback (0.5, 1, 1.5).
    prune : sequence of int, optional
        Kneser-Ney: per order, n-grams seen at most that many times are left out of the model, as
        lmplz --prune (e.g. (0, 0, 1): singleton trigrams and above); non-decreasing, the last value
        applies to the remaining orders.
    vocab : WordVocab or ByteVocab, optional
        Maps text to ids and back, so that score("text") and generate("prompt") take strings; saved
        with the model.

    Conventions (those of NLTK's nltk.lm and KenLM where they apply): c(h) is the sum of the counts of
    the n-grams extending h (not the count of h as an (n-1)-gram); an unseen context gives 1/|V|; a
    context shorter than n-1 (a sequence start without BOS padding) uses the counts of its own order;
    perplexity is exp of the mean negative log-probability over the predicted tokens (every token, plus
    one EOS per sequence when eos_id is set). Log probabilities are natural logs unless log10=True.
    """

    def __init__(self, order: int, *, smoothing: str = "add-alpha", alpha: float = 1.0,
                 vocab_size: int | None = None, bos_id: int | None = None, eos_id: int | None = None,
                 unk_id: int | None = None, discount_fallback: bool = False, prune: Any = None,
                 vocab: Any = None) -> None:
        self.order = _order(order)
        self.prune = _prune(prune, self.order)
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        self.smoothing = smoothing
        self.alpha = real(alpha, "alpha", lambda v: v > 0, "a finite number > 0")
        for name, v in (("vocab_size", vocab_size), ("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id)):
            if v is not None:  # ids are uint32: below 2^32, and |V| at most 2^32
                is_size = name == "vocab_size"
                integer(v, name, lambda x: x >= (1 if is_size else 0), ">= 1" if is_size else ">= 0",
                        hi=ID_LIMIT if is_size else ID_LIMIT - 1, kind="the uint32 token id range")
        for name, v in (("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id)):
            if v is not None and vocab_size is not None and v >= vocab_size:
                raise ValueError(f"{name} = {v} is not below vocab_size = {vocab_size}")
        if vocab is not None and not hasattr(vocab, "encode"):
            raise TypeError(f"vocab must be a WordVocab or ByteVocab, got {type(vocab).__name__}")
        self.vocab_size_given = None if vocab_size is None else int(vocab_size)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.unk_id = None if unk_id is None else int(unk_id)
        self.discount_fallback = bool(discount_fallback)
        self.vocab = vocab
        self.max_id = max([-1] + [v for v in (self.bos_id, self.eos_id, self.unk_id) if v is not None])
        self._keys: list[np.ndarray] = [np.zeros(0, np.uint64) for _ in range(self.order)]
        self._counts: list[np.ndarray] = [np.zeros(0, np.int64) for _ in range(self.order)]
        self._cache: dict[str, Any] = {}
        # JSON-serializable extras saved with the model (the command line keeps its unit here)
        self.metadata: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its count arrays (out of band with protocol 5), without the indexes and the estimate
        derived from them, which are rebuilt when used."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tables.aligned_state(self, state)

    @classmethod
    def for_words(cls, texts: Iterable[str], order: int, *, min_count: int = 1, **options: Any) -> NgramLM:
        """A model of whitespace words fitted on texts (one sentence or document per item): the vocabulary
        (WordVocab.build: <unk> 0, <s> 1, </s> 2) sets vocab_size, bos_id, eos_id and unk_id, as lmplz
        treats a text file. options: smoothing, alpha, discount_fallback."""
        v, ids, lengths = WordVocab.build_and_encode(texts, min_count=min_count)
        lm = cls(order, vocab_size=len(v), bos_id=v.BOS, eos_id=v.EOS, unk_id=v.UNK, vocab=v, **options)
        return lm._count(ids, lengths)

    from_arpa = staticmethod(ArpaLM.from_arpa)

    # ----------------------------------------------------------------------------------- counting
    @property
    def vocab_size(self) -> int:
        """|V|: vocab_size if given, else the largest id seen + 1."""
        return self.vocab_size_given if self.vocab_size_given is not None else self.max_id + 1

    def _check_ids(self, a: np.ndarray, name: str) -> None:
        _check_range(a, self.vocab_size, name)

    def fit(self, sequences: Iterable[Any]) -> NgramLM:
        """Count every order 1..n over `sequences` (an iterable of 1-D int arrays or lists, or of str with a
        vocab), replacing any counts held. Returns self."""
        self._keys = [np.zeros(0, np.uint64) for _ in range(self.order)]
        self._counts = [np.zeros(0, np.int64) for _ in range(self.order)]
        self._cache = {}
        return self.update(sequences)

    def update(self, sequences: Iterable[Any]) -> NgramLM:
        """Add the counts of more sequences. Returns self."""
        if isinstance(sequences, (str, bytes)) or (
                isinstance(sequences, np.ndarray) and sequences.ndim == 1 and sequences.dtype.kind in "iu"):
            raise TypeError("sequences must be an iterable of sequences (wrap a single sequence in a list)")
        return self._count(*self._gather(sequences))

    def _gather(self, sequences: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids, length of each sequence) of sequences, checked against vocab_size."""
        limit = ID_LIMIT if self.vocab_size_given is None else self.vocab_size_given
        return gather(sequences, self.vocab, lambda a, name: _check_range(a, limit, name))

    def _lay_out(self, flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Checked sequences as counting reads them: (uint32 ids with each sequence's BOS padding and EOS,
        where each padded sequence starts, the largest id of the model and the sequences)."""
        pad = [self.bos_id] * (self.order - 1) if self.bos_id is not None else []
        tokens, starts = layout(flat, lengths, pad, self.eos_id)
        return tokens, starts, max(self.max_id, int(flat.max()) if flat.size else -1)

    def _count_laid_out(self, tokens: np.ndarray, starts: np.ndarray, max_id: int, first: tuple[int, int] = (0, 2**32)
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The count tables of a layout's k-grams whose first id is in [first[0], first[1]) (tables.count)."""
        keys, counts = tables.count(tokens, starts, self.order, tables.bits_for(max(max_id + 1, 2)), first=first)
        if self.bos_id is not None:  # k-grams ending in BOS stay as prefixes, with count 0
            for k in range(self.order):
                counts[k][tables.last(keys[k]) == self.bos_id] = 0
        return keys, counts

    def _count(self, flat: np.ndarray, lengths: np.ndarray) -> NgramLM:
        """Add the counts of checked sequences (all ids, length of each)."""
        tokens, starts, max_id = self._lay_out(flat, lengths)
        keys, counts = self._count_laid_out(tokens, starts, max_id)
        self.max_id = max_id
        if self._keys[0].size:
            keys, counts = tables.merge((self._keys, self._counts), (keys, counts))
        self._keys, self._counts, self._cache = keys, counts, {}
        return self

    def merge(self, other: NgramLM) -> NgramLM:
        """A new model with the counts of both (same order, smoothing, alpha, vocab_size and special ids)."""
        self._check_mergeable(other)
        out = self._like()
        out.max_id = max(self.max_id, other.max_id)
        out._keys, out._counts = tables.merge((self._keys, self._counts), (other._keys, other._counts))
        return out

    __add__ = merge

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, NgramLM):
            raise TypeError(f"can only merge an NgramLM, got {type(other).__name__}")
        for name in ("order", "smoothing", "alpha", "vocab_size_given", "bos_id", "eos_id", "unk_id"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot merge models with different {name}: {getattr(self, name)!r} and "
                                 f"{getattr(other, name)!r}")

    def _like(self) -> NgramLM:
        return NgramLM(self.order, smoothing=self.smoothing, alpha=self.alpha, vocab_size=self.vocab_size_given,
                       bos_id=self.bos_id, eos_id=self.eos_id, unk_id=self.unk_id,
                       discount_fallback=self.discount_fallback, prune=self.prune, vocab=self.vocab)

    def count(self, ngram: ArrayLike) -> int:
        """The count of one k-gram (1 <= k <= order)."""
        g = _ids(ngram, "ngram")
        if not 1 <= g.size <= self.order:
            raise ValueError(f"ngram must have 1 to {self.order} ids, got {g.size}")
        if (g < 0).any() or (g >= ID_LIMIT).any():
            return 0
        j = int(self._find(g[None])[0])
        return int(self._counts[g.size - 1][j]) if j >= 0 else 0

    def counts(self, k: int) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
        """(ngrams (M, k) uint32, counts (M,) int64) of order k, lexicographically sorted."""
        k = integer(k, "k", lo=None, hi=None)
        if not 1 <= k <= self.order:
            raise ValueError(f"k must be in [1, {self.order}], got {k}")
        c = self._counts[k - 1]
        seen = c > 0
        return tables.ids_of(self._keys, k)[seen], c[seen]

    def num_ngrams(self) -> list[int]:
        """The number of distinct counted n-grams of each order."""
        return [int(np.count_nonzero(c)) for c in self._counts]

    def nbytes(self) -> int:
        """Bytes held by the count tables (keys and counts; indexes and estimates excluded)."""
        return sum(k.nbytes + c.nbytes for k, c in zip(self._keys, self._counts))

    def _find(self, rows: np.ndarray) -> np.ndarray:
        """The index of each (M, k) id row in order k, found along its prefixes (one probe per id); -1 where
        a prefix or the row is absent."""
        r = np.zeros(rows.shape[0], np.int64)
        for j in range(rows.shape[1]):
            key = (np.maximum(r, 0).astype(np.uint64) << tables.S32) | rows[:, j].astype(np.uint64)
            r = np.where(r >= 0, self._index(j).find(key), -1)
        return r

    def _totals(self, k: int) -> np.ndarray:
        """c(h) of every entry h of order k: the sum of the counts of the (k+1)-grams it prefixes."""
        cache = self._cache.setdefault("totals", {})
        if k not in cache:
            cache[k] = np.bincount(tables.parent(self._keys[k]), self._counts[k],
                                   minlength=self._keys[k - 1].size).astype(np.int64)
        return cache[k]

    def _index(self, k: int) -> tables.Index:
        idx = self._cache.setdefault("index", {})
        if k not in idx:
            idx[k] = tables.Index(self._keys[k])
        return idx[k]

    # ----------------------------------------------------------------------------------- Kneser-Ney
    def backoff_model(self) -> ArpaLM:
        """The Kneser-Ney estimate as a backoff model (ArpaLM; estimated once per set of counts)."""
        if self.smoothing != "kneser-ney":
            raise ValueError("backoff_model() and to_arpa() need smoothing='kneser-ney' (add-alpha is not a "
                             "backoff model)")
        if "kn" not in self._cache:
            if not self._counts[0].size:
                raise ValueError("the model has no counts: fit it first")
            est = kneser_ney.estimate(self._keys, self._counts, vocab_size=self.vocab_size, bos=self.bos_id,
                                      eos=self.eos_id, unk=self.unk_id, discount_fallback=self.discount_fallback,
                                      prune=self.prune)
            unseen = float(np.log10(est.unseen_prob))
            self._cache["kn"] = ArpaLM(self._words(), est.keys, est.prob, est.backoff, unseen=unseen,
                                       specials=(self.bos_id, self.eos_id, self.unk_id), vocab=self.vocab,
                                       discounts=est.discounts)
        return self._cache["kn"]

    def _words(self) -> list[str]:
        words = getattr(self.vocab, "words", None)
        if words is not None and len(words) == self.vocab_size:
            return list(words)
        names = {self.bos_id: "<s>", self.eos_id: "</s>", self.unk_id: "<unk>"}
        return [names.get(i, str(i)) for i in range(self.vocab_size)]

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """Kneser-Ney discounts (D1, D2, D3+) per order."""
        return list(self.backoff_model().discounts or [])

    def to_arpa(self, path: str | os.PathLike[str]) -> None:
        """Write the Kneser-Ney model as an ARPA file (ArpaLM.to_arpa). Words are the vocab's, else the ids."""
        self.backoff_model().to_arpa(path)

    # ----------------------------------------------------------------------------------- scoring
    def _padding(self):
        if self.smoothing == "kneser-ney":
            return self.backoff_model()._padding()
        return [self.bos_id] * (self.order - 1) if self.bos_id is not None else [], self.eos_id

    def _c_args(self):
        if self.smoothing == "kneser-ney":
            return self.backoff_model()._c_args()
        if "c" not in self._cache:
            n = self.order  # values: c(entry), and c(h) with h = the entry (the total of the n-grams extending it)
            orders = [_kernels.ngram_entries(self._keys[k], self._counts[k], self._totals(k + 1) if k + 1 < n else None)
                      for k in range(n)]
            self._cache["c"] = (orders, True, self.alpha, float(self.vocab_size), float(self._counts[0].sum()), 0.0,
                                -1)
        return self._cache["c"]

    def _query(self, w: np.ndarray, h: np.ndarray) -> np.ndarray | None:
        """Add-alpha: the n-gram h w and its context h found along their prefixes (one probe per id), then
        ln (c(h w) + a) - ln (c(h) + a |V|)."""
        if self.smoothing != "add-alpha":
            return None
        c = h.shape[1]
        ctx = self._find(h) if c else np.zeros(w.size, np.int64)
        full = np.full(w.size, -1, np.int64)
        ok = ctx >= 0
        full[ok] = self._index(c).find((ctx[ok].astype(np.uint64) << tables.S32) | w[ok].astype(np.uint64))
        chw = np.zeros(w.size)
        chw[full >= 0] = self._counts[c][full[full >= 0]]
        ch = np.zeros(w.size)
        if c:
            ch[ok] = self._totals(c)[ctx[ok]]
        else:
            ch[:] = self._counts[0].sum()
        return np.log(chw + self.alpha) - np.log(ch + self.alpha * self.vocab_size)

    def prob(self, tokens: ArrayLike, contexts: ArrayLike) -> NDArray[np.float64]:
        """P(w | h) for M queries: tokens (M,) and contexts (M, k); the last n-1 context ids are used."""
        return np.exp(self.logprob(tokens, contexts))

    def logprob(self, tokens: ArrayLike, contexts: ArrayLike, *, log10: bool = False) -> NDArray[np.float64]:
        """log P(w | h) (natural unless log10) for M queries, as prob."""
        return self.logprob_of(tokens, contexts, log10=log10)

    def next_token_distribution(self, context: ArrayLike) -> NDArray[np.float64]:
        """P(w | context) for every w in the vocabulary: (V,) float64 (sums to 1; with Kneser-Ney, BOS gets
        0 and the rest sums to 1)."""
        c = _ids(context, "context")
        V = self.vocab_size
        p = self.prob(np.arange(V), np.broadcast_to(c, (V, c.size)) if c.size else np.zeros((V, 0), np.int64))
        if self.smoothing == "kneser-ney" and self.bos_id is not None:
            p[self.bos_id] = 0.0
        return p

    def generate(self, context: Any, max_new_tokens: int, *, seed: int | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> Any:
        """Sample up to max_new_tokens ids after `context`, stopping after eos_id; fastlm.sample draws each
        token from log P(. | context) (reproducible with an integer seed). Returns int64 ids, or the text
        (context included) when context is a str. top_k counts ties as the sampler does: on a smoothing
        floor (add-alpha's unseen words share one probability) the tied floor ids are kept together."""
        from .decoding import sample

        max_new_tokens = integer(max_new_tokens, "max_new_tokens", lambda v: v >= 0, ">= 0")
        text = isinstance(context, str)
        ctx = list(self._encode(context, "context"))
        pad, _ = self._padding()
        ctx = list(pad) + ctx
        base = int.from_bytes(os.urandom(8), "little") if seed is None else integer(
            seed, "seed", lambda v: v >= 0, ">= 0", hi=UINT64_MAX, kind="uint64")
        out: list[int] = []
        for t in range(int(max_new_tokens)):
            h = ctx[len(ctx) - (self.order - 1):] if self.order > 1 else []
            with np.errstate(divide="ignore"):
                logp = np.log(self.next_token_distribution(np.asarray(h, np.int64)))
            for never in (self.bos_id, self.unk_id if self.smoothing == "kneser-ney" else None):
                if never is not None:
                    logp[never] = -np.inf  # never predicted
            step_seed = (base * 0x9E3779B97F4A7C15 + t) % 2**64
            tok = int(sample(logp, temperature=temperature, top_k=top_k, top_p=top_p, seed=step_seed))
            out.append(tok)
            ctx.append(tok)
            if self.eos_id is not None and tok == self.eos_id:
                break
        if text:
            words = [i for i in out if i != self.eos_id]
            return (context + self.vocab.joiner + self.vocab.decode(words)) if words else context
        return np.array(out, np.int64)

    # ----------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model: a versioned little-endian binary format (no pickle).

        Layout: 16-byte magic (b"FASTLM-NGRAM", 0, 0, 0, version); header <IIdqqqqq: order, smoothing
        (0 add-alpha, 1 kneser-ney), alpha, vocab_size, bos_id, eos_id, unk_id (-1: none), max_id; then
        per order k = 1..n: <q count M, M uint64 rank keys, M int64 counts; then <q length and that many
        bytes of UTF-8 JSON (metadata, the vocabulary, discount_fallback); then the CRC-32 of everything
        after the magic (<I).
        """
        def opt(v):
            return -1 if v is None else v

        body = [struct.pack(_HEAD, self.order, SMOOTHINGS.index(self.smoothing), self.alpha,
                            opt(self.vocab_size_given), opt(self.bos_id), opt(self.eos_id), opt(self.unk_id),
                            self.max_id)]
        for keys, counts in zip(self._keys, self._counts):
            body += [struct.pack("<q", keys.size), keys.astype("<u8").tobytes(), counts.astype("<i8").tobytes()]
        extra = {"metadata": self.metadata, "discount_fallback": self.discount_fallback, "prune": self.prune,
                 "vocab": None if self.vocab is None else self.vocab.to_json()}
        meta = json.dumps(extra, sort_keys=True).encode("utf-8")
        body += [struct.pack("<q", len(meta)), meta]
        payload = b"".join(body)
        with open(path, "wb") as f:
            f.write(_MAGIC + payload + struct.pack("<I", zlib.crc32(payload)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NgramLM:
        """Read a model written by save. ValueError for a file that is not one (truncated, corrupted,
        foreign or of another version), and for one whose checksum holds but whose header contradicts
        itself or its tables (each field checked against the others and the tables against the header:
        keys strictly increasing with parents in the order below, ids up to max_id and below
        vocab_size, counts > 0 except the prefixes ending in bos_id (0), adding up within int64), naming
        the field."""
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < len(_MAGIC) + 4 or data[:12] != _MAGIC[:12]:
            raise ValueError(f"{path}: not a fastlm n-gram model")
        version = int.from_bytes(data[12:16], "big")
        if version != _VERSION:
            raise ValueError(f"{path}: n-gram model format version {version}; this fastlm reads version {_VERSION}")
        payload, crc = data[16:-4], struct.unpack("<I", data[-4:])[0]
        if zlib.crc32(payload) != crc:
            raise ValueError(f"{path}: n-gram model is truncated or corrupted (checksum mismatch)")
        try:
            return cls._from_payload(payload)
        except (struct.error, ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed n-gram model ({e})") from None

    @classmethod
    def _from_payload(cls, payload: bytes) -> NgramLM:
        """The model in a checksummed payload (see save), every header field and table validated."""
        order, smooth, alpha, vocab, bos, eos, unk, max_id = struct.unpack_from(_HEAD, payload, 0)
        _check_header(order, smooth, vocab, bos, eos, unk, max_id)
        try:
            lm = cls(order, smoothing=SMOOTHINGS[smooth], alpha=alpha, vocab_size=None if vocab == -1 else vocab,
                     bos_id=None if bos == -1 else bos, eos_id=None if eos == -1 else eos,
                     unk_id=None if unk == -1 else unk)
        except ValueError as e:  # alpha: the other fields are checked above
            raise ValueError(f"header {e}") from None
        lm.max_id, pos = max_id, struct.calcsize(_HEAD)
        for k in range(1, order + 1):
            (m,) = struct.unpack_from("<q", payload, pos)
            pos += 8
            if not 0 <= m <= (len(payload) - pos) // 16:
                raise ValueError(f"table of order {k}: size {m} does not fit in the {len(payload) - pos} bytes left")
            keys = np.frombuffer(payload, "<u8", m, pos).astype(np.uint64)
            counts = np.frombuffer(payload, "<i8", m, pos + 8 * m).astype(np.int64)
            pos += 16 * m
            _check_table(k, keys, counts, lm._keys[k - 2].size if k > 1 else 1, max_id, bos)
            lm._keys[k - 1], lm._counts[k - 1] = keys, counts
        (size,) = struct.unpack_from("<q", payload, pos)
        if size < 0 or pos + 8 + size != len(payload):
            raise ValueError(f"metadata size {size} does not match the {len(payload) - pos - 8} bytes left")
        extra = json.loads(payload[pos + 8:].decode("utf-8"))
        if not isinstance(extra, dict) or not isinstance(extra.get("metadata"), dict):
            raise ValueError("metadata is not an object")
        lm.metadata = extra["metadata"]
        lm.discount_fallback = bool(extra.get("discount_fallback", False))
        lm.prune = _prune(extra.get("prune"), lm.order)
        lm.vocab = _vocab_from_json(extra.get("vocab"))
        return lm


def _check_header(order, smooth, vocab, bos, eos, unk, max_id):
    """The header fields of a saved model against one another, as save writes them: ValueError naming
    the first field that contradicts the others."""
    def bad(field, value, rule) -> NoReturn:
        raise ValueError(f"header {field} = {value}: {rule}")

    if not 1 <= order <= MAX_ORDER:
        bad("order", order, f"must be in [1, {MAX_ORDER}]")
    if not 0 <= smooth < len(SMOOTHINGS):
        bad("smoothing", smooth, "must be 0 (add-alpha) or 1 (kneser-ney)")
    if not (vocab == -1 or 1 <= vocab <= ID_LIMIT):
        bad("vocab_size", vocab, "must be -1 (none) or in [1, 2^32]")
    for field, v in (("bos_id", bos), ("eos_id", eos), ("unk_id", unk)):
        if not (v == -1 or 0 <= v < (ID_LIMIT if vocab == -1 else vocab)):
            bad(field, v, f"must be -1 (none) or a token id in [0, {'2^32' if vocab == -1 else vocab})")
    if not max_id >= max(bos, eos, unk, -1):
        bad("max_id", max_id, f"must be >= -1 and >= bos_id ({bos}), eos_id ({eos}) and unk_id ({unk})")
    if max_id >= (ID_LIMIT if vocab == -1 else vocab):
        bad("max_id", max_id, f"must be below vocab_size ({vocab})" if vocab != -1 else "must be below 2^32")


def _check_table(k, keys, counts, parents, max_id, bos):
    """Order k's table against the header and the order below: keys strictly increasing rank keys whose
    parent index is below `parents` (the size of order k-1; order 1 has parent 0), last ids <= max_id;
    counts > 0, or 0 for the n-grams ending in bos_id; their sum within int64. ValueError naming the
    table and the offence."""
    where = f"table of order {k}"
    if (keys[1:] <= keys[:-1]).any():  # (np.diff of uint64 keys would wrap around)
        j = int(np.argmax(keys[1:] <= keys[:-1]))
        raise ValueError(f"{where}: keys are not strictly increasing (keys[{j + 1}] = {int(keys[j + 1])} after "
                         f"{int(keys[j])})")
    if not keys.size:
        return
    par, lw = tables.parent(keys), tables.last(keys)
    if int(par[-1]) >= parents:
        raise ValueError(f"{where}: key {int(keys[-1])} names prefix {int(par[-1])} of {parents} in the order below")
    if int(lw.max()) > max_id:
        j = int(np.argmax(lw > max_id))
        raise ValueError(f"{where}: key {int(keys[j])} ends in id {int(lw[j])} above header max_id = {max_id}")
    zero_ok = (lw == bos) if bos != -1 else np.zeros(keys.size, bool)
    wrong = (counts < 0) | ((counts == 0) & ~zero_ok) | ((counts != 0) & zero_ok)
    if wrong.any():
        j = int(np.argmax(wrong))
        rule = "0 (it ends in bos_id)" if zero_ok[j] else "> 0"
        raise ValueError(f"{where}: counts[{j}] = {int(counts[j])} is not {rule}")
    if float(counts.sum(dtype=np.float64)) >= 2.0**62 and sum(int(c) for c in counts) > INT64_MAX:
        raise ValueError(f"{where}: the counts add up to more than 2^63 - 1")


# ----------------------------------------------------------------------------------------- text helpers

def byte_tokens(text: str | bytes) -> NDArray[np.int64]:
    """UTF-8 bytes of text (str or bytes) as ids 0..255; BYTE_BOS = 256 and BYTE_EOS = 257 are free for
    bos_id / eos_id (vocab_size BYTE_VOCAB = 258)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, np.uint8).astype(np.int64)


class ByteVocab:
    """UTF-8 bytes as ids 0..255, BOS 256, EOS 257 (byte_tokens)."""

    BOS, EOS, UNK = BYTE_BOS, BYTE_EOS, None
    joiner = ""

    def __len__(self) -> int:
        return BYTE_VOCAB

    def encode(self, text: str | bytes) -> NDArray[np.int64]:
        return byte_tokens(text)

    def encode_many(self, texts: list[str | bytes], *, pre: Iterable[int] = (),
                    post: int | None = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(all ids, ids per text) in one pass, each text's ids between the ids `pre` and `post`."""
        data = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
        flat = np.frombuffer(b"".join(data), np.uint8).astype(np.int64)
        lengths = np.fromiter(map(len, data), np.int64, len(data))
        pre = list(pre)
        if not pre and post is None:
            return flat, lengths
        tokens, starts = layout(flat, lengths, pre, post)
        return tokens.astype(np.int64), np.diff(starts)

    def decode(self, ids: Iterable[SupportsInt]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "bytes"}


class WordVocab:
    """Words to ids: a word is a maximal run of non-space bytes (the ASCII spaces " \\t\\n\\r\\v\\f"
    separate words, as in KenLM; csrc/README.md, "Words"); words seen fewer than min_count times map to
    UNK; <s>, </s> and <unk> in a text are separators, as lmplz --skip_symbols reads them.

    Ids: 0 UNK, 1 BOS, 2 EOS, then the kept words by descending count (ties in code point order).
    """

    UNK, BOS, EOS = 0, 1, 2
    SPECIAL = ("<unk>", "<s>", "</s>")
    joiner = " "

    def __init__(self, words: Iterable[str]) -> None:
        self.words = list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}
        self._table: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"words": self.words}  # (the C word table is rebuilt when first used)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["words"])  # type: ignore[misc]

    @classmethod
    def build(cls, texts: Iterable[str | bytes], min_count: int = 1) -> WordVocab:
        return cls.build_and_encode(texts, min_count)[0]

    @classmethod
    def build_and_encode(cls, texts: Iterable[str | bytes], min_count: int = 1
                         ) -> tuple[WordVocab, NDArray[np.int64], NDArray[np.int64]]:
        """The vocabulary of texts and their ids (all ids, words per text), from one pass in C."""
        min_count = integer(min_count, "min_count", lambda v: v >= 1, ">= 1")
        table = _kernels.words_new()
        buf, off = _joined(texts)
        ids, lengths = _kernels.words_encode(table, buf, off, True, -1)
        data, woff, counts = _kernels.words_export(table)
        words = [data[woff[i]:woff[i + 1]].decode("utf-8", errors="replace") for i in range(counts.size)]
        vocab, remap = cls._from_counts(words, counts, min_count)
        ids = remap[ids]
        drop = ids < 0
        if drop.any():
            lengths = lengths - np.bincount(np.repeat(np.arange(lengths.size), lengths)[drop], minlength=lengths.size)
            ids = ids[~drop]
        return vocab, ids, lengths

    @classmethod
    def from_counts(cls, words: list[str], counts: ArrayLike, min_count: int = 1) -> WordVocab:
        """The vocabulary of distinct words seen counts[i] times each (what build gives on their text)."""
        min_count = integer(min_count, "min_count", lambda v: v >= 1, ">= 1")
        return cls._from_counts(words, np.asarray(counts, np.int64), min_count)[0]

    @classmethod
    def _from_counts(cls, words: list[str], counts: np.ndarray, min_count: int) -> tuple[WordVocab, np.ndarray]:
        """(vocabulary, the id of each word, -1 for the special ones): the words seen min_count times or
        more, by descending count, ties in code point order, after the specials."""
        special = np.array([w in cls.SPECIAL for w in words], bool)
        keep = (counts >= min_count) & ~special
        order = np.flatnonzero(keep)
        if order.size:
            names = np.array([words[i].encode("utf-8") for i in order.tolist()])
            order = order[np.lexsort((names, -counts[order]))]
        remap = np.full(counts.size, cls.UNK, np.int64)
        remap[special] = -1
        remap[order] = np.arange(3, 3 + order.size)
        return cls(list(cls.SPECIAL) + [words[i] for i in order.tolist()]), remap

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str | bytes) -> NDArray[np.int64]:
        return self.encode_many([text])[0]

    def encode_many(self, texts: Iterable[str | bytes], *, pre: Iterable[int] = (),
                    post: int | None = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(all ids, ids per text) in one C pass, each text's word ids between the ids `pre` and `post` (a
        model's BOS padding and EOS); words not in the vocabulary are UNK."""
        if self._table is None:
            table = _kernels.words_new()
            _kernels.words_add(table, [w.encode("utf-8") for w in self.words])
            ids = np.arange(len(self.words), dtype=np.int64)
            for special in self.SPECIAL:
                if special in self.ids:
                    ids[self.ids[special]] = -1
            if _kernels.words_size(table) != len(self.words):
                raise ValueError("the vocabulary repeats a word")
            _kernels.words_set_ids(table, ids)
            self._table = table
        buf, off = _joined(texts)
        return _kernels.words_encode(self._table, buf, off, False, self.UNK, resolve_threads(None), list(pre),
                                     -1 if post is None else post)

    def decode(self, ids: Iterable[SupportsInt]) -> str:
        return " ".join(self.words[int(i)] for i in ids)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "words", "words": self.words}


def _joined(texts: Iterable[str | bytes]) -> tuple[bytes, NDArray[np.int64]]:
    """UTF-8 of every text back to back, and the n + 1 offsets of the texts."""
    data = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
    off = np.zeros(len(data) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, data), np.int64, len(data)), out=off[1:])
    return b"".join(data), off


def load(path: str | os.PathLike[str]) -> NgramLM | ArpaLM:
    """A model file: NgramLM.load for a fastlm model, ArpaLM.from_arpa otherwise (by its first bytes)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return NgramLM.load(path) if head.startswith(b"FASTLM-NGRAM") else ArpaLM.from_arpa(path)


def _vocab_from_json(v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, dict) or v.get("kind") not in ("bytes", "words"):
        raise ValueError(f"vocabulary is not a saved vocabulary: {str(v)[:60]}")
    if v["kind"] == "bytes":
        return ByteVocab()
    words = v.get("words")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError("vocabulary words are not a list of strings")
    return WordVocab(words)
