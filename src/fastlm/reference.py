"""Pure-NumPy float64 reference of every fastlm function: the executable specification.

Written the plain way (materialized probabilities, one-hot targets, explicit formulas), sharing no code
with the kernels. Results are float64 (reductions as Python floats); shapes follow the fast functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, SupportsInt, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad", "token_logprobs",
    "top_k_filter", "top_p_filter", "min_p_filter", "typical_filter", "greedy", "sample_distribution",
    "apply_penalties", "apply_logit_bias", "mask_tokens", "cfg_mix", "beam_search", "beam_search_bruteforce",
    "count_ngrams", "NgramLM", "kneser_ney", "backoff_logprob10", "entropy", "kl_divergence", "perplexity", "bits_per_token", "bits_per_byte",
    "byte_perplexity", "word_perplexity", "sequence_logprob", "choose", "rolling_windows", "reliability_bins",
    "expected_calibration_error", "calibration_from_logits", "mean_nll_at_temperature", "fit_temperature",
]


def _moved(x, axis):
    return np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)


def log_softmax(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0) -> NDArray[np.float64]:
    """z - max - log(sum(exp(z - max))), z = x / T; a slice with NaN, +inf or only -inf gives NaN."""
    z = _moved(x, axis) / temperature
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        shifted = z - m
        out = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def softmax(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0) -> NDArray[np.float64]:
    """exp(z - max) / sum(exp(z - max)), z = x / T."""
    z = _moved(x, axis) / temperature
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(z - m)
        out = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


def logsumexp(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0) -> np.float64 | NDArray[np.float64]:
    """log(sum(exp(z))), z = x / T: -inf for an empty or all -inf slice, +inf with +inf, NaN with NaN."""
    z = _moved(x, axis) / temperature
    if z.shape[-1] == 0:
        return np.full(z.shape[:-1], -np.inf)[()]
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.log(np.sum(np.exp(z - m), axis=-1)) + m[..., 0]
    nan = np.isnan(z).any(axis=-1)
    return np.where(nan, np.nan, out)[()]


def _transformed(logits, softcap, temperature):
    x = np.asarray(logits, dtype=np.float64)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    return x / temperature


def _check_targets(targets, V, ignore_index):
    t = np.asarray(targets).astype(np.int64)
    bad = (t != ignore_index) & ((t < 0) | (t >= V))
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), t.shape)
        raise ValueError(f"targets{list(i)} = {t[i]} is not a class index in [0, {V}) nor ignore_index")
    return t


@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: Literal["mean", "sum"] = ..., label_smoothing: float = ..., z_loss: float = ...,
                  softcap: float | None = ..., temperature: float = ...) -> float: ...
@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: Literal["none"], label_smoothing: float = ..., z_loss: float = ...,
                  softcap: float | None = ..., temperature: float = ...) -> NDArray[np.float64]: ...
@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: str = ..., label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                  temperature: float = ...) -> float | NDArray[np.float64]: ...
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                  softcap: float | None = None, temperature: float = 1.0) -> float | NDArray[np.float64]:
    """torch.nn.functional.cross_entropy (class axis last) plus z_loss, softcap and temperature.

    l_i = (1-e) w[y] (-log p_y) + (e/V) sum_c w[c] (-log p_c) + zl w[y] lse^2, 0 at ignored positions;
    mean = sum l_i / sum w[y_i] over non-ignored positions.
    """
    z = _transformed(logits, softcap, temperature)
    V = z.shape[-1]
    t = _check_targets(targets, V, ignore_index)
    w = np.ones(V) if weight is None else np.asarray(weight, dtype=np.float64)
    keep = t != ignore_index
    y = np.where(keep, t, 0)
    logp = log_softmax(z)
    lse = logsumexp(z)
    with np.errstate(invalid="ignore", over="ignore"):
        wy = w[y]
        nll = -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        per = (1 - label_smoothing) * wy * nll + z_loss * wy * lse**2
        if label_smoothing > 0:  # as torch, the smoothing term exists only when asked for
            per = per + label_smoothing / V * -np.sum(logp * w, axis=-1)
    per = np.where(keep, per, 0.0)
    if reduction == "none":
        return per
    total = float(np.sum(per))
    if reduction == "sum":
        return total
    denom = float(np.sum(np.where(keep, wy, 0.0)))
    return total / denom if denom != 0 else float("nan")


@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
                            label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                            temperature: float = ...) -> tuple[float, NDArray[np.float64]]: ...
@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: Literal["none"], label_smoothing: float = ...,
                            z_loss: float = ..., softcap: float | None = ...,
                            temperature: float = ...) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: str = ..., label_smoothing: float = ...,
                            z_loss: float = ..., softcap: float | None = ...,
                            temperature: float = ...) -> tuple[float | NDArray[np.float64], NDArray[np.float64]]: ...
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = None,
                            ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                            z_loss: float = 0.0, softcap: float | None = None,
                            temperature: float = 1.0) -> tuple[float | NDArray[np.float64], NDArray[np.float64]]:
    """(cross_entropy(...), d loss / d logits) with the gradient written out analytically:
    d l_i / d z = (1-e) w[y] (p - onehot(y)) + (e/V) (sum(w) p - w) + 2 zl w[y] lse p,
    then through z = u / T and u = c tanh(x / c); divided by sum w[y_i] for "mean". When that sum is 0
    (no position scored, or their target weights add up to 0) the mean has no gradient: NaN rows at the
    positions not ignored and 0 at the ignored ones, as torch's autograd gives."""
    loss = cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, temperature=temperature)
    x = np.asarray(logits, dtype=np.float64)
    z = _transformed(x, softcap, temperature)
    V = z.shape[-1]
    t = np.asarray(targets).astype(np.int64)
    w = np.ones(V) if weight is None else np.asarray(weight, dtype=np.float64)
    keep = t != ignore_index
    y = np.where(keep, t, 0)
    p = softmax(z)
    lse: Any = logsumexp(z)
    onehot = (np.arange(V) == y[..., None]).astype(np.float64)
    wy = w[y][..., None]
    e = label_smoothing
    with np.errstate(invalid="ignore", over="ignore"):
        dz = (1 - e) * wy * (p - onehot) + e / V * (w.sum() * p - w) + 2 * z_loss * wy * lse[..., None] * p
        dx = dz / temperature
        if softcap is not None:
            dx = dx * (1 - np.tanh(x / softcap) ** 2)
    dx = np.where(keep[..., None], dx, 0.0)
    if reduction == "mean":
        denom = float(np.sum(np.where(keep, w[y], 0.0)))
        dx = dx / denom if denom != 0 else np.where(keep[..., None], np.nan, np.zeros_like(dx))
    return loss, dx


