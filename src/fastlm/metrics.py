"""Evaluation: entropy, KL, perplexity, bits per token / byte, answer-only scoring, multiple choice,
rolling windows. Each function states whose convention it follows."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import COMPUTE, float_array, int_array, integer, normalize_axis, position, real, real_array, rows_in
from ._config import resolve_threads
from .losses import cross_entropy, token_logprobs

__all__ = ["entropy", "kl_divergence", "perplexity", "bits_per_token", "bits_per_byte", "byte_perplexity",
           "word_perplexity", "sequence_logprob", "choose", "rolling_windows"]


def _base(base):
    if base is None:
        return 1.0
    try:
        return math.log(real(base, "base", lambda v: v > 0 and v != 1, ""))
    except (TypeError, ValueError):
        raise ValueError(f"base must be None or a finite number > 0 other than 1, got {base!r}") from None


def _distribution_axis(a, axis, name):
    """The axis of a holding the distribution, normalized; it must exist and be non-empty."""
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        raise ValueError(f"{name} has an empty axis {ax} (shape {a.shape}): no distribution")
    return ax


def _rows_of(a, axis, dtype):
    moved = np.moveaxis(a, axis, -1)
    return moved.shape[:-1], rows_in(moved, dtype)


def entropy(logits: ArrayLike, axis: int = -1, *, base: float | None = None,
            num_threads: int | None = None) -> np.floating[Any] | NDArray[np.floating[Any]]:
    """Shannon entropy of softmax(logits) along `axis`: H = lse(z) - E_p[z], one fused pass per row (no
    probabilities materialized), accumulated in float64; nats, or log base `base`.

    0 log 0 = 0: -inf logits add nothing. NaN in a slice gives NaN; a slice holding +inf or only -inf
    gives NaN (no distribution). Same values as scipy.stats.entropy(softmax(logits)).
    Returns the logits' shape without `axis`, in the logits' float dtype.
    """
    a = float_array(logits, "logits")
    ax = _distribution_axis(a, axis, "logits")
    lb = _base(base)
    lead, xr = _rows_of(a, ax, COMPUTE[a.dtype])
    out = np.empty(xr.shape[0], np.float64)
    _kernels.entropy_rows(xr, out, resolve_threads(num_threads))
    return (out / lb).reshape(lead).astype(a.dtype)[()]


def kl_divergence(p_logits: ArrayLike, q_logits: ArrayLike, axis: int = -1, *, base: float | None = None,
                  num_threads: int | None = None) -> np.floating[Any] | NDArray[np.floating[Any]]:
    """KL(softmax(p_logits) || softmax(q_logits)) along `axis`, fused from the logits in one pass per row:
    E_p[z_p - z_q] - lse(z_p) + lse(z_q).

    Terms with p = 0 add nothing; +inf where some q = 0 < p; clamped at >= 0 (rounding); never NaN from
    -inf entries. scipy.special.rel_entr(p, q).sum() on the probabilities gives the same.
    """
    p = float_array(p_logits, "p_logits")
    q = float_array(q_logits, "q_logits")
    if p.shape != q.shape:
        raise ValueError(f"p_logits has shape {p.shape} but q_logits {q.shape}")
    ax = _distribution_axis(p, axis, "p_logits")
    lb = _base(base)
    dtype = np.result_type(COMPUTE[p.dtype], COMPUTE[q.dtype])
    lead, pr = _rows_of(p, ax, dtype)
    _, qr = _rows_of(q, ax, dtype)
    out = np.empty(pr.shape[0], np.float64)
    _kernels.kl_rows(pr, qr, out, resolve_threads(num_threads))
    return (out / lb).reshape(lead).astype(np.result_type(p.dtype, q.dtype))[()]


def exp_or_inf(v: float) -> float:
    """e^v, and +inf past the float64 range as NumPy gives (math.exp raises OverflowError there)."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def perplexity(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100,
               num_threads: int | None = None) -> float:
    """Pooled perplexity: exp(mean NLL over every non-ignored position) (NaN when there is none). This is
    the token-level perplexity of Hugging Face's evaluate and torchmetrics' Perplexity; for the mean of
    per-sequence perplexities, call it per sequence. +inf when the mean NLL is past e^709."""
    return exp_or_inf(cross_entropy(logits, targets, ignore_index=ignore_index, num_threads=num_threads))


def bits_per_token(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100,
                   num_threads: int | None = None) -> float:
    """Mean NLL over non-ignored positions in bits: cross-entropy / ln 2."""
    return cross_entropy(logits, targets, ignore_index=ignore_index, num_threads=num_threads) / math.log(2)


def _total(total_logprob, count, name):
    t = float(np.sum(real_array(total_logprob, "total_logprob")))
    c = float(np.sum(real_array(count, name)))
    if not c > 0:
        raise ValueError(f"{name} must add up to a positive number, got {c}")
    return t, c


