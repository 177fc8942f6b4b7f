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
from typing import Any, Literal

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
    "mask_tokens", "cfg_mix", "greedy", "sample", "beam_search",
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


def beam_search(step_fn: Callable[[NDArray[np.int64]], ArrayLike], prompt_ids: ArrayLike, *, num_beams: int,
                max_new_tokens: int, eos_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | Literal["never"] = False) -> list[tuple[NDArray[np.int64], float]]:
    """Beam search over a model given as step_fn(seqs: (B, L) int64) -> logits (B, V).

    Each step scores every running beam's continuations by running sum of log p plus
    log_softmax(logits)[v] and takes the best 2 * num_beams (beam, token) pairs (a C kernel, ties to the
    lower beam then token). A candidate ending in eos_id becomes a finished hypothesis if it ranks among
    the first num_beams; the others continue, num_beams at most. A hypothesis scores
    sum of log p over its generated tokens / (generated length, EOS included, prompt excluded) ** length_penalty.
    early_stopping follows Hugging Face: True stops once num_beams hypotheses are finished; False also
    needs that no running beam can still beat the worst of them (with the current length); "never" uses
    the best attainable length (max_new_tokens when length_penalty > 0). At the end the running beams are
    scored as hypotheses too.

    Returns the num_beams best finished hypotheses, best first: a list of (ids, score), ids the full
    sequence (prompt, generated tokens, and the EOS when there is one) as int64.
    """
    num_beams = integer(num_beams, "num_beams", lambda v: v >= 1, ">= 1")
    max_new_tokens = integer(max_new_tokens, "max_new_tokens", lambda v: v >= 1, ">= 1")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    lp = real(length_penalty, "length_penalty", lambda v: True, "finite")
    if eos_id is not None:
        eos_id = integer(eos_id, "eos_id", lambda v: v >= 0, ">= 0")
    prompt = int_array(prompt_ids, "prompt_ids").reshape(-1)
    beams = [prompt]
    sums = np.zeros(1)
    finished = _Finished(int(num_beams))
    V = None
    for t in range(1, int(max_new_tokens) + 1):
        seqs = np.stack(beams)
        logits = float_array(step_fn(seqs), "step_fn(seqs)")
        if logits.ndim != 2 or logits.shape[0] != len(beams) or (V is not None and logits.shape[1] != V):
            raise ValueError(f"step_fn returned shape {logits.shape}; expected ({len(beams)}, V)")
        V = logits.shape[1]
        if eos_id is not None and not 0 <= eos_id < V:
            raise ValueError(f"eos_id {eos_id} is outside [0, {V})")
        k = min(2 * int(num_beams), logits.size)
        try:
            b_idx, tok, sc = _kernels.beam_step(rows_in(logits, COMPUTE[logits.dtype]), sums, k)
        except _kernels.RowError as e:
            raise _row_error(e, (len(beams),), "step_fn(seqs)") from None
        new_beams, new_sums = [], []
        for rank in range(k):
            if sc[rank] == -np.inf:
                break
            seq = np.append(beams[b_idx[rank]], tok[rank])
            if eos_id is not None and tok[rank] == eos_id:
                if rank < num_beams:
                    finished.add(seq, sc[rank] / t ** lp)
            else:
                new_beams.append(seq)
                new_sums.append(sc[rank])
            if len(new_beams) == num_beams:
                break
        best = sc[0] if k else -np.inf
        beams, sums = new_beams, np.array(new_sums)
        if not beams or _done(finished, best, t, lp, early_stopping, int(max_new_tokens)):
            beams = []
            break
    for seq, s in zip(beams, sums):
        finished.add(seq, s / int(max_new_tokens) ** lp)
    return [(seq, float(score)) for score, _, seq in finished.items]


def _done(finished, best_sum, t, lp, early_stopping, max_new):
    if not finished.full():
        return False
    if early_stopping is True:
        return True
    length = max_new if early_stopping == "never" and lp > 0 else t
    return finished.worst() >= best_sum / length ** lp
