"""Fused cross-entropy, its gradient with respect to the logits, and per-token log-probabilities."""

from __future__ import annotations

import numbers
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import (COMPUTE, check_out, float_array, int_array, integer, position, real, real_array, rows_in,
                      write_rows)
from ._config import resolve_threads

__all__ = ["cross_entropy", "cross_entropy_with_grad", "token_logprobs"]


class _Args:
    """Checked arguments of one cross-entropy call (everything is validated before any write)."""

    def __init__(self, logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                 temperature, num_threads, bf16=False):
        # bf16: logits is a C-contiguous uint16 ndarray holding bfloat16 (fastlm.torch), computed in float32
        self.logits = logits if bf16 else float_array(logits, "logits")
        if self.logits.ndim == 0:
            raise ValueError("logits must have at least one dimension (..., V)")
        self.dtype = np.dtype(np.float32) if bf16 else COMPUTE[self.logits.dtype]
        self.V = self.logits.shape[-1]
        t = int_array(targets, "targets")
        if t.shape != self.logits.shape[:-1]:
            raise ValueError(f"targets has shape {t.shape} but logits {self.logits.shape} needs targets of shape "
                             f"{self.logits.shape[:-1]} (logits without its class axis)")
        self.targets_shape = t.shape
        self.targets = np.ascontiguousarray(t.reshape(-1))
        self.ignore_index = integer(ignore_index, "ignore_index", lambda v: -2**63 <= v < 2**63, "an int64")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.label_smoothing = real(label_smoothing, "label_smoothing", lambda v: 0 <= v <= 1, "in [0, 1]")
        self.z_loss = real(z_loss, "z_loss", lambda v: v >= 0, "a finite number >= 0")
        self.softcap = 0.0 if softcap is None else real(softcap, "softcap", lambda v: v > 0,
                                                         "None or a finite number > 0")
        self.inv_t = 1.0 / real(temperature, "temperature", lambda v: v >= 1e-30, "a finite number >= 1e-30")
        self.num_threads = resolve_threads(num_threads)
        self.weight = self.weight_t = None
        if weight is not None:
            w = np.asarray(weight)
            if w.dtype == object and w.size and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                                                    for v in w.reshape(-1)):
                w = real_array(w, "weight")  # Python ints beyond int64 are real weights too
            if w.dtype.kind not in "fiu":
                raise TypeError(f"weight must be a real array, got dtype {w.dtype}")
            if w.shape != (self.V,):
                raise ValueError(f"weight has shape {w.shape}, expected ({self.V},) (one per class)")
            self.weight = np.ascontiguousarray(w, dtype=np.float64)
            self.weight_t = self.weight.astype(self.dtype)
        # (N, V) view, or a copy when the layout needs one
        self.rows = self.logits.reshape(-1, self.V) if bf16 else rows_in(self.logits, self.dtype)

    def run(self, grad_rows=None):
        """Call the kernel; returns (loss, per-row losses float64). Raises on an invalid target."""
        row_loss = np.empty(self.rows.shape[0], np.float64)
        loss, _, bad = _kernels.xent_rows(
            self.rows, self.targets, self.weight, self.weight_t, self.ignore_index, self.reduction,
            self.label_smoothing, self.z_loss, self.softcap, self.inv_t, row_loss, grad_rows, self.num_threads)
        if bad >= 0:
            self.raise_bad_target(bad)
        return loss, row_loss

    def raise_bad_target(self, flat: int):
        raise ValueError(f"targets{position(flat, self.targets_shape)} = {int(self.targets[flat])} is not a class "
                         f"index in [0, {self.V}) nor ignore_index ({self.ignore_index})")

    def result(self, loss, row_loss):
        if self.reduction == "none":
            return row_loss.reshape(self.targets_shape).astype(self.logits.dtype)
        return float(loss)


_OPTIONS_DOC = """
    Parameters
    ----------
    logits : array_like (..., V) of float16 / float32 / float64
        Any leading dims; non-contiguous and read-only arrays work. float16 is computed in float32.
    targets : array_like (...) of any integer dtype
        Class index per position, or ignore_index.
    weight : array_like (V,), optional
        Per-class weight w (torch's `weight`).
    ignore_index : int, default -100
        Positions with this target contribute nothing (loss 0, gradient 0) and are not counted.
    reduction : {"mean", "sum", "none"}
        mean = sum_i l_i / sum_i w[y_i] over non-ignored positions (NaN when there are none);
        sum = sum_i l_i (0 over nothing); none = l_i per position, in the logits' dtype.
    label_smoothing : float in [0, 1]
        e: l_i = (1-e) w[y] (-log p_y) + (e/V) sum_c w[c] (-log p_c), torch's definition.
    z_loss : float >= 0
        zl (PaLM): adds zl * w[y] * lse_i^2 per position, lse_i the row's log-sum-exp after softcap and
        temperature.
    softcap : float > 0, optional
        c (Gemma 2): logits -> c * tanh(logits / c) first; the gradient flows through it.
    temperature : float > 0
        T: logits / T, after softcap.
    num_threads : int, optional
        Threads over rows (default fastlm.get_num_threads()); results are bitwise identical for any value.
"""


@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: Literal["mean", "sum"] = ..., label_smoothing: float = ..., z_loss: float = ...,
                  softcap: float | None = ..., temperature: float = ..., num_threads: int | None = ...) -> float: ...
@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: Literal["none"], label_smoothing: float = ..., z_loss: float = ...,
                  softcap: float | None = ..., temperature: float = ...,
                  num_threads: int | None = ...) -> NDArray[np.floating[Any]]: ...
@overload
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ..., ignore_index: int = ...,
                  reduction: str = ..., label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                  temperature: float = ..., num_threads: int | None = ...) -> float | NDArray[np.floating[Any]]: ...