def token_logprobs(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100,
                   temperature: float = 1.0) -> NDArray[np.float64]:
    """log_softmax(logits / T) at each target, 0.0 at ignored positions."""
    z = np.asarray(logits, dtype=np.float64)
    t = _check_targets(targets, z.shape[-1], ignore_index)
    keep = t != ignore_index
    y = np.where(keep, t, 0)
    lp = np.take_along_axis(log_softmax(z, temperature=temperature), y[..., None], axis=-1)[..., 0]
    return np.where(keep, lp, 0.0)


# ------------------------------------------------------------------------------------------- decoding
# Plain implementations: full sorts, cumulative sums, explicit loops over rows.

def _exp(v):
    """e^v in float64: +inf past its range."""
    with np.errstate(over="ignore"):
        return float(np.exp(np.float64(v)))


def _rows(logits):
    x = np.asarray(logits, dtype=np.float64)
    return x, x.reshape(-1, x.shape[-1])


def _per_row(value, lead):
    return np.broadcast_to(np.asarray(value), lead).reshape(-1)


def _probs(row):
    """softmax; a row holding +inf gives its +inf entries equal shares."""
    if np.isposinf(row).any():
        inf = np.isposinf(row)
        return inf / inf.sum()
    e = np.exp(row - row.max())
    return e / e.sum()


def _check_rows(x2):
    for i, row in enumerate(x2):
        if np.isnan(row).any():
            raise ValueError(f"row {i} contains NaN")
        if not (row > -np.inf).any():
            raise ValueError(f"row {i} has no logit above -inf")


def _order(values):
    """Indices by value descending, the lower index first on ties."""
    return np.lexsort((np.arange(values.size), -values))


P0_GAP = 745.0  # a logit more than this below the row's max has probability 0 in float64 (the C FL_P0_GAP)


def _p0_tied(row):
    """The logits as ranking values with every token of probability 0 tied at -inf: a logit more than
    P0_GAP below the max, or any finite logit in a row holding +inf (whose +inf entries share it all)."""
    if np.isposinf(row).any():
        return np.where(np.isposinf(row), np.inf, -np.inf)
    with np.errstate(invalid="ignore"):
        return np.where(row - row.max() >= -P0_GAP, row, -np.inf)


def _top_count(row, count):
    """A mask of the top `count` tokens by probability: ranked by logit (the order of the probabilities,
    exact where float64 probabilities round equal), the lower index first on ties; tokens of probability
    0 tie with one another (_p0_tied)."""
    keep = np.zeros(row.size, bool)
    keep[_order(_p0_tied(row))[:count]] = True
    return keep


def _top_p_keep(rank, probs, p):
    """The nucleus: ranked by `rank` (logits) descending, the lower index first on ties, a token is kept
    iff the probability ranked strictly before it is < p (p >= 1: every token)."""
    if p >= 1:
        return np.ones(rank.size, bool)
    order = _order(rank)
    above = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
    return _in_order(order, above < p)


def _filter(logits, param, filter_value, keep_row):
    """Apply keep_row(row, param) -> bool mask to every row; filtered entries get filter_value."""
    x, x2 = _rows(logits)
    _check_rows(x2)
    params = _per_row(param, x.shape[:-1])
    keep = np.array([keep_row(row, params[i]) for i, row in enumerate(x2)]).reshape(x2.shape)
    return np.where(keep, x2, filter_value).reshape(x.shape)


def _in_order(order, sorted_keep):
    """A mask over the row from a mask over the row sorted by `order`."""
    keep = np.zeros(order.size, bool)
    keep[order] = sorted_keep
    return keep


def _top_k_keep(row, k):
    """The tokens whose logit is >= the k-th largest (ties kept); k <= 0: every token."""
    if k <= 0:
        return np.ones(row.size, bool)
    return row >= np.sort(row)[::-1][min(k, row.size) - 1]


def top_k_filter(logits: ArrayLike, k: ArrayLike, *, min_tokens_to_keep: int = 1,
                 filter_value: float = -np.inf) -> NDArray[np.float64]:
    def keep(row, kk):
        return _top_k_keep(row, max(int(kk), min_tokens_to_keep) if kk > 0 else 0)
    return _filter(logits, k, filter_value, keep)


