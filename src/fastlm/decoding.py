"""Decoding: filters (top-k, top-p, min-p, typical), penalties, logit bias and masks, classifier-free
guidance, greedy, the fused sampler and beam search.

Logits are (..., V) float16 / float32 / float64 with any leading dims; per-row parameters are scalars or
arrays shaped like the leading dims. Tokens are ranked by probability through their logits (descending,
the lower index first on equal logits), so that probabilities whose float64 values round equal keep
the order of their logits; tokens of probability 0 tie with one another.
A row holding NaN, or no logit above -inf, raises ValueError naming the row. A row holding +inf gives
its +inf entries equal shares of all the probability (the limit of softmax); the other tokens get 0.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import (COMPUTE, INT64_MAX, INT64_MIN, UINT64_MAX, check_out, float_array, int_array, integer, position,
                      python_ints, range_error, real, real_array, rows_in, write_rows)
from ._config import resolve_threads
from .softmax import log_softmax

__all__ = [
    "top_k_filter", "top_p_filter", "min_p_filter", "typical_filter", "top_k_top_p_filter", "apply_penalties",
    "apply_logit_bias",
    "mask_tokens", "cfg_mix", "greedy", "sample", "beam_search", "CachedStep",
]


def _logits(logits, name="logits"):
    a = float_array(logits, name)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (..., V)")
    if a.shape[-1] > 2**31 - 1:
        raise ValueError(f"{name} has V = {a.shape[-1]} entries per row; decoding supports at most 2^31 - 1")
    return a


def _per_row(value, lead, name, dtype, ok=None, valid=""):
    """A scalar or an array broadcastable to the leading dims, as a contiguous 1-D array per row."""
    a = np.asarray(value)
    if a.dtype == object and a.size:  # Python ints beyond NumPy's integer dtypes
        if dtype == np.int64:
            python_ints(a, name, INT64_MIN, INT64_MAX, "int64")
        elif all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in a.reshape(-1)):
            a = real_array(a, name)
    if a.dtype.kind not in ("iu" if dtype == np.int64 else "iuf") or a.dtype == bool:
        raise TypeError(f"{name} must be {'an integer' if dtype == np.int64 else 'a real number'} or an array "
                        f"of them, got dtype {a.dtype}")
    if a.ndim and a.shape != tuple(lead):
        raise ValueError(f"{name} has shape {a.shape}; expected a scalar or the leading shape {tuple(lead)}")
    if a.dtype == np.uint64 and dtype == np.int64 and (a > INT64_MAX).any():
        j = int(np.argmax((a > INT64_MAX).reshape(-1)))
        raise range_error(f"{name}{position(j, a.shape)}", int(a.reshape(-1)[j]), INT64_MIN, INT64_MAX, "int64")
    flat = np.ascontiguousarray(np.broadcast_to(a, lead).reshape(-1), dtype=dtype)
    if ok is not None:
        vals = flat if a.ndim else np.asarray(a, dtype=dtype).reshape(1)  # a scalar is checked with no rows too
        bad = ~ok(vals)
        if bad.any():
            j = int(np.argmax(bad))
            where = position(j, lead) if a.ndim else ""
            raise ValueError(f"{name}{where} = {vals[j]} must be {valid}")
    return flat


def _row_error(err, lead, name="logits"):
    where = position(err.row, lead)
    what = "contains NaN" if err.kind == "nan" else "has no logit above -inf"
    return ValueError(f"{name}{where} (a row of V logits) {what}")


def _min_keep(m):
    return integer(m, "min_tokens_to_keep", lambda v: v >= 1, ">= 1")


def _fill_value(filter_value):
    if isinstance(filter_value, bool) or not isinstance(filter_value, numbers.Real):
        raise TypeError(f"filter_value must be a real number (inf allowed), got {filter_value!r}")
    try:
        fill = float(filter_value)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"filter_value = {filter_value} is beyond the float64 range (use inf)") from None
    if math.isnan(fill):
        raise TypeError(f"filter_value must be a real number (inf allowed), got {filter_value!r}")
    return fill


def _filter(kind, logits, param, name, ok, valid, min_tokens_to_keep, filter_value, out, num_threads):
    a = _logits(logits)
    lead = a.shape[:-1]
    pdtype = np.int64 if kind == "top_k" else np.float64
    par = _per_row(param, lead, name, pdtype, ok, valid)
    keep = _min_keep(min_tokens_to_keep)
    fill = _fill_value(filter_value)
    nt = resolve_threads(num_threads)
    out = np.empty(a.shape, a.dtype) if out is None else check_out(out, a.shape, a.dtype)
    dtype = COMPUTE[a.dtype]
    xr = rows_in(a, dtype)
    try:
        write_rows(out, xr, dtype, lambda y: _kernels.filter_rows(kind, xr, y, par, fill, keep, nt))
    except _kernels.RowError as e:
        raise _row_error(e, lead) from None
    return out


_FILTER_DOC = """
    Parameters
    ----------
    logits : array_like (..., V), float16 / float32 / float64
    {param}
    min_tokens_to_keep : int >= 1
        The top min_tokens_to_keep tokens always stay.
    filter_value : float, default -inf
        Written where a token is filtered out.
    out : ndarray, optional
        logits' shape and dtype; may be logits itself (in place).
    num_threads : int, optional
        Threads over rows (default fastlm.get_num_threads()).

    Returns
    -------
    ndarray of logits' shape and dtype.