def cross_entropy(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                  softcap: float | None = None, temperature: float = 1.0,
                  num_threads: int | None = None) -> float | NDArray[np.floating[Any]]:
    """Cross-entropy of softmax(logits) against integer targets, in one read pass over the logits.

    Follows torch.nn.functional.cross_entropy (class axis last) for weight, ignore_index, reduction and
    label_smoothing; adds z_loss, softcap and temperature.
    {options}
    Returns
    -------
    float for "mean" / "sum" (accumulated in float64), else an array shaped like targets.

    Raises
    ------
    TypeError for non-float logits or non-integer targets; ValueError for a target outside [0, V) that
    is not ignore_index (naming the first such position), mismatched shapes and invalid options.
    Special values: NaN in a row makes that row's loss NaN; -inf logits have probability 0 (a target
    whose logit is -inf gives +inf); a row holding +inf gives NaN, as torch.
    """
    a = _Args(logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature,
              num_threads)
    return a.result(*a.run())


@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
                            label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                            temperature: float = ..., num_threads: int | None = ...,
                            grad_out: NDArray[np.floating[Any]] | None = ...
                            ) -> tuple[float, NDArray[np.floating[Any]]]: ...
@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: Literal["none"], label_smoothing: float = ...,
                            z_loss: float = ..., softcap: float | None = ..., temperature: float = ...,
                            num_threads: int | None = ..., grad_out: NDArray[np.floating[Any]] | None = ...
                            ) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]: ...
@overload
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = ...,
                            ignore_index: int = ..., reduction: str = ..., label_smoothing: float = ...,
                            z_loss: float = ..., softcap: float | None = ..., temperature: float = ...,
                            num_threads: int | None = ..., grad_out: NDArray[np.floating[Any]] | None = ...
                            ) -> tuple[float | NDArray[np.floating[Any]], NDArray[np.floating[Any]]]: ...
def cross_entropy_with_grad(logits: ArrayLike, targets: ArrayLike, *, weight: ArrayLike | None = None,
                            ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                            z_loss: float = 0.0, softcap: float | None = None, temperature: float = 1.0,
                            num_threads: int | None = None, grad_out: NDArray[np.floating[Any]] | None = None
                            ) -> tuple[float | NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Cross-entropy and its gradient d loss / d logits, fused: two passes over each row.

    Same options and loss as cross_entropy. For reduction="none" the gradient is that of the sum of the
    per-position losses. The gradient of row i is
    s * du/dx / T * (A p - (e/V) w - (1-e) w[y] onehot(y)), A = (1-e) w[y] + (e/V) sum(w) + 2 zl w[y] lse_i,
    s = 1 / sum_i w[y_i] for "mean", else 1; ignored rows get 0 (so every row when all are ignored), and
    the other rows NaN when their weights w[y_i] sum to 0 with "mean" (as torch's autograd).
    {options}
    grad_out : ndarray, optional
        Where to write the gradient: logits' shape and dtype. May be `logits` itself: the gradient then
        overwrites the logits in place, row by row, with no (N, V) allocation (each row is read before
        it is written).

    Returns
    -------
    (loss, grad): loss as cross_entropy returns it; grad of logits' shape and dtype.
    """
    a = _Args(logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature,
              num_threads)
    grad = np.empty(a.logits.shape, a.logits.dtype) if grad_out is None else check_out(
        grad_out, a.logits.shape, a.logits.dtype, "grad_out")
    return a.result(*write_rows(grad, a.rows, a.dtype, a.run)), grad


def xent_with_grad_into(logits: np.ndarray, targets: np.ndarray, grad: np.ndarray | None, *, weight=None,
                        ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                        z_loss: float = 0.0, softcap: float | None = None, temperature: float = 1.0,
                        num_threads: int | None = None) -> float | NDArray[np.float64]:
    """cross_entropy_with_grad for fastlm.torch and the linear version: the gradient is written into
    `grad` (logits' shape and dtype, C-contiguous; may be logits itself; None: no gradient), the loss returned as a float, or
    per position in float64 for "none". logits of dtype uint16 hold bfloat16 bits (C-contiguous), read as
    bfloat16 in C and computed in float32."""
    bf16 = logits.dtype == np.uint16
    a = _Args(logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature,
              num_threads, bf16=bf16)
    if grad is None:
        loss, row_loss = a.run()
    elif bf16:
        loss, row_loss = a.run(grad.reshape(-1, a.V))
    else:
        loss, row_loss = write_rows(check_out(grad, a.logits.shape, a.logits.dtype, "grad"), a.rows, a.dtype, a.run)
    return row_loss.reshape(a.targets_shape) if reduction == "none" else float(loss)


def token_logprobs(logits: ArrayLike, targets: ArrayLike, *, ignore_index: int = -100, temperature: float = 1.0,
                   num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """log p(target) per position: log_softmax(logits / T)[..., target], 0.0 at ignored positions.

    logits (..., V) float, targets (...) integer; returns an array shaped like targets in the logits'
    dtype (the value is computed in float64 from the row's log-sum-exp). Same errors as cross_entropy.
    """
    a = _Args(logits, targets, None, ignore_index, "none", 0.0, 0.0, None, temperature, num_threads)
    _, row_loss = a.run()
    return np.subtract(0.0, row_loss).reshape(a.targets_shape).astype(a.logits.dtype)


cross_entropy.__doc__ = cross_entropy.__doc__.replace("{options}", _OPTIONS_DOC)  # type: ignore[union-attr]
cross_entropy_with_grad.__doc__ = (
    cross_entropy_with_grad.__doc__.replace("{options}", _OPTIONS_DOC))  # type: ignore[union-attr]
