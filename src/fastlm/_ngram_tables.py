"""N-gram tables with rank keys (csrc/README.md, "N-gram tables"), shared by the count models (ngram.py),
Kneser-Ney estimation (kneser_ney.py) and backoff models (arpa.py).

Order k is a sorted uint64 array of keys: the key of a k-gram is (the index of its (k-1)-prefix in order
k-1) << 32 | its last id (order 1: the id). Sorting by key is the lexicographic order of the k-grams,
key >> 32 is the parent's index, and every order holds the prefixes of the next (prefix-closed), so any
order and any id below 2^32 fit in 64-bit keys. Counting packs whole k-grams into one key where
k * bits <= 64 (the fast path) and converts; wider ones are counted rank by rank in C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _kernels

LOW = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)


def aligned(x: Any) -> Any:
    """x with every array (also in a list) aligned to its type (arrays unpickled from a byte stream, as
    Dask's, can sit at any offset; the kernels read them as C types)."""
    if isinstance(x, np.ndarray):
        return x if x.flags.aligned else x.copy()
    if isinstance(x, list):
        return [aligned(v) for v in x]
    return x


def aligned_state(obj: Any, state: dict[str, Any]) -> None:
    """__setstate__ of the models: their pickled attributes, arrays aligned."""
    obj.__dict__.update({k: aligned(v) for k, v in state.items()})


def bits_for(vocab: int) -> int:
    return max(1, int(vocab - 1).bit_length())


def pack(rows: np.ndarray, bits: int) -> np.ndarray:
    """(M, k) ids -> (M,) packed uint64 keys (k * bits <= 64)."""
    keys = np.zeros(rows.shape[0], np.uint64)
    for j in range(rows.shape[1]):
        keys = (keys << np.uint64(bits)) | rows[:, j].astype(np.uint64)
    return keys


def parent(keys: np.ndarray) -> np.ndarray:
    return (keys >> S32).astype(np.int64)


def last(keys: np.ndarray) -> np.ndarray:
    return (keys & LOW).astype(np.uint32)


class Index:
    """Hash index over one order's sorted keys, built on first use."""

    __slots__ = ("keys", "_index")

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys
        self._index: tuple[int, np.ndarray] | None = None

    def get(self) -> tuple[int, np.ndarray]:
        if self._index is None:
            self._index = _kernels.ngram_index(self.keys)
        return self._index

    def find(self, queries: np.ndarray) -> np.ndarray:
        """Index of each query key, -1 where absent."""
        return _kernels.ngram_find(*self.get(), np.ascontiguousarray(queries, np.uint64))


def keep_entries(keys: list[np.ndarray], keep: list[np.ndarray]) -> list[np.ndarray]:
    """The tables with only the entries keep[k] marks (a kept entry's parent must be kept), re-ranked."""
    out: list[np.ndarray] = []
    for k, (kk, mask) in enumerate(zip(keys, keep)):
        kk = kk[mask]
        if k:
            remap = (np.cumsum(keep[k - 1]) - 1).astype(np.uint64)
            kk = (remap[parent(kk)] << S32) | (kk & LOW)
        out.append(kk)
    return out


def ids_of(keys: list[np.ndarray], k: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """The (M, k) uint32 ids of entries lo:hi of order k (keys[j] holds order j + 1)."""
    kk = keys[k - 1][lo:hi]
    out = np.empty((kk.size, k), np.uint32)
    out[:, k - 1] = last(kk)
    p = parent(kk)
    for j in range(k - 1, 0, -1):
        up = keys[j - 1][p]
        out[:, j - 1] = last(up)
        p = parent(up)
    return out


def rank_keys(keys: list[np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank keys of (M, k) id rows against orders 1..k-1 in keys, whether every prefix was found)."""
    k = rows.shape[1]
    r = np.zeros(rows.shape[0], np.uint64)
    ok = np.ones(rows.shape[0], bool)
    for j in range(k - 1):
        q = (r << S32) | rows[:, j].astype(np.uint64)
        pos = np.searchsorted(keys[j], q)
        if keys[j].size:
            ok &= (pos < keys[j].size) & (keys[j][np.minimum(pos, keys[j].size - 1)] == q)
        else:
            ok[:] = False
        r = pos.astype(np.uint64)
    return (r << S32) | rows[:, k - 1].astype(np.uint64), ok


class Duplicate(ValueError):
    """build(): order k holds row `row` twice."""

    def __init__(self, k: int, row: int) -> None:
        super().__init__(f"order {k} repeats an n-gram (row {row})")
        self.k, self.row = k, row


def build(rows: list[np.ndarray], values: list[np.ndarray], fill: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rank tables from per order k an (M_k, k) array of distinct id rows and per-row values (sorted with
    them). A prefix missing from the order below is added there with value `fill` (an ARPA file without
    some contexts). Duplicate rows raise Duplicate."""
    n = len(rows)
    rows, values = list(rows), list(values)
    keys: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    k = 1
    while k <= n:
        if k == 1:
            kk = rows[0][:, 0].astype(np.uint64)
        else:
            kk, ok = rank_keys(keys, rows[k - 1])
            if not ok.all():  # add the missing prefixes to order k-1 and build it again
                missing = np.unique(rows[k - 1][~ok][:, : k - 1], axis=0)
                rows[k - 2] = np.concatenate([rows[k - 2], missing])
                values[k - 2] = np.concatenate([values[k - 2], np.full(missing.shape[0], fill, values[k - 2].dtype)])
                del keys[k - 2:], vals[k - 2:]
                k -= 1
                continue
        order = np.argsort(kk, kind="stable")
        kk = kk[order]
        dup = kk[1:] == kk[:-1]
        if dup.any():
            raise Duplicate(k, int(order[int(np.argmax(dup)) + 1]))
        keys.append(kk)
        vals.append(values[k - 1][order])
        k += 1
    return keys, vals


def count(tokens: np.ndarray, starts: np.ndarray, order: int, bits: int, wide: bool | None = None,
          first: tuple[int, int] = (0, 2**32)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rank tables (keys, counts) of orders 1..order over the windows inside each sequence (uint32 tokens
    split at starts) whose first id is in [first[0], first[1]): the range's piece of the whole table, its
    parents counting from 0 (merge() merges such pieces, concat() joins them). Packed keys when
    order * bits <= 64 (wide=None), else counting by ranks."""
    if wide is None:
        wide = order * bits > 64
    lo, hi = first
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    if wide:
        if (lo, hi) == (0, 2**32):
            live = np.arange(tokens.size, dtype=np.uint32)
        else:
            live = np.flatnonzero((tokens >= lo) & (tokens < hi)).astype(np.uint32)
        rank = np.zeros(live.size, np.uint32)
        scratch = np.empty(3 * live.size, np.uint64)  # (memory touched once for all orders)
        n = live.size
        for k in range(1, order + 1):
            u, c, n = _kernels.ngram_count_ranks(tokens, starts, k, live, rank, scratch, n)
            keys.append(u)
            counts.append(c)
        return keys, counts
    # the top order's keys, then each lower order as their prefixes plus the last window of each sequence;
    # the parent of every key of order k + 1 is the run of its prefix, moved past the inserted last windows
    packed: list[Any] = [None] * order
    ranked: list[Any] = [None] * order
    packed[order - 1] = _kernels.ngram_count_windows(tokens, starts, order, bits, lo, hi)
    lengths = np.diff(starts)
    for k in range(order - 1, 0, -1):
        pk, pc, ranked[k] = _kernels.ngram_prefixes(packed[k][0], packed[k][1], bits)
        ends = starts[1:][lengths >= k]
        ends = ends[(tokens[ends - k] >= lo) & (tokens[ends - k] < hi)]
        if ends.size:  # few (one per sequence): added in place, new keys inserted
            lk, lc = np.unique(pack(np.stack([tokens[ends - k + j] for j in range(k)], axis=1), bits),
                               return_counts=True)
            pos = np.searchsorted(pk, lk)
            hit = pos < pk.size
            hit[hit] = pk[pos[hit]] == lk[hit]
            np.add.at(pc, pos[hit], lc[hit])
            new = lk[~hit]
            if new.size:  # runs after an inserted key move up
                run = parent(ranked[k])
                ranked[k] = ((run + np.searchsorted(new, pk)[run]).astype(np.uint64) << S32) | (ranked[k] & LOW)
                pk = np.insert(pk, pos[~hit], new)
                pc = np.insert(pc, pos[~hit], lc[~hit])
        packed[k - 1] = (pk, pc)
    for k in range(1, order + 1):
        keys.append(packed[0][0] if k == 1 else ranked[k - 1])
        counts.append(packed[k - 1][1])
    return keys, counts


def merge(*parts: tuple[list[np.ndarray], list[np.ndarray]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The union of count tables (keys, counts) of the same order, or of the same first-id range of them
    (count(..., first=)), counts added. Per order, one k-way merge in C (at most 64 runs at once) in which
    each run's parents are re-keyed to their merged ranks in the order below (a monotone map: the runs stay
    sorted); where each entry lands is the map of the next order."""
    if len(parts) > 64:
        return merge(*[merge(*parts[i:i + 64]) for i in range(0, len(parts), 64)])
    parts = tuple((aligned(keys), aligned(counts)) for keys, counts in parts)
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    remap: list[Any] = [None] * len(parts)
    n = len(parts[0][0])
    for k in range(n):
        u, c, remap = _kernels.ngram_merge([p[0][k] for p in parts], [p[1][k] for p in parts], remap, k < n - 1)
        keys.append(u)
        counts.append(c)
    return keys, counts


def narrow(table: tuple[list[np.ndarray], list[np.ndarray]]) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """A table (keys, counts) in its narrowest arrays, to ship: per order (the parents as uint32, None for
    order 1; the last ids, uint16 when they all fit, else uint32; the counts in the smallest unsigned type
    that holds them): 7 to 10 bytes an entry instead of 16. concat() joins such tables."""
    out = []
    for k, (kk, cc) in enumerate(zip(*table)):
        ids = kk & LOW
        top = int(cc.max(initial=0))
        out.append((parent(kk).astype(np.uint32) if k else None,
                    ids.astype(np.uint16 if int(ids.max(initial=0)) < 1 << 16 else np.uint32),
                    cc.astype(next(t for t in (np.uint8, np.uint16, np.uint32, np.int64) if top <= np.iinfo(t).max))))
    return out


def concat(shards: list[list[tuple[Any, np.ndarray, np.ndarray]]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One table (keys, counts) from narrow() tables of disjoint, ascending first-id ranges (counted or
    merged pieces): order k's parents move up by the sizes of the earlier shards' order k-1, added as
    the arrays are widened in place."""
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    below = [0] * len(shards)  # per shard, where its order k-1 starts in the joined table
    for k in range(len(shards[0])):
        at = np.cumsum([0] + [s[k][1].size for s in shards])
        kk, cc = np.empty(at[-1], np.uint64), np.empty(at[-1], np.int64)
        for j, s in enumerate(shards):
            parents, ids, c = s[k]
            v = kk[at[j]:at[j + 1]]
            if parents is None:
                v[:] = ids
            else:  # (parents + below) << 32 | ids
                np.add(parents, np.uint64(below[j]), out=v, casting="unsafe")
                np.left_shift(v, S32, out=v)
                np.bitwise_or(v, ids, out=v, casting="unsafe")
            cc[at[j]:at[j + 1]] = c
        below = list(at[:-1])
        keys.append(kk)
        counts.append(cc)
    return keys, counts
