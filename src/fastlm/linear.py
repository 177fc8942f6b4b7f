"""Linear + cross-entropy without the (N, V) logits: the loss of softmax(hidden @ weight.T + bias) against
targets, and its gradients for hidden, weight and bias, computed chunk by chunk of rows
(csrc/README.md, "Linear + cross-entropy").

Per chunk of rows: one matmul into a reused (chunk, V) buffer, the fused cross-entropy kernel writing
the gradient G over it in place, then d_hidden = G @ weight and d_weight += G.T @ hidden (torch: addmm_), d_bias += the
column sums of G. The same loop serves fastlm.torch (tensors and torch's matmul) through `_Backend`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._arrays import float_array, int_array, integer, position
from .losses import xent_with_grad_into

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]

CHUNK_BYTES = 64 << 20  # default chunk: about this many bytes of logits
CHUNK_FLOOR = 256       # rows, at least (BLAS efficiency), unless there are fewer


def chunk_rows(n: int, V: int, itemsize: int, chunk_size) -> int:
    """Rows per chunk: chunk_size, or about CHUNK_BYTES of logits and at least CHUNK_FLOOR, at most n."""
    if chunk_size is None:
        c = max(CHUNK_FLOOR, CHUNK_BYTES // max(1, V * itemsize))
    else:
        c = integer(chunk_size, "chunk_size", lambda v: v >= 1, ">= 1 (rows per chunk)")
    return max(1, min(c, n))


class _Backend:
    """Array operations of the chunk loop: NumPy here, torch in fastlm.torch."""

    def __init__(self, empty: Callable[..., Any], zeros: Callable[..., Any], matmul: Callable[..., Any],
                 matmul_add: Callable[..., Any], as_numpy: Callable[[Any], np.ndarray],
                 from_numpy: Callable[[np.ndarray, Any], Any]):
        # matmul(a, b, out): out = a @ b; matmul_add(a, b, out, part): out += a @ b (part: scratch of out's shape,
        # for BLAS interfaces without an accumulating product); from_numpy(a, like): a in like's kind and dtype
        self.empty, self.zeros, self.matmul, self.matmul_add = empty, zeros, matmul, matmul_add
        self.as_numpy, self.from_numpy = as_numpy, from_numpy


def _numpy_matmul_add(a, b, out, part):
    np.matmul(a, b, out=part)
    out += part


NUMPY = _Backend(lambda shape, like: np.empty(shape, like.dtype), lambda shape, like: np.zeros(shape, like.dtype),
                 lambda a, b, out: np.matmul(a, b, out=out), _numpy_matmul_add, lambda a: a,
                 lambda a, like: a.astype(like.dtype))


def check_shapes(hidden_shape, weight_shape, targets_shape, bias_shape, class_weight_shape) -> None:
    """The argument shapes of a linear cross-entropy, with messages naming the argument."""
    if len(hidden_shape) < 1:
        raise ValueError("hidden must have at least one dimension (..., D)")
    if len(weight_shape) != 2:
        raise ValueError(f"weight must be (V, D), got shape {tuple(weight_shape)}")
    V, D = weight_shape
    if hidden_shape[-1] != D:
        raise ValueError(f"hidden has shape {tuple(hidden_shape)} but weight {tuple(weight_shape)} needs its last "
                         f"dimension to be D = {D}")
    if tuple(targets_shape) != tuple(hidden_shape[:-1]):
        raise ValueError(f"targets has shape {tuple(targets_shape)} but hidden {tuple(hidden_shape)} needs "
                         f"{tuple(hidden_shape[:-1])} (hidden without its last dimension)")
    if bias_shape is not None and tuple(bias_shape) != (V,):
        raise ValueError(f"bias has shape {tuple(bias_shape)}, expected ({V},) (one per class)")
    if class_weight_shape is not None and tuple(class_weight_shape) != (V,):
        raise ValueError(f"class_weight has shape {tuple(class_weight_shape)}, expected ({V},) (one per class)")


def check_targets(t: np.ndarray, V: int, ignore_index: int, shape) -> np.ndarray:
    """Every target a class index in [0, V) or ignore_index (before any chunk runs); the ignored mask."""
    ignored = t == ignore_index
    bad = ~ignored & ((t < 0) | (t >= V))
    if bad.any():
        flat = int(np.argmax(bad))
        raise ValueError(f"targets{position(flat, shape)} = {int(t[flat])} is not a class index in [0, {V}) nor "
                         f"ignore_index ({ignore_index})")
    return ignored


def run_chunks(be: _Backend, h: Any, W: Any, b: Any, t: np.ndarray, chunk: int, opts: dict[str, Any], want_grad: bool,
               row_scale: Any = None) -> tuple[Any, Any, Any, Any]:
    """The chunk loop over rows of h (N, D), targets t (N,) int64. Returns (sum or per-row losses as
    float64, dh, dW, db): the gradients of sum_i row_scale[i] l_i (row_scale None: all ones), unscaled by
    any mean; None when not want_grad. opts: the cross-entropy options; its reduction is "sum" or "none"."""
    N, V = h.shape[0], W.shape[0]
    buf = be.empty((chunk, V), h)
    dh: Any = be.empty(h.shape, h) if want_grad else None
    dW: Any = be.zeros(W.shape, W) if want_grad else None
    db: Any = be.zeros((V,), W) if want_grad and b is not None else None
    part: Any = be.empty(W.shape, W) if want_grad and be is NUMPY else None
    total: Any = 0.0
    rows = np.empty(N, np.float64) if opts["reduction"] == "none" else None
    for r0 in range(0, N, chunk):
        r1 = min(N, r0 + chunk)
        z = buf[: r1 - r0]
        be.matmul(h[r0:r1], W.T, z)
        if b is not None:
            z += b
        zn = be.as_numpy(z)
        loss = xent_with_grad_into(zn, t[r0:r1], zn if want_grad else None, **opts)
        if rows is not None:
            rows[r0:r1] = loss
        else:
            total += loss
        if not want_grad:
            continue
        hs = h[r0:r1]
        if row_scale is not None:  # the gradient of sum_i s_i l_i: scale G's rows through its small factors
            s = row_scale[r0:r1][:, None]
            be.matmul(z, W, dh[r0:r1])
            dh[r0:r1] *= s
            hs = hs * s
            if db is not None:
                db += (z * s).sum(0)
        else:
            be.matmul(z, W, dh[r0:r1])
            if db is not None:
                db += z.sum(0)
        be.matmul_add(z.T, hs, dW, part)
    return (rows if rows is not None else total), dh, dW, db


def weight_sum(t: np.ndarray, ignored: np.ndarray, class_weight: np.ndarray | None) -> float:
    """The divisor of "mean": the number of counted targets, or the sum of their class weights."""
    y = t[~ignored]
    return float(y.size if class_weight is None else np.asarray(class_weight, np.float64)[y].sum())


def run_reduced(be: _Backend, h: Any, W: Any, b: Any, t: np.ndarray, chunk: int, opts: dict[str, Any],
                want_grad: bool, reduction: str, ignored: np.ndarray, wsum: float,
                row_scale: Any = None) -> tuple[Any, Any, Any, Any]:
    """run_chunks, then the reduction: "mean" divides the loss and the gradients by wsum (weight_sum);
    a zero wsum gives a NaN loss and NaN gradient rows except the ignored ones, as torch does."""
    mean = reduction == "mean"
    if mean and wsum == 0 and want_grad:
        row_scale = be.from_numpy(np.where(ignored, 0.0, np.nan), h)
    loss, dh, dW, db = run_chunks(be, h, W, b, t, chunk, opts, want_grad, row_scale)
    loss = np.asarray(loss, np.float64)
    if mean:
        s = 1.0 / wsum if wsum != 0 else math.nan
        loss = loss * s
        if want_grad and wsum != 0:
            for g in (dh, dW, db):
                if g is not None:
                    g *= s
    return loss, dh, dW, db


class _Args:
    def __init__(self, hidden, weight, targets, bias, chunk_size, class_weight, ignore_index, reduction,
                 label_smoothing, z_loss, softcap, temperature, num_threads):
        h = float_array(hidden, "hidden")
        W = float_array(weight, "weight")
        if h.dtype != W.dtype:
            raise TypeError(f"hidden ({h.dtype}) and weight ({W.dtype}) must have the same dtype")
        t = int_array(targets, "targets")
        b = None if bias is None else float_array(bias, "bias")
        cw = None if class_weight is None else np.asarray(class_weight)
        check_shapes(h.shape, W.shape, t.shape, None if b is None else b.shape, None if cw is None else cw.shape)
        if b is not None and b.dtype != h.dtype:
            raise TypeError(f"bias ({b.dtype}) must have hidden's dtype ({h.dtype})")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.out_dtype = h.dtype
        work = np.float32 if h.dtype == np.float16 else h.dtype  # float16 is computed in float32
        self.shape, self.reduction, self.V = t.shape, reduction, W.shape[0]
        self.h = np.ascontiguousarray(h.reshape(-1, h.shape[-1]), dtype=work)
        self.W = np.ascontiguousarray(W, dtype=work)
        self.b = None if b is None else np.ascontiguousarray(b, dtype=work)
        self.t = np.ascontiguousarray(t.reshape(-1))
        self.ignore_index = integer(ignore_index, "ignore_index", lambda v: -2**63 <= v < 2**63, "an int64")
        self.ignored = check_targets(self.t, self.V, self.ignore_index, t.shape)
        self.opts = dict(weight=cw, ignore_index=self.ignore_index, reduction="none" if reduction == "none" else "sum",
                         label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, temperature=temperature,
                         num_threads=num_threads)
        self.chunk = chunk_rows(self.h.shape[0], self.V, self.h.itemsize, chunk_size)
        self.weight_sum = weight_sum(self.t, self.ignored, cw)

    def run(self, want_grad: bool) -> tuple[Any, Any, Any, Any]:
        return run_reduced(NUMPY, self.h, self.W, self.b, self.t, self.chunk, self.opts, want_grad, self.reduction,
                           self.ignored, self.weight_sum)


def linear_cross_entropy_with_grad(hidden: ArrayLike, weight: ArrayLike, targets: ArrayLike, *,
                                   bias: ArrayLike | None = None, chunk_size: int | None = None,
                                   class_weight: ArrayLike | None = None, ignore_index: int = -100,
                                   reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                                   softcap: float | None = None, temperature: float = 1.0,
                                   num_threads: int | None = None
                                   ) -> tuple[float | NDArray[np.floating[Any]], NDArray[np.floating[Any]],
                                              NDArray[np.floating[Any]], NDArray[np.floating[Any]] | None]:
    """Cross-entropy of softmax(hidden @ weight.T + bias) against targets, and its gradients, without
    materializing the (N, V) logits.

    hidden (..., D), weight (V, D) (torch's F.linear convention), targets (...) integer, bias (V,).
    The loss options are those of fastlm.cross_entropy; the per-class weight is called class_weight here
    (weight is the matrix). Rows run in chunks of chunk_size (default: about 64 MiB of logits, at least
    256 rows): one matmul into a reused buffer, the fused kernel in place, then two matmuls for the
    gradients. float16 is computed in float32 and returned as float16.

    Returns
    -------
    (loss, d_hidden, d_weight, d_bias): loss as cross_entropy returns it; d_bias None without bias. For
    "none" the gradients are those of the sum of the per-position losses.
    """
    a = _Args(hidden, weight, targets, bias, chunk_size, class_weight, ignore_index, reduction, label_smoothing,
              z_loss, softcap, temperature, num_threads)
    loss, dh, dW, db = a.run(True)
    dt = a.out_dtype
    loss_out = loss.reshape(a.shape).astype(dt) if a.reduction == "none" else float(loss)
    return (loss_out, dh.reshape(np.shape(hidden)).astype(dt, copy=False), dW.astype(dt, copy=False),
            None if db is None else db.astype(dt, copy=False))


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, targets: ArrayLike, *, bias: ArrayLike | None = None,
                         chunk_size: int | None = None, class_weight: ArrayLike | None = None,
                         ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: float | None = None, temperature: float = 1.0,
                         num_threads: int | None = None) -> float | NDArray[np.floating[Any]]:
    """The loss of linear_cross_entropy_with_grad alone (evaluation): chunks of logits, no gradients."""
    a = _Args(hidden, weight, targets, bias, chunk_size, class_weight, ignore_index, reduction, label_smoothing,
              z_loss, softcap, temperature, num_threads)
    loss, *_ = a.run(False)
    return loss.reshape(a.shape).astype(a.out_dtype) if a.reduction == "none" else float(loss)
