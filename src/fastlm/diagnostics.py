"""Diagnostics for the probability bugs of training and evaluation code: each check reads the arrays a
training step or an evaluation already has (logits, input_ids, targets, attention_mask) and reports what
is wrong with the evidence (how many positions, the first ones, the numbers that show it), or nothing.

- check_distribution: NaN / inf rows, rows that are not distributions, targets of probability 0.
- check_training_batch: targets not shifted or shifted twice, padding counted in the loss, ignore_index
  mismatches, EOS conventions, the initial loss against log V, a reported loss against the conventions
  it could have been computed with.
- distribution_shift / compare_eval_sets: how two models (or one model on two sets) differ, position by
  position (KL both ways, Jensen-Shannon, entropy) or in their NLL distributions.
- decoding_effect: the mass, entropy and KL each decoding transform removes or moves (decoding changes
  the sampling distribution, not the model).
- generation_vs_evaluation: the model's NLL on its own samples against held-out text (exposure bias).

Every function returns a Report (a dataclass; ``str(report)`` reads as a short text, ``report.ok`` is
True when nothing was found, ``"name" in report`` tests for one finding). Plots (matplotlib, the [plot]
extra): plot_nll_histogram, plot_entropy_by_position; the reliability diagram is
fastlm.calibration.plot_reliability_diagram. From the shell: ``fastlm diagnose FILE.npz``.
The thresholds are arguments; the defaults are stated with each function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import COMPUTE, float_array, int_array, integer, real, rows_in
from .decoding import apply_penalties, min_p_filter, top_k_filter, top_p_filter, typical_filter
from .losses import cross_entropy
from .metrics import entropy, kl_divergence
from .softmax import log_softmax, logsumexp

__all__ = ["Finding", "Report", "check_distribution", "check_training_batch", "distribution_shift",
           "compare_eval_sets", "decoding_effect", "generation_vs_evaluation", "plot_nll_histogram",
           "plot_entropy_by_position"]


@dataclass
class Finding:
    """One problem: a short name, a sentence with the evidence, how many positions show it and the first
    of them (indices into the leading dims, at most max_positions rows)."""

    name: str
    message: str
    count: int = 0
    positions: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), np.int64))


@dataclass
class Report:
    """What a check found (findings, empty when all is well), the numbers it measured (stats) and per
    position arrays (arrays)."""

    title: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)
    check: bool = True  # False: a measurement, which has no findings

    @property
    def ok(self) -> bool:
        return not self.findings

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.findings)

    def __str__(self) -> str:
        lines = [self.title + (":" if not self.check else ": no problem found" if self.ok
                               else f": {len(self.findings)} problem(s)")]
        for f in self.findings:
            where = ""
            if f.positions.size:
                shown = ", ".join(str(tuple(int(i) for i in p)) for p in f.positions[:3])
                where = f" (first at {shown})"
            lines.append(f"  - [{f.name}] {f.message}{where}")
        def fmt(v: Any) -> str:
            if isinstance(v, dict):
                return ", ".join(f"{k} {fmt(w)}" for k, w in v.items())
            return f"{v:.6g}" if isinstance(v, float) else str(v)

        for k, v in self.stats.items():
            lines.append(f"  {k}: {fmt(v)}")
        return "\n".join(lines)


def _find(report: Report, name: str, mask: NDArray[np.bool_], message: str, limit: int) -> None:
    """Adds a finding when mask (over the leading dims) marks any position; {n} in message is the count."""
    n = int(np.count_nonzero(mask))
    if n:
        report.findings.append(Finding(name, message.format(n=n), n, np.argwhere(mask)[:limit]))


# ------------------------------------------------------------------------------------ distributions
def check_distribution(x: ArrayLike, *, kind: Literal["logits", "log_probs", "probs"] = "logits",
                       targets: ArrayLike | None = None, ignore_index: int = -100, atol: float = 1e-3,
                       max_positions: int = 10) -> Report:
    """Whether every row of x (..., V) is a usable distribution, read once per row in C.

    kind "logits": NaN rows, +inf rows (softmax degenerates), rows without a finite logit (all -inf: no
    token has probability > 0). kind "log_probs": also entries above 0 and rows whose logsumexp is not 0
    within atol. kind "probs": also entries outside [0, 1] and rows whose sum is not 1 within atol.
    targets (...) with ignore_index: positions whose target has probability 0 (a support problem: a mask,
    filter or vocabulary mismatch removed the reference token, whose NLL is then infinite)."""
    if kind not in ("logits", "log_probs", "probs"):
        raise ValueError(f"kind must be 'logits', 'log_probs' or 'probs', got {kind!r}")
    a = float_array(x, "x")
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError(f"x must be (..., V) with V >= 1, got shape {a.shape}")
    atol = real(atol, "atol", lambda v: v >= 0, ">= 0")
    limit = integer(max_positions, "max_positions", lambda v: v >= 0, ">= 0")
    lead = a.shape[:-1]
    rows = rows_in(a, COMPUTE[a.dtype])
    s = _kernels.row_stats(rows)
    r = Report(f"check_distribution ({kind}, {math.prod(lead)} rows of {a.shape[-1]})")
    nan, pos, neg = (s[k].reshape(lead) > 0 for k in ("nan", "posinf", "neginf"))
    _find(r, "nan", nan, "{n} rows hold NaN", limit)
    finite_rows = ~nan & ~pos
    if kind == "probs":
        _find(r, "inf", pos | neg, "{n} rows hold an infinite probability", limit)
        bad = finite_rows & ((s["min"].reshape(lead) < 0) | (s["max"].reshape(lead) > 1 + atol))
        _find(r, "out_of_range", bad, "{n} rows hold probabilities outside [0, 1]", limit)
        total = s["sum"].reshape(lead)
        off = finite_rows & ~neg & (np.abs(total - 1) > atol)
        _find(r, "not_normalized", off, "{n} rows do not sum to 1 (within %g; first sums: %s)" % (
            atol, ", ".join(f"{v:.6g}" for v in total[off][:3])), limit)
    else:
        _find(r, "posinf", pos & ~nan, "{n} rows hold +inf (softmax gives all the mass to the +inf entries)", limit)
        empty = finite_rows & (s["max"].reshape(lead) == -np.inf)
        _find(r, "empty", empty, "{n} rows have no finite entry: every token has probability 0", limit)
        if kind == "log_probs":
            _find(r, "positive", finite_rows & (s["max"].reshape(lead) > atol),
                  "{n} rows hold log-probabilities above 0", limit)
            with np.errstate(invalid="ignore"):
                lse = np.asarray(logsumexp(rows.astype(np.float64), axis=-1)).reshape(lead)
            off = finite_rows & ~empty & (np.abs(lse) > atol)
            _find(r, "not_normalized", off, "{n} rows are not normalized: logsumexp is not 0 (within %g; first: %s)"
                  % (atol, ", ".join(f"{v:.6g}" for v in lse[off][:3])), limit)
    if targets is not None:
        t = int_array(targets, "targets")
        if t.shape != lead:
            raise ValueError(f"targets has shape {t.shape}; x's leading dims are {lead}")
        ignore_index = integer(ignore_index, "ignore_index")
        live = t != ignore_index
        out = live & ((t < 0) | (t >= a.shape[-1]))
        if out.any():
            i = tuple(int(v) for v in np.argwhere(out)[0])
            raise ValueError(f"targets{list(i)} is {t[i]}: neither in [0, {a.shape[-1]}) nor ignore_index ({ignore_index})")
        picked = np.take_along_axis(a, np.where(live, t, 0)[..., None], axis=-1)[..., 0]
        zero = live & ((picked == 0) if kind == "probs" else (picked == -np.inf))
        _find(r, "zero_probability_target", zero, "the target has probability 0 at {n} positions (infinite NLL)",
              limit)
    r.stats["rows"] = math.prod(lead)
    return r


# -------------------------------------------------------------------------------- training batches
def _agreement(targets: NDArray[np.int64], ids: NDArray[np.int64], live: NDArray[np.bool_], shift: int) -> float:
    """The fraction of live target positions t (with t + shift inside the row) where targets[:, t] equals
    input_ids[:, t + shift]."""
    T = ids.shape[1]
    if shift >= T:
        return float("nan")
    m = live[:, :T - shift]
    n = int(m.sum())
    return float((targets[:, :T - shift] == ids[:, shift:])[m].sum() / n) if n else float("nan")


def check_training_batch(logits: ArrayLike, input_ids: ArrayLike, targets: ArrayLike,
                         attention_mask: ArrayLike | None = None, *, ignore_index: int = -100,
                         pad_id: int | None = None, eos_id: int | None = None, label_smoothing: float = 0.0,
                         loss: float | None = None, at_init: bool = False, init_tolerance: float = 1.0,
                         agree: float = 0.9, max_positions: int = 10) -> Report:
    """The common bugs of a causal LM's training batch, each with its evidence.

    logits (B, T, V) are the model's outputs on input_ids (B, T); targets (B, T) are what the loss scores
    logits[:, t] against (fastlm's and torch's convention, not Hugging Face's unshifted `labels`); ignored
    positions hold ignore_index. Found:
    - ignore_index_mismatch: targets that are neither token ids nor ignore_index (e.g. -1 padding with
      ignore_index -100); they are left out of the other checks.
    - not_shifted / shifted_twice / unaligned: targets equal input_ids at the same position (or two
      ahead) at >= `agree` of the positions, instead of one ahead; or at no shift.
    - padding_in_loss: targets counted (not ignore_index) at padding positions (attention_mask 0), or
      whose token is padding (the next position is padding, or the token is pad_id, pad_id != eos_id).
    - eos_masked / no_eos_target (eos_id given): no target is EOS, though input_ids hold it and pad_id ==
      eos_id (masking padding by id masked every real EOS), or at all: the model never learns to stop.
    - initial_loss (at_init): the loss is more than init_tolerance nats from log V, the loss of uniform
      predictions (above: initial logits too large; below: the targets leak into the inputs).
    - loss_mismatch (loss given: the loss the training code reported): it is not the cross-entropy of
      these logits and targets (with label_smoothing), and which other convention it matches.
    stats: the loss, log V, the counted positions and the agreement at shifts 0, 1 and 2."""
    x = float_array(logits, "logits")
    ids = int_array(input_ids, "input_ids")
    t = int_array(targets, "targets")
    if x.ndim != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {x.shape}")
    if ids.shape != x.shape[:2] or t.shape != x.shape[:2]:
        raise ValueError(f"input_ids {ids.shape} and targets {t.shape} must be logits' (B, T) = {x.shape[:2]}")
    mask = None
    if attention_mask is not None:
        mask = int_array(attention_mask, "attention_mask")
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape}; input_ids has {ids.shape}")
    ignore_index = integer(ignore_index, "ignore_index")
    limit = integer(max_positions, "max_positions", lambda v: v >= 0, ">= 0")
    V = x.shape[-1]
    r = Report(f"check_training_batch ({ids.shape[0]} x {ids.shape[1]} tokens, V = {V})")
    live = t != ignore_index
    odd = live & ((t < 0) | (t >= V))
    if odd.any():
        vals = np.unique(t[odd])
        _find(r, "ignore_index_mismatch", odd, "targets hold %s at {n} positions: neither token ids in [0, %d) "
              "nor ignore_index (%d); if they mark ignored positions, pass ignore_index=%d or replace them" % (
                  ", ".join(map(str, vals[:5])), V, ignore_index, int(vals[0])), limit)
        live &= ~odd
    clean = np.where(live, t, ignore_index)
    agreement = {s: _agreement(t, ids, live, s) for s in (0, 1, 2)}
    a0, a1, a2 = agreement[0], agreement[1], agreement[2]
    if a0 >= agree and not a1 > a0:
        r.findings.append(Finding("not_shifted", f"targets equal input_ids at the same position at {a0:.0%} of the "
                                  "counted positions: logits[:, t] is trained to copy its own input. Shift once: "
                                  "targets[:, t] = input_ids[:, t + 1] (fastlm.causal_targets; a Hugging Face "
                                  "model shifts `labels` itself)", int(live.sum())))
    elif a2 >= agree and not a1 > a2:
        r.findings.append(Finding("shifted_twice", f"targets equal input_ids two positions ahead at {a2:.0%} of the "
                                  "counted positions: shifted twice (e.g. causal_targets passed as `labels` to a "
                                  "model that shifts again)", int(live.sum())))
    elif live.any() and max(np.nan_to_num([a0, a1, a2], nan=0.0)) < 1 - agree:
        r.findings.append(Finding("unaligned", f"targets match input_ids at no shift (same position {a0:.0%}, one "
                                  f"ahead {a1:.0%}, two ahead {a2:.0%}): are these the targets of these inputs?",
                                  int(live.sum())))
    aligned = not r.findings or r.findings[-1].name not in ("not_shifted", "shifted_twice", "unaligned")
    if mask is not None:
        _find(r, "padding_in_loss", live & (mask == 0), "{n} counted targets lie on padding positions "
              "(attention_mask 0): padding is counted in the loss", limit)
        nxt = np.concatenate([mask[:, 1:], np.ones_like(mask[:, :1])], axis=1)
        if aligned:  # (the target at t is the token at t + 1)
            _find(r, "padding_in_loss", live & (mask == 1) & (nxt == 0), "{n} counted targets are padding tokens "
                  "(the next position is padding): the model is trained to predict padding", limit)
    if pad_id is not None and pad_id != eos_id:
        _find(r, "padding_in_loss", live & (t == pad_id), "{n} counted targets are pad_id (%d)" % pad_id, limit)
    if eos_id is not None:
        if not (live & (t == eos_id)).any():
            if pad_id == eos_id and (ids == eos_id).any():
                r.findings.append(Finding("eos_masked", f"no counted target is EOS ({eos_id}) though input_ids hold it "
                                          f"{int((ids == eos_id).sum())} times: with pad_id == eos_id, masking "
                                          "padding by id masked every real EOS too, so the model never learns to stop",
                                          int((ids == eos_id).sum()), np.argwhere(ids == eos_id)[:limit]))
            else:
                r.findings.append(Finding("no_eos_target", f"no counted target is EOS ({eos_id}): sequences were cut "
                                          "before their EOS or none was appended; the model never learns to stop"))
    smoothing = real(label_smoothing, "label_smoothing", lambda v: 0 <= v <= 1, "in [0, 1]")
    n_live = int(live.sum())
    ce = float(cross_entropy(x, clean, ignore_index=ignore_index, label_smoothing=smoothing)) if n_live else math.nan
    r.stats.update({"loss": ce, "log V": math.log(V), "counted positions": n_live,
                    "agreement at shift 0": a0, "agreement at shift 1": a1, "agreement at shift 2": a2})
    if at_init and n_live and abs(ce - math.log(V)) > init_tolerance:
        why = ("the initial logits are too large (scale the output layer's initialization down)" if ce > math.log(V)
               else "below uniform before training: the targets leak into the inputs (not shifted?)")
        r.findings.append(Finding("initial_loss", f"the loss at initialization is {ce:.4g} nats, {ce - math.log(V):+.3g} "
                                  f"from log V = {math.log(V):.4g} (uniform predictions): {why}"))
    if loss is not None and n_live:
        _check_loss(r, x, ids, clean, live, float(loss), ce, smoothing, ignore_index)
    return r


def _check_loss(r: Report, x: NDArray[Any], ids: NDArray[np.int64], clean: NDArray[np.int64],
                live: NDArray[np.bool_], loss: float, ce: float, smoothing: float, ignore_index: int) -> None:
    """A loss_mismatch finding when the reported loss is not ce, naming the convention it matches."""
    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-3 * max(1.0, abs(b))

    if close(loss, ce):
        return

    def xent(targets: NDArray[np.int64], s: float = smoothing, reduction: str = "mean") -> float:
        return float(cross_entropy(x, targets, ignore_index=ignore_index, label_smoothing=s, reduction=reduction))  # type: ignore[call-overload]

    shifted = np.full_like(clean, ignore_index)
    shifted[:, :-1] = ids[:, 1:]
    candidates = {
        f"label_smoothing={0.1 if smoothing == 0 else 0.0}": lambda: xent(clean, 0.1 if smoothing == 0 else 0.0),
        "a sum over positions instead of a mean": lambda: xent(clean, reduction="sum"),
        f"a mean over all {clean.size} positions (ignored ones as 0)": lambda: xent(clean, reduction="sum") / clean.size,
        "targets = input_ids (not shifted)": lambda: xent(np.where(live, ids, ignore_index)),
        "targets = input_ids shifted once (every position)": lambda: xent(shifted),
    }
    match = next((name for name, f in candidates.items() if close(loss, f())), None)
    r.findings.append(Finding("loss_mismatch", f"the reported loss {loss:.6g} is not the cross-entropy of these logits "
                              f"and targets ({ce:.6g}); " + (f"it matches {match}" if match else
                                                            "it matches none of: " + "; ".join(candidates))))


# ------------------------------------------------------------------------------------------ shifts
def _probs(logits: NDArray[Any]) -> NDArray[np.float64]:
    return np.exp(log_softmax(logits.astype(np.float64), axis=-1))


def distribution_shift(logits_a: ArrayLike, logits_b: ArrayLike, *, mask: ArrayLike | None = None) -> Report:
    """Per position (the leading dims) KL(a || b), KL(b || a), the Jensen-Shannon divergence and both
    entropies (nats), in report.arrays; report.stats holds their means over the positions mask keeps
    (all when None) and the position of the largest JS."""
    a = float_array(logits_a, "logits_a").astype(np.float64)
    b = float_array(logits_b, "logits_b").astype(np.float64)
    if a.shape != b.shape or a.ndim == 0:
        raise ValueError(f"logits_a {a.shape} and logits_b {b.shape} must have the same (..., V) shape")
    keep = np.ones(a.shape[:-1], bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != a.shape[:-1]:
        raise ValueError(f"mask has shape {keep.shape}; the positions are {a.shape[:-1]}")
    p, q = _probs(a), _probs(b)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        js = 0.5 * (np.where(p > 0, p * np.log(p / m), 0).sum(-1) + np.where(q > 0, q * np.log(q / m), 0).sum(-1))
    arrays = {"kl_ab": np.asarray(kl_divergence(a, b)), "kl_ba": np.asarray(kl_divergence(b, a)),
              "js": np.maximum(js, 0.0), "entropy_a": np.asarray(entropy(a)), "entropy_b": np.asarray(entropy(b))}
    r = Report("distribution_shift", arrays=arrays, check=False)
    for k, v in arrays.items():
        r.stats["mean " + k] = float(v[keep].mean()) if keep.any() else math.nan
    if keep.any():
        r.stats["largest js at"] = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(keep, arrays["js"], -1)),
                                                                         keep.shape))
    return r


def _nll(logits: ArrayLike, targets: ArrayLike, ignore_index: int, name: str) -> tuple[NDArray[Any], NDArray[Any]]:
    """(NLL of each counted position, entropy of each counted position)."""
    x = float_array(logits, "logits_" + name)
    t = int_array(targets, "targets_" + name)
    if t.shape != x.shape[:-1]:
        raise ValueError(f"targets_{name} has shape {t.shape}; logits_{name}'s positions are {x.shape[:-1]}")
    live = t != ignore_index
    nll = np.asarray(cross_entropy(x, t, ignore_index=ignore_index, reduction="none"), np.float64)
    return nll[live], np.asarray(entropy(x), np.float64)[live]


def _ks(a: NDArray[Any], b: NDArray[Any]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    return float(np.max(np.abs(np.searchsorted(np.sort(a), grid, "right") / a.size
                               - np.searchsorted(np.sort(b), grid, "right") / b.size)))


def compare_eval_sets(logits_a: ArrayLike, targets_a: ArrayLike, logits_b: ArrayLike, targets_b: ArrayLike, *,
                      ignore_index: int = -100, names: tuple[str, str] = ("a", "b"), nll_gap: float = 0.1,
                      ks: float = 0.1) -> Report:
    """One model's token NLL and predictive entropy on two evaluation sets: per set the counted tokens,
    mean NLL, perplexity, mean entropy and NLL quartiles, and the KS statistic between the two NLL
    distributions. Finding nll_shift (the sets are not drawn from the same distribution, or the model
    fits one of them better) when the mean NLLs differ by more than nll_gap nats and 3 standard errors,
    or the KS statistic exceeds both ks and its 0.1% critical value 1.95 sqrt((n_a + n_b) / (n_a n_b))."""
    ignore_index = integer(ignore_index, "ignore_index")
    (na, ea), (nb, eb) = _nll(logits_a, targets_a, ignore_index, "a"), _nll(logits_b, targets_b, ignore_index, "b")
    if not na.size or not nb.size:
        raise ValueError("each set needs at least one counted target")
    r = Report(f"compare_eval_sets ({names[0]} vs {names[1]})", arrays={"nll_" + names[0]: na, "nll_" + names[1]: nb})
    for name, n, e in ((names[0], na, ea), (names[1], nb, eb)):
        r.stats.update({f"{name} tokens": int(n.size), f"{name} mean NLL": float(n.mean()),
                        f"{name} perplexity": float(np.exp(n.mean())), f"{name} mean entropy": float(e.mean()),
                        f"{name} NLL quartiles": tuple(round(float(v), 4) for v in np.quantile(n, [0.25, 0.5, 0.75]))})
    stat, gap = _ks(na, nb), float(nb.mean() - na.mean())
    r.stats["KS statistic"], r.stats["mean NLL gap (b - a)"] = stat, gap
    se = math.sqrt(na.var() / na.size + nb.var() / nb.size)
    if (abs(gap) > max(nll_gap, 3 * se)) or stat > max(ks, 1.95 * math.sqrt((na.size + nb.size) / (na.size * nb.size))):
        r.findings.append(Finding("nll_shift", f"mean NLL differs by {gap:+.3g} nats (perplexity x{math.exp(gap):.3g}) "
                                  f"and the NLL distributions by KS {stat:.3g}"))
    return r


def generation_vs_evaluation(gen_logits: ArrayLike, gen_tokens: ArrayLike, eval_logits: ArrayLike,
                             eval_targets: ArrayLike, *, ignore_index: int = -100) -> Report:
    """The model's per-token NLL on its own samples (gen_logits: its logits at each position of a sampled
    continuation, gen_tokens the sampled tokens, aligned as targets) against held-out text (the
    exposure-bias gap: a model scores its own samples better than real text, and the gap grows with
    the position as generations drift). stats: both mean NLLs and perplexities, the gap; arrays: mean
    NLL per position of each."""
    ignore_index = integer(ignore_index, "ignore_index")
    r = Report("generation_vs_evaluation", check=False)
    for name, lg, tg in (("generated", gen_logits, gen_tokens), ("held-out", eval_logits, eval_targets)):
        x, t = float_array(lg, name + " logits"), int_array(tg, name + " targets")
        if x.ndim != 3 or t.shape != x.shape[:2]:
            raise ValueError(f"{name} logits must be (B, T, V) and its targets (B, T); got {x.shape} and {t.shape}")
        live = t != ignore_index
        nll = np.asarray(cross_entropy(x, t, ignore_index=ignore_index, reduction="none"), np.float64)
        with np.errstate(invalid="ignore"):
            r.arrays[name + " NLL by position"] = np.where(live, nll, 0).sum(0) / live.sum(0)
        r.stats[name + " mean NLL"] = float(nll[live].mean()) if live.any() else math.nan
        r.stats[name + " perplexity"] = math.exp(r.stats[name + " mean NLL"])
    r.stats["gap (held-out - generated)"] = r.stats["held-out mean NLL"] - r.stats["generated mean NLL"]
    return r


# -------------------------------------------------------------------------------------- decoding
def decoding_effect(logits: ArrayLike, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    min_p: float = 0.0, typical_p: float = 1.0, token_history: ArrayLike | None = None,
                    repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
                    frequency_penalty: float = 0.0) -> Report:
    """What each decoding transform does to the model's distribution p (rows of logits (..., V)), applied
    cumulatively in fastlm.sample's order (penalties, temperature, top-k, top-p, min-p, typical): per
    stage, averaged over rows, the tokens kept, the mass of p outside the kept set, the entropy of the
    resulting sampling distribution q and KL(q || p). Stages left at their neutral value are skipped.
    report.stats[stage] = dict(kept, mass_removed, entropy, kl_from_model); the model is unchanged: only
    the distribution sampled from moves."""
    x0 = float_array(logits, "logits").astype(np.float64)
    if x0.ndim == 0:
        raise ValueError("logits must be (..., V)")
    p = _probs(x0)
    stages: list[tuple[str, Any]] = []
    if repetition_penalty != 1.0 or presence_penalty or frequency_penalty:
        if token_history is None:
            raise ValueError("the penalties need token_history")
        stages.append(("penalties", lambda z: apply_penalties(z, token_history, repetition_penalty=repetition_penalty,
                                                              presence_penalty=presence_penalty,
                                                              frequency_penalty=frequency_penalty)))
    if temperature != 1.0:
        t = real(temperature, "temperature", lambda v: v > 0, "> 0")
        stages.append((f"temperature {t:g}", lambda z: z / t))
    if top_k:
        stages.append((f"top-k {top_k}", lambda z: top_k_filter(z, top_k)))
    if top_p < 1.0:
        stages.append((f"top-p {top_p:g}", lambda z: top_p_filter(z, top_p)))
    if min_p > 0.0:
        stages.append((f"min-p {min_p:g}", lambda z: min_p_filter(z, min_p)))
    if typical_p < 1.0:
        stages.append((f"typical {typical_p:g}", lambda z: typical_filter(z, typical_p)))
    r = Report("decoding_effect (means over rows)", check=False)
    z = x0
    r.stats["model"] = {"kept": float(x0.shape[-1]), "mass_removed": 0.0, "entropy": float(np.mean(entropy(x0))),
                        "kl_from_model": 0.0}
    # (kept, mass_removed, entropy, kl_from_model) per stage: the rows' means
    for name, f in stages:
        z = np.asarray(f(z), np.float64)
        kept = z > -np.inf
        r.stats[name] = {"kept": float(kept.sum(-1).mean()), "mass_removed": float((1 - (p * kept).sum(-1)).mean()),
                         "entropy": float(np.mean(entropy(z))), "kl_from_model": float(np.mean(kl_divergence(z, x0)))}
    return r


# ------------------------------------------------------------------------------------------- plots
def _figure(ax: Any) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('plots need matplotlib: pip install "fastlm[plot]"') from e
    fig = Figure() if ax is None else ax.figure
    return fig, (fig.add_subplot(1, 1, 1) if ax is None else ax)


def plot_nll_histogram(nll: dict[str, ArrayLike], *, bins: int = 50, ax: Any = None) -> Any:
    """Histograms (densities, shared bins) of per-token NLL arrays, one per name, with each mean marked."""
    fig, ax = _figure(ax)
    vals = {k: np.asarray(v, np.float64).ravel() for k, v in nll.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in vals.values()])
    edges = np.histogram_bin_edges(finite, bins=bins) if finite.size else np.linspace(0, 1, bins + 1)
    for k, v in vals.items():
        line = ax.hist(v[np.isfinite(v)], bins=edges, density=True, alpha=0.5, label=f"{k} (n = {v.size})")
        ax.axvline(float(np.mean(v)), color=line[2][0].get_facecolor(), linestyle="--")
    ax.set_xlabel("NLL per token (nats)")
    ax.set_ylabel("density")
    ax.set_title("Token NLL (dashed: means)")
    ax.legend()
    return fig


def plot_entropy_by_position(logits: dict[str, ArrayLike], *, mask: ArrayLike | None = None, ax: Any = None) -> Any:
    """Mean predictive entropy (nats) at each position t of (B, T, V) logits, one line per name, over
    the rows mask (B, T) keeps."""
    fig, ax = _figure(ax)
    for k, lg in logits.items():
        h = np.asarray(entropy(float_array(lg, k)), np.float64)
        keep = np.ones(h.shape, bool) if mask is None else np.asarray(mask, bool)
        with np.errstate(invalid="ignore"):
            ax.plot(np.where(keep, h, 0).sum(0) / keep.sum(0), label=k)
    ax.set_xlabel("position")
    ax.set_ylabel("entropy (nats)")
    ax.set_title("Predictive entropy by position")
    ax.legend()
    return fig