def bits_per_byte(total_logprob: ArrayLike, n_bytes: ArrayLike) -> float:
    """-sum log p / (n_bytes ln 2) (lm-evaluation-harness bits_per_byte): total_logprob in nats and n_bytes
    (UTF-8 bytes of the text) may be scalars or per-document arrays, which are summed (pooled)."""
    t, c = _total(total_logprob, n_bytes, "n_bytes")
    return -t / (c * math.log(2))


def byte_perplexity(total_logprob: ArrayLike, n_bytes: ArrayLike) -> float:
    """exp(-sum log p / n_bytes) (lm-evaluation-harness byte_perplexity), pooled over documents."""
    t, c = _total(total_logprob, n_bytes, "n_bytes")
    return exp_or_inf(-t / c)


def word_perplexity(total_logprob: ArrayLike, n_words: ArrayLike) -> float:
    """exp(-sum log p / n_words) (lm-evaluation-harness word_perplexity), pooled over documents."""
    t, c = _total(total_logprob, n_words, "n_words")
    return exp_or_inf(-t / c)


@overload
def sequence_logprob(logits: ArrayLike, targets: ArrayLike, *, mask: ArrayLike | None = ...,
                     prompt_lengths: ArrayLike | None = ..., ignore_index: int = ...,
                     normalize: Literal["tokens", "chars", "bytes"] | None = ..., lengths: ArrayLike | None = ...,
                     return_is_greedy: Literal[False] = ..., num_threads: int | None = ...) -> NDArray[np.float64]: ...
@overload
def sequence_logprob(logits: ArrayLike, targets: ArrayLike, *, mask: ArrayLike | None = ...,
                     prompt_lengths: ArrayLike | None = ..., ignore_index: int = ...,
                     normalize: Literal["tokens", "chars", "bytes"] | None = ..., lengths: ArrayLike | None = ...,
                     return_is_greedy: Literal[True], num_threads: int | None = ...
                     ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]: ...
@overload
def sequence_logprob(logits: ArrayLike, targets: ArrayLike, *, mask: ArrayLike | None = ...,
                     prompt_lengths: ArrayLike | None = ..., ignore_index: int = ...,
                     normalize: Literal["tokens", "chars", "bytes"] | None = ..., lengths: ArrayLike | None = ...,
                     return_is_greedy: bool = ..., num_threads: int | None = ...
                     ) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.bool_]]: ...
