"""Calibration: expected calibration error, reliability bins and diagrams, temperature scaling.

Bins follow Guo et al. (2017) by default: M equal-width bins ((m-1)/M, m/M] (closed="right"; the first
also holds 0). closed="left" gives torchmetrics' [(m-1)/M, m/M) with 1.0 in the last bin. torchmetrics
builds its edges with linspace(0, 1, M + 1) and bucketizes, which puts 1.0 in a bin of its own beyond
the last unless it is clamped; fastlm always keeps exactly M bins.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import COMPUTE, float_array, int_array, integer, position, real, real_array, rows_in
from ._config import resolve_threads

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

__all__ = ["expected_calibration_error", "reliability_bins", "calibration_from_logits", "fit_temperature",
           "plot_reliability_diagram"]


def _inputs(confidences, correct):
    c = real_array(confidences, "confidences").reshape(-1)
    k = np.asarray(correct)
    if k.dtype.kind not in "biuf":
        raise TypeError(f"correct must be booleans or 0/1 numbers, got dtype {k.dtype}")
    k = k.astype(np.float64).reshape(-1)
    if c.size == 0:
        raise ValueError("confidences is empty")
    if c.shape != k.shape:
        raise ValueError(f"confidences has {c.size} entries but correct has {k.size}")
    if not ((c >= 0) & (c <= 1)).all():
        j = int(np.argmax(~((c >= 0) & (c <= 1))))
        raise ValueError(f"confidences[{j}] = {c[j]} is outside [0, 1]")
    if not np.isin(k, (0.0, 1.0)).all():
        raise ValueError("correct must hold 0/1 or booleans")
    return c, k


def _bin_index(c, n_bins, strategy, closed):
    n_bins = integer(n_bins, "n_bins", lambda v: v >= 1, ">= 1")
    if closed not in ("right", "left"):
        raise ValueError(f'closed must be "right" or "left", got {closed!r}')
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f'strategy must be "uniform" or "quantile", got {strategy!r}')
    try:
        if strategy == "uniform":
            edges = np.arange(n_bins + 1) / n_bins  # m / M exactly, as the bins are defined
        else:
            # equal-mass edges; duplicate edges (ties) merge their bins
            edges = np.unique(np.quantile(c, np.linspace(0.0, 1.0, n_bins + 1)))
            edges[0], edges[-1] = 0.0, 1.0
            if edges.size < 2:
                edges = np.array([0.0, 1.0])
    except (ValueError, MemoryError):  # NumPy cannot allocate the edges
        raise ValueError(f"n_bins = {n_bins} is too large: its {n_bins + 1} bin edges do not fit in memory") from None
    inner = edges[1:-1]
    if closed == "right":  # (lo, hi]: the first bin also holds its lower edge
        idx = np.searchsorted(inner, c, side="left")
    else:  # [lo, hi): the last bin also holds its upper edge
        idx = np.searchsorted(inner, c, side="right")
    return idx, edges


def reliability_bins(confidences: ArrayLike, correct: ArrayLike, *, n_bins: int = 15,
                     strategy: Literal["uniform", "quantile"] = "uniform",
                     closed: Literal["right", "left"] = "right") -> dict[str, NDArray[Any]]:
    """Per bin: dict of arrays lower, upper, count, confidence (mean), accuracy (mean); empty bins have
    count 0 and NaN means. Binning as expected_calibration_error."""
    c, k = _inputs(confidences, correct)
    idx, edges = _bin_index(c, n_bins, strategy, closed)
    nb = edges.size - 1
    count = np.bincount(idx, minlength=nb).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=c, minlength=nb) / count
        acc = np.bincount(idx, weights=k, minlength=nb) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": conf, "accuracy": acc}


def _ece_from_bins(b, norm):
    live = b["count"] > 0
    gap = np.abs(b["accuracy"][live] - b["confidence"][live])
    w = b["count"][live] / b["count"].sum()
    if norm == "l1":
        return float(np.sum(w * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(w * gap**2)))
    return float(np.max(gap))


def expected_calibration_error(confidences: ArrayLike, correct: ArrayLike, *, n_bins: int = 15,
                               strategy: Literal["uniform", "quantile"] = "uniform",
                               norm: Literal["l1", "l2", "max"] = "l1",
                               closed: Literal["right", "left"] = "right") -> float:
    """ECE: l1 = sum_m (n_m / n) |acc_m - conf_m|; l2 = sqrt(sum_m (n_m / n) (acc_m - conf_m)^2) (torchmetrics'
    "l2"); max = max_m |acc_m - conf_m| over non-empty bins (MCE).

    confidences in [0, 1], correct booleans (or 0/1). strategy "uniform" (equal width) or "quantile" (equal
    mass; ties that repeat an edge merge those bins). closed: see the module docstring.
    """
    if norm not in ("l1", "l2", "max"):
        raise ValueError(f'norm must be "l1", "l2" or "max", got {norm!r}')
    return _ece_from_bins(reliability_bins(confidences, correct, n_bins=n_bins, strategy=strategy, closed=closed),
                          norm)


def calibration_from_logits(logits: ArrayLike, labels: ArrayLike, *, num_threads: int | None = None
                            ) -> tuple[np.float64 | NDArray[np.float64], np.bool_ | NDArray[np.bool_]]:
    """(confidence = max softmax probability, correct = argmax == label) per row of logits (..., V), from
    two fused passes (log-sum-exp and argmax; no probabilities materialized). The prediction is the first
    max logit; a row holding +inf predicts its first +inf and has NaN confidence, as its softmax."""
    from .decoding import greedy
    from .softmax import logsumexp

    x = float_array(logits, "logits")
    y = int_array(labels, "labels")
    if x.ndim == 0 or y.shape != x.shape[:-1]:
        raise ValueError(f"labels has shape {y.shape}; expected {x.shape[:-1]}")
    bad = ((y < 0) | (y >= x.shape[-1])).reshape(-1)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(f"labels{position(j, y.shape)} = {y.reshape(-1)[j]} is outside [0, {x.shape[-1]})")
    top = greedy(x, num_threads=num_threads)
    lse = np.asarray(logsumexp(x.astype(COMPUTE[x.dtype], copy=False), num_threads=num_threads), np.float64)
    xmax = np.take_along_axis(x, np.asarray(top)[..., None], axis=-1)[..., 0].astype(np.float64)
    with np.errstate(invalid="ignore"):  # +inf - +inf: NaN, as the softmax
        return np.exp(xmax - lse), np.asarray(top) == y


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, bounds: tuple[float, float] = (0.05, 20.0),
                    tol: float = 1e-9, max_passes: int = 20, num_threads: int | None = None) -> float:
    """T in bounds minimizing the mean NLL of softmax(logits / T) against labels (temperature scaling, Guo
    et al. 2017).

    The NLL is convex in beta = 1/T; each Newton step on beta takes one fused C pass over the logits that
    returns the NLL and its first and second derivatives (E_p[x] - x_y and Var_p[x] per row), kept
    inside a shrinking bracket on the derivative's sign, until a step is below tol (relative; at least 8
    ulp of the logits' dtype, whose precision bounds the derivative's). When Newton points past a bound,
    the bound itself is tried, so a minimum there is returned exactly. One more pass takes the row
    maxima. At most max_passes passes in all. NaN logits raise ValueError naming the row.
    """
    x = float_array(logits, "logits")
    y = int_array(labels, "labels")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"logits must be (N, V) and labels (N,); got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise ValueError("logits is empty")
    try:
        lo, hi = (float(b) for b in bounds)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds!r}") from None
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds!r}")
    tol = real(tol, "tol", lambda v: v >= 0, "a finite number >= 0")
    max_passes = integer(max_passes, "max_passes", lambda v: v >= 2, ">= 2 (the max pass and one Newton step)")
    bad = (y < 0) | (y >= x.shape[1])
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(f"labels[{j}] = {y[j]} is outside [0, {x.shape[1]})")
    xr = rows_in(x, COMPUTE[x.dtype])
    tol = max(float(tol), 8 * float(np.finfo(xr.dtype).eps))
    nt = resolve_threads(num_threads)
    N = xr.shape[0]
    xmax = np.empty(N, np.float64)
    _kernels.rowmax(xr, xmax)
    if not np.isfinite(xmax).all():
        raise ValueError("every row of logits must be finite at its max (no NaN, +inf or all -inf rows)")
    y = np.ascontiguousarray(y, dtype=np.int64)
    nll, g, v = (np.empty(N, np.float64) for _ in range(3))

    def derivatives(beta):
        """d mean NLL / d beta and d2 mean NLL / d beta2 (one pass; the NLL itself comes along unused).
        The row maxima skip NaN: a NaN logit shows here, as a NaN statistic of its row."""
        _kernels.temperature_stats(xr, y, xmax, beta, nll, g, v, nt)
        nan = np.isnan(nll) | np.isnan(g) | np.isnan(v)
        if nan.any():
            raise ValueError(f"logits[{int(np.argmax(nan))}] contains NaN")
        return float(g.mean()), float(v.mean())

    end_lo, end_hi = 1.0 / hi, 1.0 / lo  # the bounds on beta
    b_lo, b_hi = end_lo, end_hi  # bracket on beta
    beta, passes = 1.0 if b_lo <= 1.0 <= b_hi else math.sqrt(b_lo * b_hi), 1
    while passes < max_passes:
        d1, d2 = derivatives(beta)
        passes += 1
        if (beta == end_lo and d1 >= 0) or (beta == end_hi and d1 <= 0):
            break  # the minimum is at this bound
        if d1 > 0:
            b_hi = beta
        else:
            b_lo = beta
        step = beta - d1 / d2 if d2 > 0 else math.nan
        if abs(step - beta) <= tol * beta:  # Newton has converged
            beta = step
            break
        if step <= b_lo == end_lo or step >= b_hi == end_hi:
            new = end_lo if step <= b_lo else end_hi  # Newton points past a bound: try the bound itself
        else:
            new = step if b_lo < step < b_hi else 0.5 * (b_lo + b_hi)  # else bisect the bracket
        if b_hi - b_lo <= tol * beta:
            beta = new
            break
        beta = new
    return 1.0 / min(max(beta, end_lo), end_hi)


def plot_reliability_diagram(confidences: ArrayLike, correct: ArrayLike, *, n_bins: int = 15,
                             strategy: Literal["uniform", "quantile"] = "uniform",
                             closed: Literal["right", "left"] = "right",
                             ax: Axes | None = None) -> Figure | SubFigure:
    """A reliability diagram as a matplotlib Figure: per bin (drawn at its real edges, quantile bins
    too) the accuracy as a bar, the gap to the bin's mean confidence as a hatched bar (below the
    diagonal: overconfident), empty bins shaded and marked; under it the count of each bin; the ECE, n,
    the bins and the strategy in the title. ax: draw into this Axes (the counts in an inset along its
    bottom) instead of a new figure. Needs matplotlib (pip install "fastlm[plot]")."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('plot_reliability_diagram needs matplotlib: pip install "fastlm[plot]"') from e
    b = reliability_bins(confidences, correct, n_bins=n_bins, strategy=strategy, closed=closed)
    ece = _ece_from_bins(b, "l1")
    fig: Figure | SubFigure
    if ax is None:  # no pyplot: no global state, no display backend
        fig = Figure(figsize=(6, 6))
        ax, counts_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        fig = ax.figure
        counts_ax = ax.inset_axes((0.0, 0.0, 1.0, 0.18), sharex=ax)
        counts_ax.patch.set_alpha(0.0)
    live = b["count"] > 0
    lo, width = b["lower"], b["upper"] - b["lower"]
    ax.bar(lo[live], b["accuracy"][live], width=width[live], align="edge", edgecolor="black", label="accuracy")
    ax.bar(lo[live], (b["confidence"] - b["accuracy"])[live], bottom=b["accuracy"][live], width=width[live],
           align="edge", color="none", edgecolor="red", hatch="//", label="gap to mean confidence")
    for x0, w in zip(lo[~live], width[~live]):
        ax.axvspan(x0, x0 + w, color="0.9", zorder=0)
    if (~live).any():
        ax.plot(lo[~live] + width[~live] / 2, np.full((~live).sum(), 0.02), "x", color="gray", label="empty bin")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    n = int(b["count"].sum())
    ax.set_title(f"Reliability diagram: ECE {ece:.4f}, n = {n}, {lo.size} {strategy} bins")
    ax.legend(loc="upper left", fontsize="small")
    counts_ax.bar(lo, b["count"], width=width, align="edge", edgecolor="black", color="0.6")
    counts_ax.set_ylabel("count")
    counts_ax.set_xlabel("confidence")
    return fig