def top_p_filter(logits: ArrayLike, p: ArrayLike, *, min_tokens_to_keep: int = 1,
                 filter_value: float = -np.inf) -> NDArray[np.float64]:
    """Tokens ranked by logit (descending, the lower index first on ties), which orders the
    probabilities even where their float64 values round equal; a token is kept iff the probability
    ranked strictly before it is < p, and the top min_tokens_to_keep always are (tokens of probability
    0 tie with one another there)."""
    def keep(row, pp):
        return _top_p_keep(row, _probs(row), pp) | _top_count(row, min_tokens_to_keep)
    return _filter(logits, p, filter_value, keep)


def top_k_top_p_filter(logits: ArrayLike, k: ArrayLike, p: ArrayLike, *, temperature: ArrayLike = 1.0,
                       min_tokens_to_keep: int = 1, filter_value: float = -np.inf) -> NDArray[np.float64]:
    """logits / temperature, then top-k's keep set, then top-p's among it (ranks on the scaled logits, in
    float64); kept entries hold logits / temperature, the others filter_value."""
    x, x2 = _rows(logits)
    _check_rows(x2)
    lead = x.shape[:-1]
    ks, ps, ts = (_per_row(v, lead) for v in (k, p, temperature))
    out = np.empty(x2.shape)
    for i, row in enumerate(x2):
        scaled = row / ts[i]
        keep = _top_k_keep(scaled, max(int(ks[i]), min_tokens_to_keep) if ks[i] > 0 else 0)
        rest = np.where(keep, scaled, -np.inf)
        keep &= _top_p_keep(rest, _probs(rest), ps[i]) | _top_count(rest, min_tokens_to_keep)
        out[i] = np.where(keep, scaled, filter_value)
    return out.reshape(x.shape)


def min_p_filter(logits: ArrayLike, min_p: ArrayLike, *, min_tokens_to_keep: int = 1,
                 filter_value: float = -np.inf) -> NDArray[np.float64]:
    def keep(row, mp):
        probs = _probs(row)
        return (probs >= mp * probs.max()) | _top_count(row, min_tokens_to_keep)
    return _filter(logits, min_p, filter_value, keep)


def typical_filter(logits: ArrayLike, mass: ArrayLike, *, min_tokens_to_keep: int = 1,
                   filter_value: float = -np.inf) -> NDArray[np.float64]:
    """Hugging Face's TypicalLogitsWarper, written out."""
    def keep(row, ms):
        probs = _probs(row)
        with np.errstate(divide="ignore"):
            neg_logp = -np.log(probs)
        ent = np.sum(probs[probs > 0] * neg_logp[probs > 0])
        score = np.abs(neg_logp - ent)
        order = np.lexsort((np.arange(row.size), score))
        last = min(int(np.sum(np.cumsum(probs[order]) < ms)), row.size - 1)
        k = score[order] <= score[order][last]
        k[:min_tokens_to_keep] = True
        return _in_order(order, k)
    return _filter(logits, mass, filter_value, keep)


def greedy(logits: ArrayLike) -> np.int64 | NDArray[np.int64]:
    x, x2 = _rows(logits)
    _check_rows(x2)
    return np.array([int(np.argmax(row)) for row in x2]).reshape(x.shape[:-1])[()]


