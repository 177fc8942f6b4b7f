"""Pure-NumPy float64 reference of every fastlm function: the executable specification.

Written the plain way (materialized probabilities, one-hot targets, explicit formulas), sharing no code
with the kernels. Results are float64 (reductions as Python floats); shapes follow the fast functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad", "token_logprobs"]


def _moved(x, axis):
    return np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)


def log_softmax(x, axis=-1, *, temperature=1.0):
    """z - max - log(sum(exp(z - max))), z = x / T; a slice with NaN, +inf or only -inf gives NaN."""
    z = _moved(x, axis) / temperature
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        shifted = z - m
        out = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def softmax(x, axis=-1, *, temperature=1.0):
    """exp(z - max) / sum(exp(z - max)), z = x / T."""
    z = _moved(x, axis) / temperature
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(z - m)
        out = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


def logsumexp(x, axis=-1, *, temperature=1.0):
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


def cross_entropy(logits, targets, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                  z_loss=0.0, softcap=None, temperature=1.0):
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


def cross_entropy_with_grad(logits, targets, *, weight=None, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0, z_loss=0.0, softcap=None, temperature=1.0):
    """(cross_entropy(...), d loss / d logits) with the gradient written out analytically:
    d l_i / d z = (1-e) w[y] (p - onehot(y)) + (e/V) (sum(w) p - w) + 2 zl w[y] lse p,
    then through z = u / T and u = c tanh(x / c); divided by sum w[y_i] for "mean" (0 if all ignored)."""
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
    lse = logsumexp(z)
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
        dx = dx / denom if denom != 0 else np.zeros_like(dx)
    return loss, dx


def token_logprobs(logits, targets, *, ignore_index=-100, temperature=1.0):
    """log_softmax(logits / T) at each target, 0.0 at ignored positions."""
    z = np.asarray(logits, dtype=np.float64)
    t = _check_targets(targets, z.shape[-1], ignore_index)
    keep = t != ignore_index
    y = np.where(keep, t, 0)
    lp = np.take_along_axis(log_softmax(z, temperature=temperature), y[..., None], axis=-1)[..., 0]
    return np.where(keep, lp, 0.0)