def sequence_logprob(logits: ArrayLike, targets: ArrayLike, *, mask: ArrayLike | None = None,
                     prompt_lengths: ArrayLike | None = None, ignore_index: int = -100,
                     normalize: Literal["tokens", "chars", "bytes"] | None = None, lengths: ArrayLike | None = None,
                     return_is_greedy: bool = False, num_threads: int | None = None
                     ) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-sequence log-likelihood of the answer tokens (lm-evaluation-harness loglikelihood).

    logits (B, T, V) and aligned targets (B, T): logits[b, t] scores targets[b, t] (shift before calling
    for a causal model). Scored positions: t >= prompt_lengths[b] (when given), mask[b, t] true (when
    given) and targets[b, t] != ignore_index. Returns the (B,) float64 sum of log p over them, divided by
    the number of scored tokens (normalize="tokens"; NaN for a sequence with none), or by lengths[b]
    (normalize="chars" / "bytes": the answer's characters or UTF-8 bytes, lm-evaluation-harness acc_norm /
    acc_bytes). With
    return_is_greedy, also (B,) bool: every scored target is the argmax of its logits (lowest index on
    ties). Padding positions excluded by mask or ignore_index do not count, so left and right padding
    give the same results.

    Excluded positions (prompt, mask, ignore_index) are never scored: their logits may hold anything
    (NaN, only -inf) without influence on either result. A scored position whose logits hold NaN or no
    logit above -inf makes its sequence's log-likelihood NaN, as torch's losses; with return_is_greedy
    it raises ValueError naming the position, since such a row has no argmax.
    """
    x = float_array(logits, "logits")
    t = int_array(targets, "targets")
    if x.ndim != 3 or t.shape != x.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and targets (B, T); got {x.shape} and {t.shape}")
    B, T, _ = x.shape
    ignore_index = integer(ignore_index, "ignore_index")
    keep = t != ignore_index
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (B, T):
            raise ValueError(f"mask has shape {m.shape}, expected {(B, T)}")
        keep &= m.astype(bool)
    if prompt_lengths is not None:
        pl = int_array(prompt_lengths, "prompt_lengths")
        if pl.shape != (B,):
            raise ValueError(f"prompt_lengths has shape {pl.shape}, expected ({B},)")
        if (pl < 0).any() or (pl > T).any():
            raise ValueError(f"prompt_lengths must be in [0, {T}]")
        keep &= np.arange(T)[None, :] >= pl[:, None]
    safe = np.where(keep, t, ignore_index)
    lp = token_logprobs(x, safe, ignore_index=ignore_index, num_threads=num_threads).astype(np.float64)
    total = np.where(keep, lp, 0.0).sum(axis=1)
    if normalize == "tokens":
        with np.errstate(invalid="ignore"):  # 0 / 0: no scored token
            total = total / keep.sum(axis=1)
    elif normalize in ("chars", "bytes"):
        if lengths is None:
            raise ValueError(f'normalize="{normalize}" needs lengths (the answers\' {normalize})')
        ln = real_array(lengths, "lengths")
        if ln.shape != (B,):
            raise ValueError(f"lengths has shape {ln.shape}, expected ({B},)")
        if not (ln > 0).all():
            raise ValueError("lengths must be > 0")
        total = total / ln
    elif normalize is not None:
        raise ValueError(f'normalize must be None, "tokens", "chars" or "bytes", got {normalize!r}')
    if not return_is_greedy:
        return total
    return total, _scored_is_greedy(x, t, keep, num_threads)


def _scored_is_greedy(x, t, keep, num_threads):
    """(B,) bool: at every scored position (keep), the target is the argmax of its logits (lowest index on
    ties). Only the scored rows are read: an excluded row may hold anything (NaN, only -inf)."""
    B, T, _ = x.shape
    scored = np.flatnonzero(keep.reshape(-1))
    if scored.size == 0:
        return np.ones(B, bool)
    xr = rows_in(x, COMPUTE[x.dtype])  # (B T, V)
    rows = xr if scored.size == B * T else xr[scored]
    ids = np.empty(rows.shape[0], np.int64)
    try:
        _kernels.greedy_rows(rows, ids, resolve_threads(num_threads))
    except _kernels.RowError as e:
        what = "contains NaN" if e.kind == "nan" else "has no logit above -inf"
        raise ValueError(f"logits{position(int(scored[e.row]), (B, T))} (the logits of a scored position) {what}: "
                         f"return_is_greedy needs its argmax") from None
    hit = np.ones(B * T, bool)
    hit[scored] = ids == t.reshape(-1)[scored]
    return hit.reshape(B, T).all(axis=1)


def choose(loglikelihoods: ArrayLike, *, lengths: ArrayLike | None = None,
           normalize: Literal["chars", "bytes"] | None = None) -> np.intp | NDArray[np.intp]:
    """The chosen choice per question: argmax of loglikelihoods (Q, C) (or (C,)), the first on ties
    (lm-evaluation-harness acc). normalize="chars" / "bytes" divides by lengths (same shape: the choices'
    characters, acc_norm, or UTF-8 bytes, acc_bytes) first. -inf marks a missing choice."""
    ll = real_array(loglikelihoods, "loglikelihoods")
    if ll.ndim not in (1, 2) or ll.shape[-1] == 0:
        raise ValueError(f"loglikelihoods must be (C,) or (Q, C) with C >= 1, got shape {ll.shape}")
    if np.isnan(ll).any():
        raise ValueError("loglikelihoods contains NaN")
    if normalize in ("chars", "bytes"):
        if lengths is None:
            raise ValueError(f'normalize="{normalize}" needs lengths')
        ln = real_array(lengths, "lengths")
        if ln.shape != ll.shape:
            raise ValueError(f"lengths has shape {ln.shape}, expected {ll.shape}")
        if (ln <= 0).any():
            raise ValueError("lengths must be > 0")
        ll = ll / ln
    elif normalize is not None:
        raise ValueError(f'normalize must be None, "chars" or "bytes", got {normalize!r}')
    return np.argmax(ll, axis=-1)[()]


def rolling_windows(n_tokens: int, max_length: int, *, stride: int | None = None) -> NDArray[np.int64]:
    """Windows to score a text of n_tokens with a model of context max_length, every token exactly once.

    Returns (K, 3) int64 rows (start, end, score_from): feed tokens [start, end), score the predictions
    for tokens [score_from, end); the tokens before score_from are context only. Windows begin at
    multiples of stride (default max_length: disjoint windows, lm-evaluation-harness rolling
    loglikelihood without overlap); with stride < max_length each window re-reads max_length - stride
    tokens of context (Hugging Face's strided perplexity). The first token of the text is scored in the
    first window like every other (as in Hugging Face's recipe; lm-evaluation-harness instead prepends an
    end-of-text token as its context).
    """
    n_tokens = integer(n_tokens, "n_tokens", lambda v: v >= 0, ">= 0")
    max_length = integer(max_length, "max_length", lambda v: v >= 1, ">= 1")
    stride = max_length if stride is None else integer(stride, "stride", lambda v: 1 <= v <= max_length,
                                                        f"in [1, max_length = {max_length}]")
    out, prev_end = [], 0
    for begin in range(0, int(n_tokens), int(stride)):
        end = min(begin + int(max_length), int(n_tokens))
        out.append((begin, end, prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return np.array(out, dtype=np.int64).reshape(-1, 3)