"""


def top_k_filter(logits: ArrayLike, k: ArrayLike, *, min_tokens_to_keep: int = 1, filter_value: float = -math.inf,
                 out: NDArray[np.floating[Any]] | None = None,
                 num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Keep the tokens whose logit is >= the k-th largest logit (ties with the k-th value are kept, as
    Hugging Face's TopKLogitsWarper); k <= 0 disables the filter. k is raised to min_tokens_to_keep.
    Sort-free and exact: csrc/README.md, "Decoding: selection".
    """
    return _filter("top_k", logits, k, "k", None, "", min_tokens_to_keep, filter_value, out, num_threads)


def top_p_filter(logits: ArrayLike, p: ArrayLike, *, min_tokens_to_keep: int = 1, filter_value: float = -math.inf,
                 out: NDArray[np.floating[Any]] | None = None,
                 num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Nucleus filter: rank tokens by probability (descending, lower index first on ties) and keep a
    token iff the probability mass ranked strictly above it is < p. p >= 1 keeps every token; p = 0 keeps
    only the top min_tokens_to_keep. Hugging Face's TopPLogitsWarper keeps the same set up to ties (it
    removes the ascending-sorted prefix with cumulative mass <= 1 - p).
    Ranking by probability is ranking by logit (p is increasing in x); tokens of probability 0 (a logit
    more than 745 below the max, where float64 underflows, or any finite logit in a row holding +inf)
    tie with one another, which matters only for min_tokens_to_keep.
    Sort-free and exact up to the float rounding of the weights exp(x - max): the algorithm (candidate
    tiers, and one pass over a guessed band on flat rows) is in csrc/README.md, "Decoding: top-p".
    """
    return _filter("top_p", logits, p, "p", lambda v: (v >= 0) & (v <= 1), "in [0, 1]", min_tokens_to_keep,
                   filter_value, out, num_threads)


def min_p_filter(logits: ArrayLike, min_p: ArrayLike, *, min_tokens_to_keep: int = 1,
                 filter_value: float = -math.inf, out: NDArray[np.floating[Any]] | None = None,
                 num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Keep tokens with p_i >= min_p * max_j p_j (Hugging Face's MinPLogitsWarper); min_p in [0, 1].
    When fewer than min_tokens_to_keep pass, the top ones by probability are kept, ranked as in
    top_p_filter."""
    return _filter("min_p", logits, min_p, "min_p", lambda v: (v >= 0) & (v <= 1), "in [0, 1]",
                   min_tokens_to_keep, filter_value, out, num_threads)


