"""N-gram language models with add-alpha (Lidstone) smoothing, counted by C kernels over packed keys.

P_a(w | h) = (c(h, w) + a) / (c(h) + a |V|), with h the last n-1 tokens before w and c(h) = sum_w c(h, w).
A k-gram of ids below 2^bits is packed into one uint64 key (k * bits <= 64), so that keys sort
lexicographically and the key of a k-gram's context is key >> bits. Counting sorts the keys of every
window (radix sort) and run-length encodes them; lookups go through an open-addressing hash index.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, NoReturn, SupportsInt

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import INT64_MAX, INT64_MIN, UINT64_MAX, integer, python_ints, real
from .metrics import exp_or_inf

__all__ = ["count_ngrams", "NgramLM", "byte_tokens", "WordVocab", "BYTE_BOS", "BYTE_EOS", "BYTE_VOCAB"]

BYTE_BOS, BYTE_EOS, BYTE_VOCAB = 256, 257, 258
ID_LIMIT = 2**32  # token ids are uint32: every id is below this, and so is |V| - 1
_VERSION = 1
_MAGIC = b"FASTLM-NGRAM" + _VERSION.to_bytes(4, "big")  # 16 bytes: name, then the format version


def _group_sum(keys, counts):
    """Sorted keys with repeats -> (distinct keys, summed counts)."""
    if keys.size == 0:
        return keys, counts[:0]
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[first], np.add.reduceat(counts, first)


def _bits_for(vocab: int) -> int:
    return max(1, int(vocab - 1).bit_length())


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


def _pack(rows: np.ndarray, bits: int) -> np.ndarray:
    """(M, k) ids -> (M,) uint64 keys."""
    keys = np.zeros(rows.shape[0], np.uint64)
    for j in range(rows.shape[1]):
        keys = (keys << np.uint64(bits)) | rows[:, j].astype(np.uint64)
    return keys


def _unpack(keys: np.ndarray, k: int, bits: int) -> np.ndarray:
    out = np.empty((keys.shape[0], k), np.uint32)
    mask = np.uint64((1 << bits) - 1)
    for j in range(k):
        out[:, k - 1 - j] = (keys >> np.uint64(bits * j)) & mask
    return out


def count_ngrams(tokens: ArrayLike, order: int, *,
                 num_threads: int | None = None) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """All k-grams of a 1-D id array (k = order) and their counts.

    Returns (ngrams (M, order) uint32, counts (M,) int64), lexicographically sorted. The count is a C
    radix sort of packed keys; order * ceil(log2(max id + 1)) must be <= 64. num_threads is accepted for
    the API's uniformity; counting runs on one thread.
    """
    del num_threads
    order = _order(order)
    t = _ids(tokens, "tokens")
    _check_range(t, ID_LIMIT, "tokens")
    if t.size < order:
        return np.zeros((0, order), np.uint32), np.zeros(0, np.int64)
    bits = _bits_for(int(t.max()) + 1)
    if order * bits > 64:
        raise ValueError(f"order {order} with ids up to {int(t.max())} needs {order * bits} bits; at most 64")
    u, c = _kernels.ngram_count_windows(t.astype(np.uint32), np.array([0, t.size], np.int64), [order], bits,
                                        -1)[order]
    return _unpack(u, order, bits), c


def _order(order) -> int:
    return integer(order, "order", lambda v: v >= 1, ">= 1", hi=64, kind="the 64-bit n-gram keys (1 bit per id)")


class _Table:
    """Counts of one order: sorted keys, counts and a hash index; the same for the contexts (key >> bits),
    built when first needed."""

    def __init__(self, keys, counts, bits):
        self.keys, self.counts, self.bits = keys, counts, bits
        self.index = self.ctx = self.ctx_index = None

    def contexts(self):
        """(distinct context keys, c(h) = sum of the counts extending each)."""
        if self.ctx is None:
            self.ctx = _group_sum(self.keys >> np.uint64(self.bits), self.counts)
        return self.ctx

    def lookup(self, queries):
        if self.index is None:
            self.index = _kernels.ngram_index(self.keys)
        return _kernels.ngram_lookup(self.keys, self.counts, *self.index, queries)

    def lookup_ctx(self, queries):
        keys, totals = self.contexts()
        if self.ctx_index is None:
            self.ctx_index = _kernels.ngram_index(keys)
        return _kernels.ngram_lookup(keys, totals, *self.ctx_index, queries)

    def nbytes(self):
        keys, totals = self.contexts()
        return self.keys.nbytes + self.counts.nbytes + keys.nbytes + totals.nbytes


class NgramLM:
    """An add-alpha n-gram language model (Lidstone; alpha = 1 is Laplace).

    Parameters
    ----------
    order : int >= 1
        n: a token is predicted from the n-1 tokens before it.
    alpha : float > 0
        P(w | h) = (c(h, w) + alpha) / (c(h) + alpha |V|).
    vocab_size : int, optional
        |V|; default: the largest id seen + 1 (bos_id and eos_id included).
    bos_id, eos_id : int, optional
        With bos_id each sequence is left-padded with n-1 copies of it (context only: no k-gram ending
        in bos_id is counted, at any order, and it is never predicted). With eos_id one eos_id is
        appended to each sequence and predicted.

    Conventions (those of NLTK's nltk.lm and KenLM where they apply): c(h) is the sum of the counts of
    the n-grams extending h (not the count of h as an (n-1)-gram); an unseen context gives 1/|V|; a
    context shorter than n-1 (a sequence start without BOS padding) uses the counts of its own order;
    perplexity is exp of the mean negative log-probability over the predicted tokens (every token, plus
    one EOS per sequence when eos_id is set).
    """

    def __init__(self, order: int, *, alpha: float = 1.0, vocab_size: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None) -> None:
        self.order = _order(order)
        self.alpha = real(alpha, "alpha", lambda v: v > 0, "a finite number > 0")
        for name, v in (("vocab_size", vocab_size), ("bos_id", bos_id), ("eos_id", eos_id)):
            if v is not None:  # ids are uint32: below 2^32, and |V| at most 2^32
                vocab = name == "vocab_size"
                integer(v, name, lambda x: x >= (1 if vocab else 0), ">= 1" if vocab else ">= 0",
                        hi=ID_LIMIT if vocab else ID_LIMIT - 1, kind="the uint32 token id range")
        for name, v in (("bos_id", bos_id), ("eos_id", eos_id)):
            if v is not None and vocab_size is not None and v >= vocab_size:
                raise ValueError(f"{name} = {v} is not below vocab_size = {vocab_size}")
        self.vocab_size_given = None if vocab_size is None else int(vocab_size)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.max_id = max([-1] + [v for v in (self.bos_id, self.eos_id) if v is not None])
        self.bits = _bits_for(self.vocab_size_given) if self.vocab_size_given else None
        self.tables: dict[int, _Table] = {}  # k -> _Table
        # JSON-serializable extras saved with the model (the command line keeps its unit here)
        self.metadata: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- counting
    @property
    def vocab_size(self) -> int:
        """|V|: vocab_size if given, else the largest id seen + 1."""
        return self.vocab_size_given if self.vocab_size_given is not None else self.max_id + 1

    def _prepare(self, sequences):
        """Checked, padded sequences in one uint32 array: (tokens, starts)."""
        if isinstance(sequences, np.ndarray) and sequences.ndim == 1 and sequences.dtype.kind in "iu":
            raise TypeError("sequences must be an iterable of sequences (wrap a single sequence in a list)")
        pad = self.order - 1 if self.bos_id is not None else 0
        end = 1 if self.eos_id is not None else 0
        seqs = []
        max_id = self.max_id
        for s, seq in enumerate(sequences):
            a = _ids(seq, f"sequences[{s}]")
            _check_range(a, ID_LIMIT if self.vocab_size_given is None else self.vocab_size_given, f"sequences[{s}]")
            if a.size:
                max_id = max(max_id, int(a.max()))
            seqs.append(a)
        lengths = np.array([a.size + pad + end for a in seqs], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.empty(int(starts[-1]), np.uint32)
        for a, lo, hi in zip(seqs, starts[:-1], starts[1:]):
            tokens[lo:lo + pad] = self.bos_id if pad else 0
            tokens[lo + pad:hi - end] = a
            if end:
                tokens[hi - 1] = self.eos_id
        return tokens, starts, max_id

    def _ensure_bits(self):
        need = _bits_for(self.vocab_size)
        if self.order * need > 64:
            raise ValueError(f"order {self.order} with |V| = {self.vocab_size} needs {self.order * need} bits per "
                             f"n-gram key; at most 64 are supported")
        if self.bits is None or need > self.bits:
            if self.bits is not None and self.tables:  # repack what is counted with the wider ids
                for k, t in list(self.tables.items()):
                    self.tables[k] = _Table(_pack(_unpack(t.keys, k, self.bits), need), t.counts, need)
            self.bits = need

    def fit(self, sequences: Iterable[ArrayLike]) -> NgramLM:
        """Count every order 1..n over `sequences` (an iterable of 1-D int arrays or lists), replacing
        any counts held. Returns self."""
        self.tables = {}
        return self.update(sequences)

    def update(self, sequences: Iterable[ArrayLike]) -> NgramLM:
        """Add the counts of more sequences. Returns self."""
        tokens, starts, max_id = self._prepare(sequences)
        seen, self.max_id = self.max_id, max_id
        try:
            self._ensure_bits()
        except ValueError:
            self.max_id = seen  # a rejected update leaves the model as it was
            raise
        skip = -1 if self.bos_id is None else self.bos_id
        n = self.order
        # Count the n-grams; each lower order is their prefixes (one C sort), plus the last window of every
        # sequence, less windows ending in BOS. That needs BOS to be padding only; else count each order.
        derive = self.bos_id is None or int(np.count_nonzero(tokens == self.bos_id)) == (n - 1) * (starts.size - 1)
        orders = [n] if derive else range(1, n + 1)
        batch = _kernels.ngram_count_windows(tokens, starts, orders, self.bits, skip)  # type: ignore[arg-type]
        if derive:
            lengths = np.diff(starts)
            for k in range(n - 1, 0, -1):
                batch[k] = self._prefix_counts(batch[k + 1], tokens, starts, lengths, k)
        for k in range(1, n + 1):
            self._add(k, *batch[k])
        return self

    def _prefix_counts(self, upper, tokens, starts, lengths, k):
        """Counts of the k-grams from those of the (k+1)-grams: every k-window but the last of a sequence
        starts a (k+1)-window, so the prefix sums count them; the last windows are added, and windows
        ending in BOS dropped."""
        keys, counts = upper
        pk, pc = _group_sum(keys >> np.uint64(self.bits), counts)
        ends = starts[1:][lengths >= k]  # the last k-window of each long enough sequence
        if ends.size:
            last = _pack(np.stack([tokens[ends - k + j] for j in range(k)], axis=1), self.bits)
            lk, lc = np.unique(last, return_counts=True)
            pos = np.searchsorted(pk, lk)
            hit = pos < pk.size
            hit[hit] = pk[pos[hit]] == lk[hit]
            pc = pc.copy()
            np.add.at(pc, pos[hit], lc[hit])
            pk = np.insert(pk, pos[~hit], lk[~hit])
            pc = np.insert(pc, pos[~hit], lc[~hit])
        if self.bos_id is not None:
            keep = (pk & np.uint64((1 << self.bits) - 1)) != np.uint64(self.bos_id)
            pk, pc = pk[keep], pc[keep]
        return pk, pc

    def _add(self, k, keys, counts):
        old = self.tables.get(k)
        if old is not None and old.keys.size:
            keys, counts = _merge_counts(old.keys, old.counts, keys, counts)
        self.tables[k] = _Table(keys, counts, self.bits)

    def merge(self, other: "NgramLM") -> "NgramLM":
        """A new model with the counts of both (same order, alpha, vocab_size, bos_id, eos_id)."""
        if not isinstance(other, NgramLM):
            raise TypeError(f"can only merge an NgramLM, got {type(other).__name__}")
        same = ("order", "alpha", "vocab_size_given", "bos_id", "eos_id")
        for name in same:
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot merge models with different {name}: {getattr(self, name)!r} and "
                                 f"{getattr(other, name)!r}")
        out = NgramLM(self.order, alpha=self.alpha, vocab_size=self.vocab_size_given, bos_id=self.bos_id,
                      eos_id=self.eos_id)
        out.max_id = max(self.max_id, other.max_id)
        out._ensure_bits()
        for src in (self, other):
            for k, t in src.tables.items():
                keys = t.keys if src.bits == out.bits else _pack(
                    _unpack(t.keys, k, src.bits), out.bits)  # type: ignore[arg-type]
                out._add(k, keys, t.counts)
        return out

    __add__ = merge

    def count(self, ngram: ArrayLike) -> int:
        """The count of one k-gram (1 <= k <= order)."""
        g = _ids(ngram, "ngram")
        if not 1 <= g.size <= self.order:
            raise ValueError(f"ngram must have 1 to {self.order} ids, got {g.size}")
        t = self.tables.get(g.size)
        if t is None or (g < 0).any() or (g >= 2**self.bits).any():  # type: ignore[operator]
            return 0
        return int(t.lookup(_pack(g[None], self.bits))[0])  # type: ignore[arg-type]

    def counts(self, k: int) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
        """(ngrams (M, k) uint32, counts (M,) int64) of order k, lexicographically sorted."""
        k = integer(k, "k", lo=None, hi=None)
        if not 1 <= k <= self.order:
            raise ValueError(f"k must be in [1, {self.order}], got {k}")
        t = self.tables.get(k)
        if t is None:
            return np.zeros((0, k), np.uint32), np.zeros(0, np.int64)
        return _unpack(t.keys, k, self.bits), t.counts.copy()  # type: ignore[arg-type]

    def nbytes(self) -> int:
        """Bytes held by the count arrays (keys, counts, context keys and totals; hash indexes excluded)."""
        return sum(t.nbytes() for t in self.tables.values())

    # ----------------------------------------------------------------------------------- scoring
    def _counts_for(self, tokens, contexts, one_context=False):
        """c(h, w) and c(h) for query rows: tokens (M,), contexts (M, c) (one_context: all rows share the
        first row's context, whose c(h) is looked up once)."""
        V = self.vocab_size
        w = _ids(tokens, "tokens")
        h = np.asarray(contexts)
        if h.ndim == 1 and w.size == 1:
            h = h[None]
        if h.dtype.kind not in "iu" or h.ndim != 2 or h.shape[0] != w.size:
            if h.dtype.kind not in "iu":
                raise TypeError(f"contexts must hold integer ids, got dtype {h.dtype}")
            raise ValueError(f"contexts has shape {h.shape}; expected ({w.size}, k)")
        _check_range(w, V, "tokens")
        hflat = h.reshape(-1).astype(np.int64)
        _check_range(hflat, V, "contexts")
        k = min(h.shape[1], self.order - 1)
        h = h[:, h.shape[1] - k:].astype(np.uint64)
        t = self.tables.get(k + 1)
        if t is None:
            return np.zeros(w.size, np.int64), np.zeros(w.size, np.int64)
        ctx = _pack(h, self.bits) if k else np.zeros(w.size, np.uint64)
        full = (ctx << np.uint64(self.bits)) | w.astype(np.uint64)
        if not k:
            return t.lookup(full), np.full(w.size, int(t.counts.sum()), np.int64)
        return t.lookup(full), (np.full(w.size, t.lookup_ctx(ctx[:1])[0]) if one_context else t.lookup_ctx(ctx))

    def prob(self, tokens: ArrayLike, contexts: ArrayLike) -> NDArray[np.float64]:
        """P_a(w | h) for M queries: tokens (M,) and contexts (M, k); the last n-1 context ids are used."""
        chw, ch = self._counts_for(tokens, contexts)
        return (chw + self.alpha) / (ch + self.alpha * self.vocab_size)

    def logprob(self, tokens: ArrayLike, contexts: ArrayLike) -> NDArray[np.float64]:
        """Natural log of prob."""
        return np.log(self.prob(tokens, contexts))

    def next_token_distribution(self, context: ArrayLike) -> NDArray[np.float64]:
        """P_a(w | context) for every w in the vocabulary: (V,) float64 summing to 1."""
        c = _ids(context, "context")
        V = self.vocab_size
        chw, ch = self._counts_for(np.arange(V), np.broadcast_to(c, (V, c.size)) if c.size else
                                   np.zeros((V, 0), np.int64), one_context=True)
        return (chw + self.alpha) / (ch + self.alpha * V)

    def _windows(self, sequences):
        """Per sequence: (its ids padded with BOS / EOS as counted, the index of its first predicted token)."""
        pad = self.order - 1
        for s, seq in enumerate(sequences):
            a = _ids(seq, f"sequences[{s}]")
            _check_range(a, self.vocab_size, f"sequences[{s}]")
            full = np.concatenate(([np.full(pad, self.bos_id)] if self.bos_id is not None and pad else []) + [a] + (
                [np.array([self.eos_id])] if self.eos_id is not None else [])).astype(np.int64)
            first = pad if self.bos_id is not None else 0
            yield full, first

    def _score_all(self, sequences):
        """(total log-probability, predicted tokens) over sequences."""
        total, n = 0.0, 0
        for full, first in self._windows(sequences):
            pos = np.arange(first, full.size)
            if pos.size == 0:
                continue
            ctx_len = np.minimum(pos, self.order - 1)
            for L in np.unique(ctx_len):
                sel = pos[ctx_len == L]
                ctx = np.stack([full[sel - L + j] for j in range(L)], axis=1) if L else np.zeros((sel.size, 0),
                                                                                                  np.int64)
                total += float(np.sum(self.logprob(full[sel], ctx)))
            n += pos.size
        return total, n

    def score(self, sequence: ArrayLike) -> float:
        """Natural-log probability of one sequence (its EOS included when eos_id is set)."""
        return self._score_all([sequence])[0]

    def perplexity(self, sequences: Iterable[ArrayLike]) -> float:
        """exp(-sum log p / number of predicted tokens) over sequences (tokens plus one EOS each)."""
        total, n = self._score_all(sequences)
        return exp_or_inf(-total / n) if n else float("nan")

    def generate(self, context: ArrayLike, max_new_tokens: int, *, seed: int | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> NDArray[np.int64]:
        """Sample up to max_new_tokens ids after `context`, stopping after eos_id; fastlm.sample draws
        each token from log P(. | context) (reproducible with an integer seed). Returns int64 ids."""
        from .decoding import sample

        max_new_tokens = integer(max_new_tokens, "max_new_tokens", lambda v: v >= 0, ">= 0")
        ctx = list(_ids(context, "context"))
        _check_range(np.asarray(ctx, np.int64), self.vocab_size, "context")
        if self.bos_id is not None:
            ctx = [self.bos_id] * (self.order - 1) + ctx
        base = int.from_bytes(os.urandom(8), "little") if seed is None else integer(
            seed, "seed", lambda v: v >= 0, ">= 0", hi=UINT64_MAX, kind="uint64")
        out = []
        for t in range(int(max_new_tokens)):
            h = ctx[len(ctx) - (self.order - 1):] if self.order > 1 else []
            logp = np.log(self.next_token_distribution(np.asarray(h, np.int64)))
            if self.bos_id is not None:
                logp[self.bos_id] = -np.inf  # never predicted
            step_seed = (base * 0x9E3779B97F4A7C15 + t) % 2**64
            tok = int(sample(logp, temperature=temperature, top_k=top_k, top_p=top_p, seed=step_seed))
            out.append(tok)
            ctx.append(tok)
            if self.eos_id is not None and tok == self.eos_id:
                break
        return np.array(out, np.int64)

    # ----------------------------------------------------------------------------------- persistence
    @classmethod
    def _from_payload(cls, payload: bytes) -> NgramLM:
        """The model in a checksummed payload (see save), every header field and table validated."""
        head = struct.calcsize("<IIdqqqq")
        order, bits, alpha, vocab, bos, eos, max_id = struct.unpack_from("<IIdqqqq", payload, 0)
        _check_header(order, bits, vocab, bos, eos, max_id)
        try:
            lm = cls(order, alpha=alpha, vocab_size=None if vocab == -1 else vocab,
                     bos_id=None if bos == -1 else bos, eos_id=None if eos == -1 else eos)
        except ValueError as e:  # alpha: the other fields are checked above
            raise ValueError(f"header {e}") from None
        lm.max_id, lm.bits, pos = max_id, bits or None, head
        for k in range(1, order + 1):
            (m,) = struct.unpack_from("<q", payload, pos)
            pos += 8
            if not 0 <= m <= (len(payload) - pos) // 16:
                raise ValueError(f"table of order {k}: size {m} does not fit in the {len(payload) - pos} bytes left")
            keys = np.frombuffer(payload, "<u8", m, pos).astype(np.uint64)
            counts = np.frombuffer(payload, "<i8", m, pos + 8 * m).astype(np.int64)
            pos += 16 * m
            _check_table(k, keys, counts, bits, max_id, bos, vocab)
            if m:
                lm.tables[k] = _Table(keys, counts, bits)
        (size,) = struct.unpack_from("<q", payload, pos)
        if size < 0 or pos + 8 + size != len(payload):
            raise ValueError(f"metadata size {size} does not match the {len(payload) - pos - 8} bytes left")
        meta = json.loads(payload[pos + 8:].decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not an object")
        lm.metadata = meta
        return lm

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model: a versioned little-endian binary format (no pickle).

        Layout: 16-byte magic (b"FASTLM-NGRAM", 0, 0, 0, version); header <IIdqqqq: order, bits, alpha,
        vocab_size or -1, bos_id or -1, eos_id or -1, max_id; then per order k = 1..n: <q count M, M uint64
        keys, M int64 counts; then <q length and that many bytes of UTF-8 JSON (self.metadata); then the
        CRC-32 of everything after the magic (<I).
        """
        body = [struct.pack("<IIdqqqq", self.order, self.bits or 0, self.alpha,
                            -1 if self.vocab_size_given is None else self.vocab_size_given,
                            -1 if self.bos_id is None else self.bos_id, -1 if self.eos_id is None else self.eos_id,
                            self.max_id)]
        for k in range(1, self.order + 1):
            t = self.tables.get(k)
            keys = t.keys if t is not None else np.zeros(0, np.uint64)
            counts = t.counts if t is not None else np.zeros(0, np.int64)
            body += [struct.pack("<q", keys.size), keys.astype("<u8").tobytes(), counts.astype("<i8").tobytes()]
        meta = json.dumps(self.metadata, sort_keys=True).encode("utf-8")
        body += [struct.pack("<q", len(meta)), meta]
        payload = b"".join(body)
        with open(path, "wb") as f:
            f.write(_MAGIC + payload + struct.pack("<I", zlib.crc32(payload)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NgramLM:
        """Read a model written by save. ValueError for a file that is not one (truncated, corrupted,
        foreign or of another version), and for one whose checksum holds but whose header contradicts
        itself or its tables (each field checked against the others and the tables against the header:
        ids up to max_id, below vocab_size, packed in bits, none ending in bos_id; counts > 0 adding up
        within int64), naming the field."""
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
            lm = cls._from_payload(payload)
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed n-gram model ({e})") from None
        return lm


def _check_header(order, bits, vocab, bos, eos, max_id):
    """The header fields of a saved model against one another, as save writes them: ValueError naming
    the first field that contradicts the others."""
    def bad(field, value, rule) -> NoReturn:
        raise ValueError(f"header {field} = {value}: {rule}")

    if not 1 <= order <= 64:
        bad("order", order, "must be in [1, 64]")
    if not (vocab == -1 or 1 <= vocab <= ID_LIMIT):
        bad("vocab_size", vocab, "must be -1 (none) or in [1, 2^32]")
    for field, v in (("bos_id", bos), ("eos_id", eos)):
        if not (v == -1 or 0 <= v < (ID_LIMIT if vocab == -1 else vocab)):
            bad(field, v, f"must be -1 (none) or a token id in [0, {'2^32' if vocab == -1 else vocab})")
    if not max_id >= max(bos, eos, -1):
        bad("max_id", max_id, f"must be >= -1 and >= bos_id ({bos}) and eos_id ({eos})")
    if max_id >= (ID_LIMIT if vocab == -1 else vocab):
        bad("max_id", max_id, f"must be below vocab_size ({vocab})" if vocab != -1 else "must be below 2^32")
    need = _bits_for(vocab if vocab != -1 else max_id + 1)
    if bits != 0 and bits < need:
        bad("bits", bits, f"must be 0 (nothing counted) or at least {need}: the ids below "
                          f"{vocab if vocab != -1 else max_id + 1} take {need} bits")
    if order * bits > 64:
        bad("bits", bits, f"with header order = {order}: {order} ids of {bits} bits do not fit in a 64-bit key")


def _check_table(k, keys, counts, bits, max_id, bos, vocab):
    """Order k's table against the header: keys strictly increasing k-grams of ids <= max_id packed in
    `bits` bits each, none ending in bos_id; counts > 0 whose sum (a context's total) fits in int64.
    ValueError naming the table and the offence."""
    where = f"table of order {k}"
    if keys.size and bits == 0:
        raise ValueError(f"{where} holds {keys.size} n-grams but header bits = 0 (nothing counted)")
    if (keys[1:] <= keys[:-1]).any():  # (np.diff of uint64 keys would wrap around)
        j = int(np.argmax(keys[1:] <= keys[:-1]))
        raise ValueError(f"{where}: keys are not strictly increasing (keys[{j + 1}] = {int(keys[j + 1])} after "
                         f"{int(keys[j])})")
    if (counts <= 0).any():
        j = int(np.argmax(counts <= 0))
        raise ValueError(f"{where}: counts[{j}] = {int(counts[j])} is not > 0")
    if counts.size and float(counts.sum(dtype=np.float64)) >= 2.0**62 and sum(int(c) for c in counts) > INT64_MAX:
        raise ValueError(f"{where}: the counts add up to more than 2^63 - 1")
    if not keys.size:
        return
    if k * bits < 64 and int(keys[-1]) >> (k * bits):
        raise ValueError(f"{where}: key {int(keys[-1])} does not fit in {k} id(s) of {bits} bits")
    ids = _unpack(keys, k, bits)
    if int(ids.max()) > max_id:
        j = int(np.argmax(ids.max(axis=1) > max_id))
        size = "" if vocab == -1 else f" (vocab_size = {vocab})"
        raise ValueError(f"{where}: n-gram {ids[j].tolist()} holds an id above header max_id = {max_id}{size}")
    if bos != -1 and (ids[:, -1] == bos).any():
        j = int(np.argmax(ids[:, -1] == bos))
        raise ValueError(f"{where}: n-gram {ids[j].tolist()} ends in header bos_id = {bos} (never counted)")


def _merge_counts(k1, c1, k2, c2):
    """Union of two sorted key tables, counts added."""
    keys = np.concatenate([k1, k2])
    counts = np.concatenate([c1, c2])
    order = np.argsort(keys, kind="stable")
    return _group_sum(keys[order], counts[order])


# ----------------------------------------------------------------------------------------- text helpers

def byte_tokens(text: str | bytes) -> NDArray[np.int64]:
    """UTF-8 bytes of text (str or bytes) as ids 0..255; BYTE_BOS = 256 and BYTE_EOS = 257 are free for
    bos_id / eos_id (vocab_size BYTE_VOCAB = 258)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, np.uint8).astype(np.int64)


class WordVocab:
    """Whitespace words to ids: words seen fewer than min_count times map to UNK.

    Ids: 0 UNK, 1 BOS, 2 EOS, then the kept words by descending count (ties alphabetical).
    """

    UNK, BOS, EOS = 0, 1, 2

    def __init__(self, words: Iterable[str]) -> None:
        self.words = list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> WordVocab:
        min_count = integer(min_count, "min_count", lambda v: v >= 1, ">= 1")
        c = Counter(w for t in texts for w in t.split())
        kept = sorted((w for w, n in c.items() if n >= min_count), key=lambda w: (-c[w], w))
        return cls(["<unk>", "<s>", "</s>"] + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> NDArray[np.int64]:
        return np.array([self.ids.get(w, self.UNK) for w in text.split()], np.int64)

    def decode(self, ids: Iterable[SupportsInt]) -> str:
        return " ".join(self.words[int(i)] for i in ids)
