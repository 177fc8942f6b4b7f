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
           "word_perplexity", "sequence_logprob", "choose", "rolling_windows", "causal_targets",
           "score_continuations", "loglikelihood"]


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


def _mask_of(attention_mask: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    if attention_mask is None:
        return np.ones(shape, bool)
    m = np.asarray(attention_mask)
    if m.shape != shape:
        raise ValueError(f"attention_mask has shape {m.shape}, expected input_ids' {shape}")
    if m.dtype != bool and (m.dtype.kind not in "iu" or ((m != 0) & (m != 1)).any()):
        raise ValueError("attention_mask must hold 0 / 1 (or bool)")
    m = m.astype(bool)
    runs = np.diff(np.pad(m.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    if ((runs == 1).sum(axis=1) > 1).any():
        b = int(np.argmax((runs == 1).sum(axis=1) > 1))
        raise ValueError(f"attention_mask[{b}] has padding between real tokens (only left or right padding)")
    return m


def causal_targets(input_ids: ArrayLike, attention_mask: ArrayLike | None = None, *,
                   ignore_index: int = -100) -> NDArray[np.int64]:
    """The targets of a causal LM's logits, shifted once: targets[b, t] = input_ids[b, t + 1] where positions
    t and t + 1 are both real tokens (attention_mask 1; every position without a mask), else ignore_index
    (the last position always). logits[b, t] of a model fed input_ids predicts the token after t, so
    cross_entropy(logits, targets) and token_logprobs need no further shift. Left padding (0 0 1 1 1) and
    right padding (1 1 1 0 0) both work: no pad is a target and no pad's logits score. Hugging Face's
    models shift `labels` themselves: pass them input_ids there, not these targets (which would shift
    twice). ValueError for a real token equal to ignore_index, or padding between real tokens."""
    ids = int_array(input_ids, "input_ids")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {ids.shape}")
    ignore_index = integer(ignore_index, "ignore_index")
    m = _mask_of(attention_mask, ids.shape)
    if (m & (ids == ignore_index)).any():
        b, t = np.argwhere(m & (ids == ignore_index))[0]
        raise ValueError(f"input_ids[{b}, {t}] = {ignore_index} is ignore_index: choose another ignore_index")
    out = np.full(ids.shape, ignore_index, np.int64)
    both = m[:, :-1] & m[:, 1:]
    out[:, :-1] = np.where(both, ids[:, 1:], ignore_index)
    return out


def score_continuations(logits: ArrayLike, input_ids: ArrayLike, context_lengths: ArrayLike, *,
                        attention_mask: ArrayLike | None = None,
                        normalize: Literal["tokens", "chars", "bytes"] | None = None,
                        lengths: ArrayLike | None = None,
                        num_threads: int | None = None) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """lm-evaluation-harness loglikelihood requests, a batch at once: (log p of each continuation, is_greedy).

    Row b of input_ids holds a request's context tokens then its continuation tokens (padded left or right,
    attention_mask), context_lengths[b] >= 1 of them context; logits (B, T, V) are the model's for
    input_ids. As lm-evaluation-harness, the continuation is what follows the context text, its leading
    space included (tokenize context and continuation separately, or the whole and split where the
    context's tokens end), and an empty context is an end-of-text token (so that the first continuation
    token has a logit). Returns the sum of log p over the continuation's tokens (normalize: as
    sequence_logprob) and whether every one of them was the argmax of its logits (is_greedy). The shift is
    done here: logits[b, t] scores input_ids[b, t + 1]."""
    ids = int_array(input_ids, "input_ids")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {ids.shape}")
    m = _mask_of(attention_mask, ids.shape)
    c = int_array(context_lengths, "context_lengths")
    if c.shape != (ids.shape[0],):
        raise ValueError(f"context_lengths has shape {c.shape}, expected ({ids.shape[0]},)")
    real_len = m.sum(axis=1)
    if ((c < 1) | (c > real_len)).any():
        b = int(np.argmax((c < 1) | (c > real_len)))
        raise ValueError(f"context_lengths[{b}] = {int(c[b])} must be in [1, {int(real_len[b])}] (the row's real "
                         f"tokens; an empty context is an end-of-text token)")
    if (m & (ids < 0)).any():
        b, t = np.argwhere(m & (ids < 0))[0]
        raise ValueError(f"input_ids[{b}, {t}] = {int(ids[b, t])} is not a token id (>= 0)")
    targets = causal_targets(ids, m, ignore_index=-1)
    first = np.argmax(m, axis=1)  # the row's first real token
    pos = np.arange(ids.shape[1])[None, :]
    scored = pos + 1 >= (first + c)[:, None]  # logits at t score token t + 1: the continuation's
    return sequence_logprob(logits, targets, mask=scored, ignore_index=-1, normalize=normalize, lengths=lengths,
                            return_is_greedy=True, num_threads=num_threads)


def loglikelihood(logits: ArrayLike, input_ids: ArrayLike, context_lengths: ArrayLike, *,
                  attention_mask: ArrayLike | None = None, num_threads: int | None = None) -> list[tuple[float, bool]]:
    """score_continuations as lm-evaluation-harness's LM.loglikelihood returns it: one (log p, is_greedy)
    per request."""
    lp, greedy = score_continuations(logits, input_ids, context_lengths, attention_mask=attention_mask,
                                     num_threads=num_threads)
    return [(float(a), bool(b)) for a, b in zip(lp, greedy)]


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


def rolling_windows(n_tokens: int, max_length: int, *, stride: int | None = None,
                    prefix_token: bool = False) -> NDArray[np.int64]:
    """Windows to score a text of n_tokens with a causal model of context max_length, every token once.

    Returns (K, 6) int64 rows (input_start, input_end, logit_start, logit_end, target_start, target_end):
    feed tokens[input_start:input_end] (the max_length tokens before the window's last target, fewer at
    the start; position -1 is the prefix token), then logits[logit_start:logit_end] of that window score
    tokens[target_start:target_end], the first logit the first target, with no further shift. A
    window's logit j predicts the token after its input token j, so a window scores up to max_length
    targets, the last one just past its input.

    Which tokens are scored: with prefix_token=True the text is read after one prefix token (an
    end-of-text or BOS id, fed at position -1) and every token is scored, the first one from the prefix
    alone (lm-evaluation-harness's loglikelihood_rolling, which prepends its end-of-text token); without
    it the first token has nothing before it and is not scored (n_tokens - 1 targets). Windows begin at
    multiples of stride (default max_length: lm-evaluation-harness's windows, each input the
    max_length tokens before its targets); with stride < max_length every target after the first window
    sees at least max_length - stride tokens of context (Hugging Face's strided perplexity recipe).

    Where they differ: Hugging Face's recipe feeds tokens[begin:end] with labels masked to the last
    end - prev_end positions and lets the model shift them, so it never scores a window's first token:
    the text's first token, and with stride == max_length the first token of every window (a target
    lost per window, while its nll is still weighted by trg_len); fastlm's windows overlap by the one
    token needed to score it. lm-evaluation-harness scores every token as fastlm does with
    prefix_token=True and stride=max_length.
    """
    n_tokens = integer(n_tokens, "n_tokens", lambda v: v >= 0, ">= 0")
    max_length = integer(max_length, "max_length", lambda v: v >= 1, ">= 1")
    stride = max_length if stride is None else integer(stride, "stride", lambda v: 1 <= v <= max_length,
                                                        f"in [1, max_length = {max_length}]")
    if not isinstance(prefix_token, (bool, np.bool_)):
        raise TypeError(f"prefix_token must be a bool, got {prefix_token!r}")
    p = int(prefix_token)
    n = int(n_tokens) + p  # positions of the read stream: the prefix (when given), then the text
    out, begin, first = [], 0, 1  # first: the next target
    while first < n:
        end = min(n, begin + int(max_length) + 1)  # targets [first, end)
        lo = max(0, end - 1 - int(max_length))  # the input: the max_length tokens before the last target
        out.append((lo - p, end - 1 - p, first - lo - 1, end - lo - 1, first - p, end - p))
        first = end
        begin = min(begin + int(stride), first - 1)  # (the next input holds the token before its target)
    return np.array(out, dtype=np.int64).reshape(-1, 6)