def typical_filter(logits: ArrayLike, mass: ArrayLike, *, min_tokens_to_keep: int = 1,
                   filter_value: float = -math.inf, out: NDArray[np.floating[Any]] | None = None,
                   num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Locally typical sampling's filter, as Hugging Face's TypicalLogitsWarper: rank tokens by
    |-log p_i - H| ascending (H the entropy), keep while the probability ranked before is < mass, plus
    every token tied with the last kept score. mass in (0, 1]."""
    return _filter("typical", logits, mass, "mass", lambda v: (v > 0) & (v <= 1), "in (0, 1]",
                   min_tokens_to_keep, filter_value, out, num_threads)


for _f, _param in [(top_k_filter, "k : int or array of the leading shape"),
                   (top_p_filter, "p : float or array of the leading shape, in [0, 1]"),
                   (min_p_filter, "min_p : float or array of the leading shape, in [0, 1]"),
                   (typical_filter, "mass : float or array of the leading shape, in (0, 1]")]:
    _f.__doc__ += _FILTER_DOC.replace("{param}", _param)  # type: ignore[operator]


def top_k_top_p_filter(logits: ArrayLike, k: ArrayLike, p: ArrayLike, *, temperature: ArrayLike = 1.0,
                       min_tokens_to_keep: int = 1, filter_value: float = -math.inf,
                       out: NDArray[np.floating[Any]] | None = None,
                       num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Temperature, then top-k, then top-p (Hugging Face generate's warpers, in its order) in one pass: the
    kept tokens get logit / temperature (divided in the logits' precision, as torch divides), the others
    filter_value. Equal to top_p_filter(top_k_filter(logits / temperature, k), p) with the ranks taken
    on the logits; one selection over the row and one over the top k instead of passes over the row.
    k <= 0 (off) or k >= V runs those filters one after the other; temperature > 0.
    """
    a = _logits(logits)
    lead = a.shape[:-1]
    K = _per_row(k, lead, "k", np.int64)
    P = _per_row(p, lead, "p", np.float64, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    T = _per_row(temperature, lead, "temperature", np.float64, lambda v: np.isfinite(v) & (v > 0),
                 "a finite number > 0")
    keep = _min_keep(min_tokens_to_keep)
    fill = _fill_value(filter_value)
    out = np.empty(a.shape, a.dtype) if out is None else check_out(out, a.shape, a.dtype)
    dtype = COMPUTE[a.dtype]
    nt = resolve_threads(num_threads)
    if K.size and ((K <= 0) | (K >= a.shape[-1])).any():  # (the fused pass needs a top-k cut)
        t = T.reshape(lead + (1,))
        xr = rows_in(a.astype(np.float64) / t, np.dtype(np.float64))  # the ranks in float64 (no overflow)
        y = np.empty_like(xr)  # NaN where the filter removes a token
        try:
            _kernels.filter_rows("top_k", xr, y, K, math.nan, keep, nt)
            removed = np.isnan(y)
            _kernels.filter_rows("top_p", np.where(removed, -np.inf, xr), y, P, math.nan, keep, nt)
        except _kernels.RowError as e:
            raise _row_error(e, lead) from None
        removed |= np.isnan(y)
        np.copyto(out, np.where(removed.reshape(a.shape), dtype.type(fill), a.astype(dtype) / t.astype(dtype)),
                  casting="unsafe")
        return out
    xr = rows_in(a, dtype)
    try:
        write_rows(out, xr, dtype, lambda y: _kernels.top_k_top_p_rows(xr, y, K, P, T, fill, keep, nt))
    except _kernels.RowError as e:
        raise _row_error(e, lead) from None
    return out


def _history_counts(a, token_history):
    """Per row, the count of each token id in its history (-1 entries ignored): (rows, V) int64."""
    V = a.shape[-1]
    lead = a.shape[:-1]
    h = int_array(token_history, "token_history")
    if h.ndim == 0 or h.shape[:-1] != lead:
        raise ValueError(f"token_history has shape {h.shape}; expected {lead + ('L',)} (logits' leading dims, "
                         f"then the history length)")
    rows = math.prod(lead)
    h2 = h.reshape(rows, h.shape[-1])
    bad = (h2 != -1) & ((h2 < 0) | (h2 >= V))
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        raise ValueError(f"token_history{position(flat, h.shape)} = {h.reshape(-1)[flat]} is not a token id in "
                         f"[0, {V}) nor -1")
    counts = np.zeros((rows, V), np.int64)
    r, c = np.nonzero(h2 != -1)
    np.add.at(counts, (r, h2[r, c]), 1)
    return counts


def _result(a, out):
    return np.empty(a.shape, a.dtype) if out is None else check_out(out, a.shape, a.dtype)


def apply_penalties(logits: ArrayLike, token_history: ArrayLike, *, repetition_penalty: float = 1.0,
                    presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                    out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]:
    """Penalize tokens seen in each row's history (token_history (..., L) ids; -1 entries ignored).

    First Hugging Face's repetition penalty theta, once per distinct seen token:
    logit < 0 ? logit * theta : logit / theta; then OpenAI's presence / frequency penalties:
    logit - count * frequency_penalty - presence_penalty * [count > 0]. repetition_penalty > 0.
    """
    a = _logits(logits)
    theta = real(repetition_penalty, "repetition_penalty", lambda v: v > 0, "a finite number > 0")
    pres = real(presence_penalty, "presence_penalty", lambda v: True, "finite")
    freq = real(frequency_penalty, "frequency_penalty", lambda v: True, "finite")
    counts = _history_counts(a, token_history).reshape(a.shape)
    out = _result(a, out)
    dt = COMPUTE[a.dtype]
    x = a.astype(dt, copy=False)
    seen = counts > 0
    y = np.where(seen, np.where(x < 0, x * dt.type(theta), x / dt.type(theta)), x)
    y = y - (counts * freq + seen * pres).astype(dt)
    np.copyto(out, y, casting="same_kind")
    return out


def apply_logit_bias(logits: ArrayLike, bias: dict[int, float] | tuple[ArrayLike, ArrayLike], *,
                     out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]:
    """Add bias[token] to logits[..., token] in every row. bias: {token_id: value} or (ids, values)."""
    a = _logits(logits)
    V = a.shape[-1]
    ids: Any
    vals: Any
    if isinstance(bias, dict):
        ids, vals = list(bias.keys()), list(bias.values())
    else:
        try:
            ids, vals = bias
        except (TypeError, ValueError):
            raise TypeError("bias must be a dict {token_id: value} or a pair (ids, values)") from None
    ids = int_array(np.asarray(ids, dtype=None if len(ids) else np.int64), "bias ids").reshape(-1)
    vals = real_array(vals, "bias values").reshape(-1)
    if ids.shape != vals.shape:
        raise ValueError(f"bias has {ids.size} ids but {vals.size} values")
    bad = (ids < 0) | (ids >= V)
    if bad.any():
        raise ValueError(f"bias token id {ids[np.argmax(bad)]} is outside [0, {V})")
    add = np.zeros(V, np.float64)
    np.add.at(add, ids, vals)
    out = _result(a, out)
    np.copyto(out, (a.astype(COMPUTE[a.dtype]) + add.astype(COMPUTE[a.dtype])), casting="same_kind")
    return out


def mask_tokens(logits: ArrayLike, *, allowed: ArrayLike | None = None, banned: ArrayLike | None = None,
                out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]:
    """-inf for every token not in `allowed` (when given) and for every token in `banned`."""
    a = _logits(logits)
    V = a.shape[-1]
    keep = np.ones(V, bool)
    for name, ids, value in (("allowed", allowed, False), ("banned", banned, True)):
        if ids is None:
            continue
        ids = int_array(np.asarray(ids, dtype=None if np.size(ids) else np.int64), name).reshape(-1)
        bad = (ids < 0) | (ids >= V)
        if bad.any():
            raise ValueError(f"{name} token id {ids[np.argmax(bad)]} is outside [0, {V})")
        if value:
            keep[ids] = False
        else:
            only = np.zeros(V, bool)
            only[ids] = True
            keep &= only
    out = _result(a, out)
    np.copyto(out, np.where(keep, a, a.dtype.type(-np.inf)))
    return out


def cfg_mix(cond_logits: ArrayLike, uncond_logits: ArrayLike, guidance_scale: float) -> NDArray[np.floating[Any]]:
    """Classifier-free guidance in log-probability space (Hugging Face's unbatched CFG processor):
    log_softmax(uncond) + g * (log_softmax(cond) - log_softmax(uncond)). float16 is mixed in float32
    and rounded back once; rows where the mix is not finite there (logits spanning the float32 range, whose
    log-probabilities or g times their difference overflow) are computed again from the logits in
    float64, then rounded to the dtype."""
    c = _logits(cond_logits, "cond_logits")
    u = _logits(uncond_logits, "uncond_logits")
    if c.shape != u.shape:
        raise ValueError(f"cond_logits has shape {c.shape} but uncond_logits {u.shape}")
    g = real(guidance_scale, "guidance_scale", lambda v: True, "finite")
    work = COMPUTE[c.dtype]
    lc, lu = log_softmax(c.astype(work, copy=False)), log_softmax(u.astype(work, copy=False))
    with np.errstate(over="ignore", invalid="ignore"):
        mix = lu + work.type(g) * (lc - lu)
        bad = ~np.isfinite(mix).all(axis=-1) if mix.ndim else ~np.isfinite(mix)
        if work != np.float64 and bad.any():  # non-finite inputs give the same non-finite mix in float64
            lc64 = log_softmax(c[bad].astype(np.float64))
            lu64 = log_softmax(u[bad].astype(np.float64))
            mix[bad] = lu64 + g * (lc64 - lu64)
    return mix.astype(c.dtype, copy=False)


def greedy(logits: ArrayLike, *, num_threads: int | None = None) -> np.int64 | NDArray[np.int64]:
    """argmax over the last axis (the lowest index on ties), as int64 of the leading shape."""
    a = _logits(logits)
    lead = a.shape[:-1]
    xr = rows_in(a, COMPUTE[a.dtype])
    ids = np.empty(xr.shape[0], np.int64)
    try:
        _kernels.greedy_rows(xr, ids, resolve_threads(num_threads))
    except _kernels.RowError as e:
        raise _row_error(e, lead) from None
    return ids.reshape(lead)[()]


def _seeds(seed, lead):
    if seed is None:
        base = int.from_bytes(os.urandom(8), "little")
        return np.full(math.prod(lead), base, np.uint64)
    s = np.asarray(seed)
    python_ints(s, "seed", 0, UINT64_MAX, "uint64")
    if s.dtype.kind not in "iu" or s.dtype == bool:
        raise TypeError(f"seed must be an integer or an array of integers, got {seed!r}")
    if (s < 0).any():
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    return _per_row(s.astype(np.uint64), lead, "seed", np.uint64)


def sample(logits: ArrayLike, *, temperature: ArrayLike = 1.0, top_k: ArrayLike = 0, top_p: ArrayLike = 1.0,
           min_p: ArrayLike = 0.0, seed: ArrayLike | None = None,
           num_threads: int | None = None) -> np.int64 | NDArray[np.int64]:
    """Draw one token id per row, fused in C: temperature -> top-k -> top-p -> min-p -> draw.

    temperature == 0 or top_k == 1 is greedy. top_k <= 0, top_p = 1 and min_p = 0 disable their
    filters; top-p applies to the top-k distribution renormalized, ranked by logit as top_p_filter
    (at a huge temperature, where every weight rounds to 1, still by logit), min-p relative to the top
    probability (the order of Hugging Face's warpers). Parameters may be per-row arrays.

    Reproducible: with an integer seed (or a per-row array of them), the id drawn for a row depends only
    on (seed, row index, the row's logits and parameters): not on num_threads or on the other rows. The
    generator is counter-based (a 64-bit mix of seed and row index gives a 53-bit uniform u); the token is
    the first, in index order, whose cumulative kept probability exceeds u times the kept mass. seed=None
    draws a fresh seed from os.urandom. Never returns a token whose filtered probability is 0.

    Returns int64 ids of the leading shape (a 0-d value for 1-D logits).
    """
    a = _logits(logits)
    lead = a.shape[:-1]
    T = _per_row(temperature, lead, "temperature", np.float64, lambda v: np.isfinite(v) & ((v == 0) | (v >= 1e-30)),
                 "0 or a finite number >= 1e-30")
    K = _per_row(top_k, lead, "top_k", np.int64)
    P = _per_row(top_p, lead, "top_p", np.float64, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    M = _per_row(min_p, lead, "min_p", np.float64, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    S = _seeds(seed, lead)
    xr = rows_in(a, COMPUTE[a.dtype])
    ids = np.empty(xr.shape[0], np.int64)
    try:
        _kernels.sample_rows(xr, T, K, P, M, S, ids, resolve_threads(num_threads))
    except _kernels.RowError as e:
        raise _row_error(e, lead) from None
    return ids.reshape(lead)[()]


class _Finished:
    """The num_beams best finished hypotheses (Hugging Face's BeamHypotheses)."""

    def __init__(self, num_beams):
        self.num_beams = num_beams
        self.items = []  # (score, order, sequence)

    def add(self, seq, score):
        self.items.append((score, len(self.items), seq))
        self.items.sort(key=lambda t: (-t[0], t[1]))
        del self.items[self.num_beams:]

    def worst(self):
        return self.items[-1][0]

    def full(self):
        return len(self.items) >= self.num_beams


class CachedStep(Protocol):
    """A model stepped with a cache (beam_search's cached form): start() sees the prompts once, each
    step() only the new tokens and where each row comes from."""

    def start(self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]) -> ArrayLike:
        """Next-token logits (B, V) of B prompts, left-padded with 0 to (B, L) (attention_mask: 1 on a
        prompt's tokens)."""

    def step(self, tokens: NDArray[np.int64], beam_idx: NDArray[np.int64]) -> ArrayLike:
        """Next-token logits (R, V) of R beams: row r continues row beam_idx[r] of the previous call (reorder
        the cache by it, as Hugging Face's cache.reorder_cache) with tokens[r] appended."""


def _prompts(prompt_ids: Any, attention_mask: Any) -> tuple[list[NDArray[np.int64]], bool]:
    """(the prompts, whether a batch was given): 1-D -> one prompt; 2-D -> one per row (the entries where
    attention_mask is 1, one contiguous run per row); a list or tuple of 1-D sequences -> one each."""
    if isinstance(prompt_ids, (list, tuple)) and prompt_ids and all(np.ndim(p) == 1 for p in prompt_ids):
        if attention_mask is not None:
            raise ValueError("attention_mask goes with a 2-D prompt_ids array, not a list of prompts")
        return [int_array(p, f"prompt_ids[{i}]") for i, p in enumerate(prompt_ids)], True
    a = int_array(prompt_ids, "prompt_ids")
    if a.ndim == 1:
        if attention_mask is not None:
            raise ValueError("attention_mask goes with a 2-D prompt_ids array")
        return [a], False
    if a.ndim != 2:
        raise ValueError(f"prompt_ids must be 1-D (one prompt), 2-D (a batch) or a list of 1-D prompts; got shape "
                         f"{a.shape}")
    if attention_mask is None:
        return list(a), True
    m = int_array(attention_mask, "attention_mask")
    if m.shape != a.shape:
        raise ValueError(f"attention_mask has shape {m.shape}; prompt_ids has {a.shape}")
    if not np.isin(m, (0, 1)).all():
        bad = np.argwhere(~np.isin(m, (0, 1)))[0]
        raise ValueError(f"attention_mask{list(bad)} is {m[tuple(bad)]}; it must hold 0 and 1")
    starts = np.diff(m, axis=1, prepend=0) == 1
    if (starts.sum(axis=1) > 1).any():
        row = int(np.argmax(starts.sum(axis=1) > 1))
        raise ValueError(f"attention_mask[{row}] has padding between tokens; each row's 1s must be one run")
    return [row[mr.astype(bool)] for row, mr in zip(a, m)], True


def beam_search(step_fn: Callable[[NDArray[np.int64]], ArrayLike] | CachedStep, prompt_ids: ArrayLike, *,
                num_beams: int, max_new_tokens: int, eos_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | Literal["never"] = False, attention_mask: ArrayLike | None = None) -> Any:
    """Beam search with Hugging Face's rules, for one prompt or a batch (csrc/README.md, "Decoding").

    The model is either step_fn(seqs: (R, L) int64) -> logits (R, V), given every running beam's whole
    sequence (prompt + generated) each step, the rows of a batch in one call per prompt length (no
    padding), or a CachedStep (an object with start() and step(), e.g. fastlm.hf.CausalLMStep): start()
    gets the prompts once, left-padded, and each step() only the new tokens and the reorder indices, so
    a KV cache works.

    prompt_ids: a 1-D array (one prompt: returns one result), a 2-D array (a batch; with attention_mask,
    each row's prompt is where the mask is 1: left or right padding) or a list of 1-D prompts. A batch
    returns a list with one result per prompt. Prompts are searched independently (Hugging Face's batch
    semantics): a prompt that is done drops its rows from the next calls.

    Each step scores every running beam's continuations by running sum of log p plus
    log_softmax(logits)[v] (float64) and takes per prompt the best 2 * num_beams (beam, token) pairs (a C
    kernel, ties to the lower beam then token). A candidate ending in eos_id becomes a finished hypothesis
    if it ranks among the first num_beams; the others continue, num_beams at most. A hypothesis scores
    sum of log p over its generated tokens / (generated length, EOS included, prompt excluded) ** length_penalty.
    early_stopping follows Hugging Face: True stops once num_beams hypotheses are finished; False also
    needs that the best running beam (with the current length) cannot beat the worst of them; "never" uses
    the best attainable length (max_new_tokens when length_penalty > 0). At max_new_tokens the running
    beams are scored as hypotheses too. Hugging Face accumulates the sums in float32, fastlm in float64:
    scores agree to float32 rounding, and a near tie can order differently.

    A result is the num_beams best finished hypotheses, best first: a list of (ids, score), ids the full
    sequence (prompt, generated tokens, and the EOS when there is one) as int64.
    """
    num_beams = integer(num_beams, "num_beams", lambda v: v >= 1, ">= 1")
    max_new_tokens = integer(max_new_tokens, "max_new_tokens", lambda v: v >= 1, ">= 1")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    lp = real(length_penalty, "length_penalty", lambda v: True, "finite")
    if eos_id is not None:
        eos_id = integer(eos_id, "eos_id", lambda v: v >= 0, ">= 0")
    cached = hasattr(step_fn, "start") and hasattr(step_fn, "step")
    if not cached and not callable(step_fn):
        raise TypeError(f"step_fn must be a callable or an object with start() and step(), got "
                        f"{type(step_fn).__name__}")
    prompts, batch = _prompts(prompt_ids, attention_mask)
    search = _BeamSearch(step_fn, cached, prompts, int(num_beams), int(max_new_tokens), eos_id, lp, early_stopping)
    results = search.run()
    return results if batch else results[0]


class _BeamSearch:
    """The state of a batched beam search: the running rows (R of them, grouped by prompt in order), their
    generated tokens (R, t), running sums and prompts, and each prompt's finished hypotheses."""

    def __init__(self, model, cached, prompts, num_beams, max_new, eos_id, lp, early_stopping):
        self.model, self.cached, self.prompts = model, cached, prompts
        self.nb, self.max_new, self.eos, self.lp, self.early = num_beams, max_new, eos_id, lp, early_stopping
        self.finished = [_Finished(num_beams) for _ in prompts]
        self.V = None

    def logits(self, rows, gen, src, tok):
        """The model's (R, V) logits for the running rows (checked)."""
        R = rows.size
        if self.cached:
            if src is None:
                L = max((p.size for p in self.prompts), default=0)
                ids = np.zeros((len(self.prompts), L), np.int64)
                mask = np.zeros((len(self.prompts), L), np.int64)
                for i, p in enumerate(self.prompts):
                    ids[i, L - p.size:], mask[i, L - p.size:] = p, 1
                out = float_array(self.model.start(ids, mask), "step_fn.start(...)")
                name = "step_fn.start(input_ids, attention_mask)"
            else:
                out = float_array(self.model.step(tok, src), "step_fn.step(...)")
                name = "step_fn.step(tokens, beam_idx)"
        else:
            name = "step_fn(seqs)"
            lengths = np.array([self.prompts[p].size for p in rows])
            parts = []
            for n in np.unique(lengths):
                sel = np.flatnonzero(lengths == n)
                seqs = np.stack([np.concatenate([self.prompts[rows[r]], gen[r]]) for r in sel])
                got = float_array(self.model(seqs), name)
                if got.ndim != 2 or got.shape[0] != sel.size:
                    raise ValueError(f"{name} returned shape {got.shape}; expected ({sel.size}, V)")
                parts.append((sel, got))
            if len(parts) == 1:
                out = parts[0][1]
            else:
                out = np.empty((R, parts[0][1].shape[1]), np.result_type(*[g for _, g in parts]))
                for sel, got in parts:
                    if got.shape[1] != out.shape[1]:
                        raise ValueError(f"{name} returned {got.shape[1]} columns for some rows and "
                                         f"{out.shape[1]} for others")
                    out[sel] = got
        if out.ndim != 2 or out.shape[0] != R or (self.V is not None and out.shape[1] != self.V):
            raise ValueError(f"{name} returned shape {out.shape}; expected ({R}, {self.V or 'V'})")
        self.V = out.shape[1]
        if self.eos is not None and not 0 <= self.eos < self.V:
            raise ValueError(f"eos_id {self.eos} is outside [0, {self.V})")
        return out, name

    def run(self):
        nb = self.nb
        rows = np.arange(len(self.prompts))  # the prompt of each running row
        gen = np.zeros((rows.size, 0), np.int64)
        sums = np.zeros(rows.size)
        src = tok = None
        for t in range(1, self.max_new + 1):
            if rows.size == 0:
                break
            logits, name = self.logits(rows, gen, src, tok)
            active, group = np.unique(rows, return_index=True)
            group = np.append(group, rows.size).astype(np.int64)
            k = 2 * nb
            try:
                b_idx, toks, sc = _kernels.beam_step(rows_in(logits, COMPUTE[logits.dtype]), sums, k, group)
            except _kernels.RowError as e:
                raise _row_error(e, (rows.size,), name) from None
            keep_src, keep_tok, keep_sum = [], [], []
            for g, p in enumerate(active):
                kept, best = 0, -np.inf
                for rank in range(k):
                    s, b, v = sc[g, rank], b_idx[g, rank], toks[g, rank]
                    if s == -np.inf:
                        break
                    if self.eos is not None and v == self.eos:
                        if rank < nb:
                            self.finished[p].add(np.concatenate([self.prompts[p], gen[b], [v]]), s / t ** self.lp)
                    else:
                        if kept == 0:
                            best = s
                        if t < self.max_new:
                            keep_src.append(b)
                            keep_tok.append(v)
                            keep_sum.append(s)
                        else:
                            self.finished[p].add(np.concatenate([self.prompts[p], gen[b], [v]]), s / t ** self.lp)
                        kept += 1
                    if kept == nb:
                        break
                if t < self.max_new and kept and _done(self.finished[p], best, t, self.lp, self.early, self.max_new):
                    del keep_src[len(keep_src) - kept:], keep_tok[len(keep_tok) - kept:], keep_sum[len(keep_sum) - kept:]
            src = np.array(keep_src, np.int64)
            tok = np.array(keep_tok, np.int64)
            rows, sums = rows[src], np.array(keep_sum)
            gen = np.concatenate([gen[src], tok[:, None]], axis=1)
        return [[(seq, float(score)) for score, _, seq in f.items] for f in self.finished]


def _done(finished, best_sum, t, lp, early_stopping, max_new):
    if not finished.full():
        return False
    if early_stopping is True:
        return True
    length = max_new if early_stopping == "never" and lp > 0 else t
    return finished.worst() >= best_sum / length ** lp
