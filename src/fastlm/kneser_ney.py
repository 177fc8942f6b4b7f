"""Interpolated modified Kneser-Ney estimation as KenLM's lmplz does it (csrc/README.md, "Modified
Kneser-Ney"), vectorised over rank tables (_ngram_tables.py).

From raw counts of every order (sequences padded with n-1 BOS, as NgramLM counts them) to log10
probabilities and backoffs of a backoff model:
  * the n-gram set: n-grams holding BOS after their first position are dropped (lmplz collapses the
    padding), the unigrams BOS and UNK are added with count 0;
  * adjusted counts a: raw counts for the top order and for n-grams starting with BOS, else the number
    of distinct words seen before the n-gram (the continuation count N1+(. g));
  * discounts per order from the counts of counts n_1..n_4 of a: Y = n1 / (n1 + 2 n2),
    D_j = j - (j + 1) Y n_{j+1} / n_j (Chen & Goodman eq. 26), each in [0, j], else lmplz's error or,
    with discount_fallback, its fallback (0.5, 1, 1.5);
  * per context h: u(h w) = (a(h w) - D(a(h w))) / sum_x a(h x) and
    gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)) / sum_x a(h x);
  * interpolation: p(w | h) = u(h w) + gamma(h) p(w | h minus its first word), down to the uniform
    1 / |V| (|V| counts UNK and excludes BOS, whose unigram gets probability 1);
  * backoff(h) = gamma(h) for an n-gram that extends to the next order and does not end in UNK or EOS;
  * pruning (lmplz --prune t_1 t_2 ...): an n-gram of order k seen at most t_k times (raw count; the
    special unigrams never) is left out of the model; its context keeps its adjusted count in the
    denominator, and gamma(h) takes the pruned n-grams' adjusted counts whole, so that p still sums to 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels
from ._ngram_tables import S32, Index, keep_entries, last, parent

FALLBACK = (0.5, 1.0, 1.5)


@dataclass
class Backoff:
    """A backoff model's tables: per order k (index k-1) sorted rank keys, log10 probabilities and (below
    the top order) log10 backoffs; the discounts used, per order (D1, D2, D3+)."""
    keys: list[np.ndarray]
    prob: list[np.ndarray]
    backoff: list[np.ndarray]
    discounts: list[tuple[float, float, float]]
    unseen_prob: float  # p of a word with no unigram: gamma of the unigrams / |V|


def discounts(a: np.ndarray, k: int, fallback: bool) -> tuple[float, float, float]:
    """D1, D2, D3+ of order k from its adjusted counts (lmplz's arithmetic, in float64)."""
    n = [int(np.count_nonzero(a == j)) for j in range(5)]
    problem = None
    if any(n[j] == 0 for j in (1, 2, 3)):
        j = next(j for j in (1, 2, 3) if n[j] == 0)
        problem = (f"no {k}-grams with adjusted count {j}, so the Kneser-Ney discounts of order {k} are undefined "
                   f"(small or artificial data?)")
    else:
        y = n[1] / (n[1] + 2.0 * n[2])
        d = tuple(j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3))
        bad = [j for j in (1, 2, 3) if not 0 <= d[j - 1] <= j]
        if not bad:
            return d  # type: ignore[return-value]
        problem = f"the order-{k} discount for adjusted count {bad[0]} is {d[bad[0] - 1]:.6g}, outside [0, {bad[0]}]"
    if not fallback:
        raise ValueError(f"{problem}; pass discount_fallback=True to use lmplz's fallback discounts "
                         f"{FALLBACK}")
    warnings.warn(f"{problem}; using the fallback discounts D1, D2, D3+ = {FALLBACK}", stacklevel=4)
    return FALLBACK