def sample_distribution(logits: ArrayLike, *, temperature: ArrayLike = 1.0, top_k: ArrayLike = 0,
                        top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> NDArray[np.float64]:
    """The filtered, renormalized distribution `sample` draws from, per row (float64, logits' shape):
    temperature -> top-k -> top-p (on the renormalized top-k distribution) -> min-p. Top-k and top-p
    rank tokens by their logits (descending, the lower index first on ties), not by the tempered
    probabilities: at a huge temperature every weight may round to 1 and the ranking is still the
    logits'. top_p = 0 keeps the top token alone."""
    x, x2 = _rows(logits)
    _check_rows(x2)
    lead = x.shape[:-1]
    T, K, P, M = (_per_row(v, lead) for v in (temperature, top_k, top_p, min_p))
    out = np.zeros(x2.shape)
    for i, row in enumerate(x2):
        if T[i] == 0 or K[i] == 1:
            out[i, int(np.argmax(row))] = 1.0
            continue
        keep = _top_k_keep(row, int(K[i]))
        z = np.where(keep, row / T[i], -np.inf)
        probs = _probs(z)
        if P[i] < 1:
            ranked = np.where(keep, row, -np.inf)  # the top-k tokens, by logit
            keep &= _top_p_keep(ranked, probs, P[i]) | _top_count(ranked, 1)
            probs = _probs(np.where(keep, z, -np.inf))
        probs = np.where(probs >= M[i] * probs.max(), probs, 0.0)
        out[i] = probs / probs.sum()
    return out.reshape(x.shape)


def apply_penalties(logits: ArrayLike, token_history: ArrayLike, *, repetition_penalty: float = 1.0,
                    presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> NDArray[np.float64]:
    x, x2 = _rows(logits)
    h = np.asarray(token_history).reshape(-1, np.shape(token_history)[-1])
    out = x2.copy()
    for i in range(x2.shape[0]):
        counts: dict[int, int] = {}
        for tok in h[i]:
            if tok != -1:
                counts[int(tok)] = counts.get(int(tok), 0) + 1
        for tok, c in counts.items():
            v = out[i, tok]
            v = v * repetition_penalty if v < 0 else v / repetition_penalty
            out[i, tok] = v - c * frequency_penalty - presence_penalty
    return out.reshape(x.shape)


def apply_logit_bias(logits: ArrayLike, bias: dict[int, float] | tuple[ArrayLike, ArrayLike]) -> NDArray[np.float64]:
    x = np.array(logits, dtype=np.float64)
    items: Any = bias.items() if isinstance(bias, dict) else zip(*bias)  # type: ignore[arg-type]
    for tok, val in items:
        x[..., int(tok)] += val
    return x


def mask_tokens(logits: ArrayLike, *, allowed: ArrayLike | None = None,
                banned: ArrayLike | None = None) -> NDArray[np.float64]:
    x = np.array(logits, dtype=np.float64)
    V = x.shape[-1]
    for tok in range(V):
        if (allowed is not None and tok not in set(int(a) for a in np.ravel(allowed))) or (
                banned is not None and tok in set(int(b) for b in np.ravel(banned))):
            x[..., tok] = -np.inf
    return x


def cfg_mix(cond_logits: ArrayLike, uncond_logits: ArrayLike, guidance_scale: float) -> NDArray[np.float64]:
    lc, lu = log_softmax(cond_logits), log_softmax(uncond_logits)
    return lu + guidance_scale * (lc - lu)


def beam_search_bruteforce(step_fn: Callable[[NDArray[np.int64]], ArrayLike], prompt_ids: ArrayLike, *,
                           max_new_tokens: int, eos_id: int | None = None,
                           length_penalty: float = 1.0) -> list[tuple[NDArray[np.int64], float]]:
    """Every hypothesis beam search can finish with, scored as beam_search scores them, best first:
    sequences ending at their first EOS, or of max_new_tokens tokens without one."""
    prompt = list(np.asarray(prompt_ids, dtype=np.int64).reshape(-1))
    done = []
    frontier: list[Any] = [(prompt, 0.0)]
    for t in range(1, max_new_tokens + 1):
        logits = np.asarray(step_fn(np.array([s for s, _ in frontier], dtype=np.int64)), dtype=np.float64)
        nxt = []
        for (seq, total), row in zip(frontier, logits):
            lp = log_softmax(row)
            for tok in range(row.size):
                s = total + lp[tok]
                if eos_id is not None and tok == eos_id:
                    done.append((seq + [tok], s / t ** length_penalty))
                elif t == max_new_tokens:
                    done.append((seq + [tok], s / t ** length_penalty))
                else:
                    nxt.append((seq + [tok], s))
        frontier = nxt
        if not frontier:
            break
    done.sort(key=lambda d: -d[1])
    return [(np.array(s, dtype=np.int64), score) for s, score in done]


def beam_search(step_fn: Callable[[NDArray[np.int64]], ArrayLike], prompt_ids: ArrayLike, *, num_beams: int,
                max_new_tokens: int, eos_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | Literal["never"] = False) -> list[tuple[NDArray[np.int64], float]]:
    """Beam search written the plain way: every step sorts all (beam, token) continuations by running
    score (ties to the lower beam, then token) and keeps the best 2 * num_beams. Same rules as
    fastlm.beam_search (Hugging Face's, with the EOS counted in the generated length)."""
    if np.ndim(prompt_ids) != 1:
        raise ValueError("one prompt (1-D) at a time")
    prompt = [int(t) for t in np.asarray(prompt_ids)]
    beams, sums = [prompt], [0.0]
    finished: list[tuple[float, int, list[int]]] = []  # (score, order, seq)

    def add(seq, score):
        finished.append((score, len(finished), seq))
        finished.sort(key=lambda f: (-f[0], f[1]))
        del finished[num_beams:]

    for t in range(1, max_new_tokens + 1):
        logits = np.asarray(step_fn(np.array(beams, dtype=np.int64)), dtype=np.float64)
        cands = []
        for b, row in enumerate(logits):
            lp = log_softmax(row)
            cands += [(sums[b] + lp[v], b, v) for v in range(row.size)]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        cands = cands[:2 * num_beams]
        nb, ns = [], []
        for rank, (s, b, v) in enumerate(cands):
            if s == -np.inf:
                break
            if eos_id is not None and v == eos_id:
                if rank < num_beams:
                    add(beams[b] + [v], s / t ** length_penalty)
            else:
                nb.append(beams[b] + [v])
                ns.append(s)
            if len(nb) == num_beams:
                break
        if t == max_new_tokens:  # the running beams end here
            for seq, s in zip(nb, ns):
                add(seq, s / t ** length_penalty)
            break
        beams, sums = nb, ns
        if not beams:
            break
        if len(finished) >= num_beams:  # Hugging Face's test: the best running beam against the worst finished
            length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else t
            if early_stopping is True or finished[-1][0] >= ns[0] / length ** length_penalty:
                break
    return [(np.array(seq, dtype=np.int64), float(score)) for score, _, seq in finished]


# -------------------------------------------------------------------------------------------- n-grams
# Dictionaries of tuples, counted one window at a time.

def count_ngrams(tokens: ArrayLike, order: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(ngrams (M, order), counts (M,)) of a 1-D id array, lexicographically sorted."""
    t = [int(v) for v in np.asarray(tokens).reshape(-1)]
    c: dict[tuple[int, ...], int] = {}
    for i in range(len(t) - order + 1):
        g = tuple(t[i:i + order])
        c[g] = c.get(g, 0) + 1
    keys = sorted(c)
    return np.array(keys, dtype=np.int64).reshape(len(keys), order), np.array([c[k] for k in keys], dtype=np.int64)


class NgramLM:
    """The add-alpha n-gram model as plainly as it can be written (see fastlm.ngram.NgramLM)."""

    def __init__(self, order: int, *, alpha: float = 1.0, vocab_size: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None) -> None:
        self.order, self.alpha, self.vocab_size_given = order, alpha, vocab_size
        self.bos_id, self.eos_id = bos_id, eos_id
        self.c: dict[tuple[int, ...], int] = {}  # tuple -> count, every order
        self.max_id = max([-1] + [v for v in (bos_id, eos_id) if v is not None])

    @property
    def vocab_size(self) -> int:
        return self.vocab_size_given if self.vocab_size_given is not None else self.max_id + 1

    def _padded(self, seq):
        s = [int(v) for v in seq]
        if s:
            self.max_id = max(self.max_id, max(s))
        pad = [self.bos_id] * (self.order - 1) if self.bos_id is not None else []
        return pad + s + ([self.eos_id] if self.eos_id is not None else [])

    def fit(self, sequences: Iterable[Iterable[SupportsInt]]) -> NgramLM:
        self.c = {}
        return self.update(sequences)

    def update(self, sequences: Iterable[Iterable[SupportsInt]]) -> NgramLM:
        for seq in sequences:
            s = self._padded(seq)
            for k in range(1, self.order + 1):
                for i in range(len(s) - k + 1):
                    g = tuple(s[i:i + k])
                    if self.bos_id is not None and g[-1] == self.bos_id:
                        continue
                    self.c[g] = self.c.get(g, 0) + 1
        return self

    def count(self, ngram: Iterable[SupportsInt]) -> int:
        return self.c.get(tuple(int(v) for v in ngram), 0)

    def merge(self, other: NgramLM) -> NgramLM:
        out = NgramLM(self.order, alpha=self.alpha, vocab_size=self.vocab_size_given, bos_id=self.bos_id,
                      eos_id=self.eos_id)
        out.max_id = max(self.max_id, other.max_id)
        for src in (self, other):
            for g, n in src.c.items():
                out.c[g] = out.c.get(g, 0) + n
        return out

    def counts(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        keys = sorted(g for g in self.c if len(g) == k)
        return np.array(keys, dtype=np.int64).reshape(len(keys), k), np.array([self.c[g] for g in keys], np.int64)

    def _prob1(self, w, h):
        h = tuple(int(v) for v in h)[max(0, len(h) - (self.order - 1)):]
        chw = self.c.get(h + (int(w),), 0)
        ch = sum(n for g, n in self.c.items() if len(g) == len(h) + 1 and g[:-1] == h)
        return (chw + self.alpha) / (ch + self.alpha * self.vocab_size)

    def prob(self, tokens: ArrayLike, contexts: ArrayLike) -> NDArray[np.float64]:
        return np.array([self._prob1(w, h) for w, h in zip(np.asarray(tokens).reshape(-1), np.asarray(contexts))])

    def logprob(self, tokens: ArrayLike, contexts: ArrayLike) -> NDArray[np.float64]:
        return np.log(self.prob(tokens, contexts))

    def next_token_distribution(self, context: ArrayLike) -> NDArray[np.float64]:
        return np.array([self._prob1(w, context) for w in range(self.vocab_size)])

    def _predictions(self, seq):
        pad = self.order - 1 if self.bos_id is not None else 0
        s = ([self.bos_id] * pad) + [int(v) for v in seq] + ([self.eos_id] if self.eos_id is not None else [])
        for i in range(pad, len(s)):
            yield s[i], s[max(0, i - (self.order - 1)):i]

    def score(self, sequence: Iterable[SupportsInt]) -> float:
        return float(sum(math.log(self._prob1(w, h)) for w, h in self._predictions(sequence)))

    def perplexity(self, sequences: Iterable[Iterable[SupportsInt]]) -> float:
        total, n = 0.0, 0
        for seq in sequences:
            for w, h in self._predictions(seq):
                total += math.log(self._prob1(w, h))
                n += 1
        return _exp(-total / n) if n else float("nan")


# ----------------------------------------------------------------------------------------- evaluation

def entropy(logits: ArrayLike, axis: int = -1, *, base: float | None = None) -> np.float64 | NDArray[np.float64]:
    """-sum p log p of softmax(logits), 0 log 0 = 0."""
    p = np.moveaxis(softmax(logits, axis=axis), axis, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    terms = np.where(np.isnan(p), np.nan, terms)
    h = terms.sum(axis=-1)
    return (h / (np.log(base) if base else 1.0))[()]


def kl_divergence(p_logits: ArrayLike, q_logits: ArrayLike, axis: int = -1, *,
                  base: float | None = None) -> np.float64 | NDArray[np.float64]:
    """sum p (log p - log q); p = 0 terms are 0; +inf where q = 0 < p; clamped at 0."""
    p = np.moveaxis(softmax(p_logits, axis=axis), axis, -1)
    lp = np.moveaxis(log_softmax(p_logits, axis=axis), axis, -1)
    lq = np.moveaxis(log_softmax(q_logits, axis=axis), axis, -1)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    terms = np.where(np.isnan(p) | np.isnan(lq), np.nan, terms)
    kl = np.maximum(terms.sum(axis=-1), 0.0)
    return (kl / (np.log(base) if base else 1.0))[()]


def perplexity(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100) -> float:
    return _exp(cross_entropy(logits, targets, ignore_index=ignore_index))


def bits_per_token(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100) -> float:
    return cross_entropy(logits, targets, ignore_index=ignore_index) / math.log(2)


def bits_per_byte(total_logprob: ArrayLike, n_bytes: ArrayLike) -> float:
    return -float(np.sum(total_logprob)) / (float(np.sum(n_bytes)) * math.log(2))


def byte_perplexity(total_logprob: ArrayLike, n_bytes: ArrayLike) -> float:
    return _exp(-float(np.sum(total_logprob)) / float(np.sum(n_bytes)))


def kneser_ney(sequences: Iterable[Iterable[SupportsInt]], order: int, *, vocab_size: int, bos_id: int | None,
               eos_id: int | None, unk_id: int | None = None, discount_fallback: bool = False,
               prune: list[int] | None = None
               ) -> tuple[dict[tuple[int, ...], tuple[float, float]], list[tuple[float, float, float]], float]:
    """Interpolated modified Kneser-Ney, written out with dicts (fastlm.kneser_ney documents the rules;
    prune: one threshold per order).

    Returns ({n-gram: (log10 p, log10 backoff)}, discounts per order, log10 p of a word with no unigram)."""
    n, bos, eos, unk = order, bos_id, eos_id, unk_id
    raw: dict[tuple[int, ...], int] = {}
    for seq in sequences:
        s = ([bos] * (n - 1) if bos is not None else []) + [int(v) for v in seq] + ([eos] if eos is not None else [])
        for k in range(1, n + 1):
            for i in range(len(s) - k + 1):
                g = tuple(s[i:i + k])
                if bos is not None and bos in g[1:] + g[-1:]:  # BOS is context only, padding collapses
                    continue
                raw[g] = raw.get(g, 0) + 1
    for special in (bos, unk):
        if special is not None:
            raw.setdefault((special,), 0)
    left: dict[tuple[int, ...], set[int]] = {}
    for g in raw:
        if len(g) > 1:
            left.setdefault(g[1:], set()).add(g[0])
    adj = {g: (c if len(g) == n or (bos is not None and g[0] == bos) else len(left.get(g, ()))) for g, c in raw.items()}
    disc: list[tuple[float, float, float]] = []
    for k in range(1, n + 1):
        nk = [sum(1 for g, a in adj.items() if len(g) == k and a == j) for j in range(5)]
        ok = all(nk[j] > 0 for j in (1, 2, 3))
        d: tuple[float, float, float] = (0.5, 1.0, 1.5)
        if ok:
            y = nk[1] / (nk[1] + 2.0 * nk[2])
            d1, d2, d3 = (j - (j + 1) * y * nk[j + 1] / nk[j] for j in (1, 2, 3))
            d = (d1, d2, d3)
            ok = all(0 <= d[j - 1] <= j for j in (1, 2, 3))
        if not ok:
            if not discount_fallback:
                raise ValueError(f"order {k}: Kneser-Ney discounts undefined or out of range")
            d = (0.5, 1.0, 1.5)
        disc.append(d)
    gone = {g for g, c in raw.items() if prune is not None and c <= prune[len(g) - 1]
            and not (len(g) == 1 and g[0] in (bos, eos, unk))}
    den: dict[tuple[int, ...], float] = {}
    num: dict[tuple[int, ...], float] = {}
    for g, a in adj.items():
        h = g[:-1]
        den[h] = den.get(h, 0.0) + a
        if g in gone:  # a pruned n-gram's adjusted count goes to gamma whole
            num[h] = num.get(h, 0.0) + a
        elif a > 0:
            num[h] = num.get(h, 0.0) + disc[len(g) - 1][min(a, 3) - 1]
    gamma = {h: (num.get(h, 0.0) / den[h] if den[h] > 0 else 0.0) for h in den}
    V = vocab_size - (1 if bos is not None else 0)
    prob: dict[tuple[int, ...], float] = {}
    for g in sorted(adj, key=len):
        a, h = adj[g], g[:-1]
        u = (a - (disc[len(g) - 1][min(a, 3) - 1] if a > 0 else 0.0)) / den[h] if den[h] > 0 else 0.0
        lower = 1.0 / V if len(g) == 1 else prob[g[1:]]
        prob[g] = 1.0 if g == (bos,) else u + gamma[h] * lower
    model = {}
    for g, p in prob.items():
        if g in gone:
            continue
        b = gamma[g] if len(g) < n and g in gamma and g[-1] not in (unk, eos) else 1.0
        model[g] = (min(0.0, math.log10(p)) if p > 0 else -math.inf, math.log10(b) if b > 0 else -math.inf)
    return model, disc, math.log10(gamma[()] / V)


def backoff_logprob10(model: dict[tuple[int, ...], tuple[float, float]], context: Iterable[SupportsInt],
                      word: int, *, unk_id: int | None = None, unseen: float = -100.0) -> float:
    """log10 p(word | context) of a backoff model {n-gram: (log10 p, log10 backoff)} by KenLM's rule: the
    n-grams ending in word are looked for from the unigram up, stopping at the first one absent; the
    longest found gives p, and each context longer than it that is present adds its backoff; a word with
    no unigram is unk_id's (or gets `unseen`)."""
    w = int(word)
    if (w,) not in model and unk_id is not None and (unk_id,) in model:
        w = unk_id
    h = tuple(int(v) for v in context)
    L = 0
    while L <= len(h) and (h[len(h) - L:] + (w,)) in model:
        L += 1
    lp = model[h[len(h) - L + 1:] + (w,)][0] if L else unseen
    for m in range(max(L, 1), len(h) + 1):  # the contexts of length L .. len(h)
        lp += model.get(h[len(h) - m:], (0.0, 0.0))[1]
    return lp


def word_perplexity(total_logprob: ArrayLike, n_words: ArrayLike) -> float:
    return _exp(-float(np.sum(total_logprob)) / float(np.sum(n_words)))


def sequence_logprob(logits: ArrayLike, targets: ArrayLike, *, mask: Any = None, prompt_lengths: Any = None,
                     ignore_index: int = -100, normalize: Literal["tokens", "chars", "bytes"] | None = None,
                     lengths: Any = None, return_is_greedy: bool = False
                     ) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Sum of log_softmax(logits[b, i])[targets[b, i]] over the scored positions i of each sequence b:
    those with targets != ignore_index, mask true and i >= prompt_lengths[b]. The logits of the other
    positions are never read (they may hold NaN or only -inf). is_greedy: every scored target is the
    first argmax of its row; a scored row holding NaN or no logit above -inf has none: ValueError."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets)
    B, T, _ = x.shape
    totals: Any
    totals, greedy_ok = [], []
    for b in range(B):
        total, count, ok = 0.0, 0, True
        for i in range(T):
            if t[b, i] == ignore_index or (mask is not None and not mask[b][i]) or (
                    prompt_lengths is not None and i < prompt_lengths[b]):
                continue
            total += log_softmax(x[b, i])[t[b, i]]
            count += 1
            if return_is_greedy:
                if np.isnan(x[b, i]).any() or not (x[b, i] > -np.inf).any():
                    raise ValueError(f"logits[{b}, {i}] (a scored position) has no argmax: NaN or only -inf")
                ok = ok and int(np.argmax(x[b, i])) == int(t[b, i])
        if normalize == "tokens":
            total = total / count if count else math.nan
        elif normalize in ("chars", "bytes"):
            total /= lengths[b]
        totals.append(total)
        greedy_ok.append(ok)
    totals = np.array(totals)
    return (totals, np.array(greedy_ok)) if return_is_greedy else totals


def choose(loglikelihoods: ArrayLike, *, lengths: ArrayLike | None = None,
           normalize: Literal["chars", "bytes"] | None = None) -> np.int64 | NDArray[np.int64]:
    ll = np.asarray(loglikelihoods, dtype=np.float64)
    if normalize in ("chars", "bytes"):
        ll = ll / np.asarray(lengths, dtype=np.float64)
    rows = ll.reshape(-1, ll.shape[-1])
    out = []
    for row in rows:
        best = 0
        for j in range(1, row.size):
            if row[j] > row[best]:
                best = j
        out.append(best)
    return np.array(out).reshape(ll.shape[:-1])[()]


def causal_targets(input_ids: ArrayLike, attention_mask: Any = None, *, ignore_index: int = -100) -> NDArray[np.int64]:
    """Per position t: the next token when both t and t + 1 are real (mask 1), else ignore_index."""
    ids = np.asarray(input_ids)
    B, T = ids.shape
    out = np.full((B, T), ignore_index, np.int64)
    for b in range(B):
        for t in range(T - 1):
            real = attention_mask is None or (attention_mask[b][t] and attention_mask[b][t + 1])
            if real:
                out[b, t] = ids[b, t + 1]
    return out


def score_continuations(logits: ArrayLike, input_ids: ArrayLike, context_lengths: Any, *,
                        attention_mask: Any = None) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per row: the real tokens; for each continuation token j >= context_length, log_softmax of the logits
    at the position of token j - 1 at token j, summed; is_greedy: each is its row's first argmax."""
    x = np.asarray(logits, np.float64)
    ids = np.asarray(input_ids)
    lp, greedy = [], []
    for b in range(ids.shape[0]):
        pos = [t for t in range(ids.shape[1]) if attention_mask is None or attention_mask[b][t]]
        total, ok = 0.0, True
        for j in range(int(context_lengths[b]), len(pos)):
            row = x[b, pos[j - 1]]
            total += log_softmax(row)[ids[b, pos[j]]]
            ok = ok and int(np.argmax(row)) == int(ids[b, pos[j]])
        lp.append(total)
        greedy.append(ok)
    return np.array(lp), np.array(greedy)


def rolling_windows(n_tokens: int, max_length: int, *, stride: int | None = None,
                    prefix_token: bool = False) -> NDArray[np.int64]:
    """Targets in chunks: chunk k ends max_length targets after k * stride (pulled back to the token before
    the chunk's first target); its inputs are the max_length tokens before its last target; coordinates of
    the text, prefix at -1."""
    stride = stride or max_length
    tokens = list(range(-1 if prefix_token else 0, n_tokens))  # what is read, in text positions
    targets = tokens[1:]
    out, done, k = [], 0, 0
    while done < len(targets):
        start = min(k * stride, done)  # index into tokens of the first input of the chunk's stride grid
        stop = min(start + max_length, len(tokens) - 1)  # the chunk: targets[done:stop]
        chunk = targets[done:stop]
        first_in = max(0, stop - max_length)  # the inputs: the max_length tokens before the last target
        lo = done - first_in  # logit of the first target: the input before it
        out.append((tokens[first_in], tokens[stop - 1] + 1, lo, lo + len(chunk), chunk[0], chunk[-1] + 1))
        done, k = stop, k + 1
    return np.array(out, dtype=np.int64).reshape(-1, 6)


def _bins(c, n_bins, strategy, closed):
    if strategy == "uniform":
        edges = [m / n_bins for m in range(n_bins + 1)]
    else:
        edges = sorted(set(np.quantile(c, np.linspace(0, 1, n_bins + 1)).tolist()))
        edges[0], edges[-1] = 0.0, 1.0
    M = len(edges) - 1
    idx = []
    for v in c:
        for m in range(M):
            lo, hi = edges[m], edges[m + 1]
            inside = (lo < v <= hi or (m == 0 and v == lo)) if closed == "right" else (
                lo <= v < hi or (m == M - 1 and v == hi))
            if inside:
                idx.append(m)
                break
    return np.array(idx), np.array(edges)


def reliability_bins(confidences: ArrayLike, correct: ArrayLike, *, n_bins: int = 15,
                     strategy: Literal["uniform", "quantile"] = "uniform",
                     closed: Literal["right", "left"] = "right") -> dict[str, NDArray[Any]]:
    c = np.asarray(confidences, dtype=np.float64).reshape(-1)
    k = np.asarray(correct, dtype=np.float64).reshape(-1)
    idx, edges = _bins(c, n_bins, strategy, closed)
    M = edges.size - 1
    count = np.array([np.sum(idx == m) for m in range(M)])
    conf = np.array([c[idx == m].mean() if count[m] else np.nan for m in range(M)])
    acc = np.array([k[idx == m].mean() if count[m] else np.nan for m in range(M)])
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(confidences: ArrayLike, correct: ArrayLike, *, n_bins: int = 15,
                               strategy: Literal["uniform", "quantile"] = "uniform",
                               norm: Literal["l1", "l2", "max"] = "l1",
                               closed: Literal["right", "left"] = "right") -> float:
    b = reliability_bins(confidences, correct, n_bins=n_bins, strategy=strategy, closed=closed)
    n = b["count"].sum()
    gaps = [(b["count"][m] / n, abs(b["accuracy"][m] - b["confidence"][m])) for m in range(b["count"].size)
            if b["count"][m]]
    if norm == "l1":
        return float(sum(w * g for w, g in gaps))
    if norm == "l2":
        return float(math.sqrt(sum(w * g * g for w, g in gaps)))
    return float(max(g for _, g in gaps))


def calibration_from_logits(logits: ArrayLike, labels: ArrayLike
                            ) -> tuple[np.float64 | NDArray[np.float64], np.bool_ | NDArray[np.bool_]]:
    p = softmax(logits)  # the prediction is the first max logit (a +inf one, where softmax is NaN)
    return p.max(axis=-1), np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)


def mean_nll_at_temperature(logits: ArrayLike, labels: ArrayLike, T: float) -> float:
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / T)
    return float(-np.mean(lp[np.arange(lp.shape[0]), np.asarray(labels)]))


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Golden-section search on log T over the bounds (the mean NLL is unimodal in T)."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc = mean_nll_at_temperature(logits, labels, math.exp(c))
    fd = mean_nll_at_temperature(logits, labels, math.exp(d))
    while b - a > 1e-10:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = mean_nll_at_temperature(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = mean_nll_at_temperature(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)


def linear_cross_entropy_with_grad(hidden: ArrayLike, weight: ArrayLike, targets: ArrayLike, *,
                                   bias: ArrayLike | None = None, class_weight: ArrayLike | None = None,
                                   ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                                   z_loss: float = 0.0, softcap: float | None = None, temperature: float = 1.0):
    """(loss, d_hidden, d_weight, d_bias) of cross_entropy(hidden @ weight.T + bias) with the full (N, V)
    logits in float64: G = d loss / d logits, d_hidden = G @ W, d_weight = G.T @ h, d_bias = sum_i G_i."""
    h = np.asarray(hidden, dtype=np.float64)
    W = np.asarray(weight, dtype=np.float64)
    z = h @ W.T + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    loss, G = cross_entropy_with_grad(z, targets, weight=class_weight, ignore_index=ignore_index,
                                      reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
                                      softcap=softcap, temperature=temperature)
    G2 = G.reshape(-1, W.shape[0])
    d_bias = None if bias is None else G2.sum(axis=0)
    return loss, (G2 @ W).reshape(h.shape), G2.T @ h.reshape(-1, W.shape[1]), d_bias


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, targets: ArrayLike, **options: Any):
    return linear_cross_entropy_with_grad(hidden, weight, targets, **options)[0]


# ---------------------------------------------------------------------------------------- diagnostics
def row_stats(x: ArrayLike) -> dict[str, NDArray[Any]]:
    """Per row of (..., V): counts of NaN, +inf and -inf entries; min, max and sum of the finite ones
    (min +inf, max -inf, sum 0 without any), float64 (fastlm.diagnostics' C pass)."""
    a = np.asarray(x, dtype=np.float64)
    fin = np.isfinite(a)
    return {"nan": np.isnan(a).sum(-1), "posinf": (a == np.inf).sum(-1), "neginf": (a == -np.inf).sum(-1),
            "min": np.where(fin, a, np.inf).min(-1), "max": np.where(fin, a, -np.inf).max(-1),
            "sum": np.where(fin, a, 0.0).sum(-1)}


def js_divergence(p_logits: ArrayLike, q_logits: ArrayLike) -> NDArray[np.float64]:
    """Jensen-Shannon divergence (nats) of softmax(p) and softmax(q) along the last axis, written as
    entropy(m) - (entropy(p) + entropy(q)) / 2 with m their mean."""
    p, q = softmax(p_logits), softmax(q_logits)

    def h(d):
        return -np.sum(np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0), axis=-1)

    return h((p + q) / 2) - (h(p) + h(q)) / 2