def estimate(keys: list[np.ndarray], counts: list[np.ndarray], *, vocab_size: int, bos: int | None,
             eos: int | None, unk: int | None, discount_fallback: bool = False,
             prune: list[int] | None = None) -> Backoff:
    """The interpolated modified Kneser-Ney backoff model of raw counts (rank tables of orders 1..n).
    prune: per order, n-grams seen at most that many times are left out (lmplz --prune; module docstring)."""
    n = len(keys)
    keys, counts = _kn_set(keys, counts, bos, unk)
    ids1 = last(keys[0])
    pruned: list[Any] = [None] * n if prune is None else [counts[k] <= prune[k] for k in range(n)]
    for special in (bos, eos, unk):  # never pruned
        if special is not None and pruned[0] is not None:
            pruned[0][ids1 == special] = False
    # parent and suffix index of every n-gram (the suffix drops the first word)
    index = [Index(k) for k in keys]
    par: list[Any] = [None] + [parent(keys[k]) for k in range(1, n)]
    suf: list[Any] = [None] * n
    for k in range(1, n):
        w = keys[k] & np.uint64(0xFFFFFFFF)
        if k == 1:
            q = w
        else:
            q = (suf[k - 1][par[k]].astype(np.uint64) << S32) | w
        suf[k] = index[k - 1].find(q)  # (hash probes: a binary search costs a cache miss per step)
    # adjusted counts
    adj = []
    for k in range(n):
        if k == n - 1:
            a = counts[k].copy()
        else:
            a = np.bincount(suf[k + 1], minlength=keys[k].size).astype(np.int64)
            if bos is not None:
                first = _first_ids(keys, k + 1) == bos
                a[first] = counts[k][first]
        adj.append(a)
    disc = [discounts(adj[k], k + 1, discount_fallback) for k in range(n)]
    # u and gamma per order
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray] = []  # gamma of each context of order k, indexed by the context's index
    V = vocab_size - (1 if bos is not None else 0)
    for k in range(n):  # steps 4 and 5, one order at a time in C
        d = (0.0, disc[k][0], disc[k][1], disc[k][2])
        if k == 0:
            p, gamma = _kernels.kn_order(keys[0], True, adj[0], pruned[0], d, None, None, 1.0 / V, 1)
            if bos is not None:
                p[ids1 == bos] = 1.0
        else:
            p, gamma = _kernels.kn_order(keys[k], False, adj[k], pruned[k], d, suf[k], probs[k - 1], 0.0,
                                         keys[k - 1].size)
        probs.append(p)
        gammas.append(gamma)
    # backoffs: gamma of the n-grams that are contexts, 1 otherwise (and for those ending in UNK or EOS)
    backoffs = []
    for k in range(n - 1):
        has = np.bincount(par[k + 1], minlength=keys[k].size) > 0
        b = np.where(has, gammas[k + 1], 1.0)
        lw = last(keys[k])
        for special in (unk, eos):
            if special is not None:
                b[lw == special] = 1.0
        with np.errstate(divide="ignore"):
            backoffs.append(np.log10(b))
    with np.errstate(divide="ignore"):
        logp = [np.minimum(0.0, np.log10(p)) for p in probs]
    if prune is not None:  # the pruned n-grams go (the kept set is closed under prefixes and suffixes)
        keep = [~m for m in pruned]
        keys = keep_entries(keys, keep)
        logp = [v[m] for v, m in zip(logp, keep)]
        backoffs = [v[m] for v, m in zip(backoffs, keep)]
    return Backoff(keys, logp, backoffs, disc, float(gammas[0][0]) / V)


def _first_ids(keys: list[np.ndarray], k: int) -> np.ndarray:
    """The first id of every n-gram of order k."""
    p = keys[k - 1]
    for j in range(k - 1, 0, -1):
        p = keys[j - 1][parent(p)]
    return last(p)


def _kn_set(keys, counts, bos, unk):
    """The n-gram set lmplz estimates: n-grams with BOS after their first word dropped (with the n-grams
    they prefix), unigrams BOS and UNK present (count 0); keys re-ranked."""
    n = len(keys)
    keys, counts = list(keys), list(counts)
    add = np.array([v for v in (bos, unk) if v is not None], np.uint64)
    if add.size:  # insert the missing special unigrams, then move order 2's parents
        new1 = np.union1d(keys[0], add)
        c1 = np.zeros(new1.size, np.int64)
        old_at = np.searchsorted(new1, keys[0])
        c1[old_at] = counts[0]
        if n > 1:
            keys[1] = (old_at[parent(keys[1])].astype(np.uint64) << S32) | (keys[1] & np.uint64(0xFFFFFFFF))
        keys[0], counts[0] = new1, c1
    if bos is None:
        return keys, counts
    keep = [np.ones(keys[0].size, bool)]
    for k in range(1, n):  # BOS at a position >= 1: the last word is BOS, or the parent has one there
        keep.append(keep[k - 1][parent(keys[k])] & (last(keys[k]) != bos))
    return keep_entries(keys, keep), [c[m] for c, m in zip(counts, keep)]


__all__ = ["Backoff", "estimate", "discounts", "FALLBACK"]
