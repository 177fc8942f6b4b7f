"""softmax, log_softmax and logsumexp over one axis, by the fused row kernels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels
from ._arrays import COMPUTE, check_out, float_array, normalize_axis, real, rows_in, write_rows
from ._config import resolve_threads

__all__ = ["softmax", "log_softmax", "logsumexp"]


def _temperature(t) -> float:
    return real(t, "temperature", lambda v: v >= 1e-30, "a finite number >= 1e-30")


def _prepare(x, axis, temperature, num_threads):
    """Checked arguments: (array, axis, 1/T, threads)."""
    a = float_array(x, "x")
    if a.ndim == 0:
        raise ValueError("x must have at least one dimension")
    return a, normalize_axis(axis, a.ndim), 1.0 / _temperature(temperature), resolve_threads(num_threads)


def _normalize(x, axis, temperature, out, num_threads, log):
    a, ax, inv_t, nt = _prepare(x, axis, temperature, num_threads)
    dtype = COMPUTE[a.dtype]
    out = np.empty(a.shape, a.dtype) if out is None else check_out(out, a.shape, a.dtype)
    xr = rows_in(np.moveaxis(a, ax, -1), dtype)
    write_rows(np.moveaxis(out, ax, -1), xr, dtype, lambda y: _kernels.softmax_rows(xr, y, inv_t, log, nt))
    return out


def softmax(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out: NDArray[np.floating[Any]] | None = None,
            num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Softmax over `axis`: p_i = exp(x_i / T) / sum_j exp(x_j / T), computed stably (max subtracted).

    Parameters
    ----------
    x : array_like of float16 / float32 / float64
    axis : int, default -1
    temperature : float > 0
        T; the logits are multiplied by 1/T.
    out : ndarray, optional
        Result array of x's shape and dtype; may be x itself (in place).
    num_threads : int, optional
        Threads over rows; default fastlm.get_num_threads(). Results do not depend on it.

    Returns
    -------
    ndarray of x's shape and dtype (float16 is computed in float32 and rounded back).

    Notes
    -----
    Follows torch.softmax on special values: -inf entries get probability 0; a slice holding NaN or
    +inf, or only -inf, becomes all NaN. float32 elements have a relative error of about 1e-6.
    """
    return _normalize(x, axis, temperature, out, num_threads, False)


def log_softmax(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0,
                out: NDArray[np.floating[Any]] | None = None,
                num_threads: int | None = None) -> NDArray[np.floating[Any]]:
    """Log-softmax over `axis`: x_i / T - logsumexp(x / T), as (x_i/T - max) - log(sum exp(x/T - max)).

    Same parameters and special values as softmax (-inf entries give -inf); torch.log_softmax's
    convention. float32 elements have an absolute error of about 1e-6 * max(1, |result|).
    """
    return _normalize(x, axis, temperature, out, num_threads, True)


def logsumexp(x: ArrayLike, axis: int = -1, *, temperature: float = 1.0,
              num_threads: int | None = None) -> np.floating[Any] | NDArray[np.floating[Any]]:
    """log sum_j exp(x_j / T) over `axis`, with the max subtracted; accumulated in float64.

    Returns an array of x's shape without `axis` (a scalar for 1-D x) in x's dtype. Follows
    scipy.special.logsumexp / torch.logsumexp on special values: an empty or all -inf slice gives -inf,
    a slice holding +inf gives +inf, NaN gives NaN.
    """
    a, ax, inv_t, nt = _prepare(x, axis, temperature, num_threads)
    moved = np.moveaxis(a, ax, -1)
    xr = rows_in(moved, COMPUTE[a.dtype])
    res = np.empty(math.prod(moved.shape[:-1]), np.float64)
    _kernels.logsumexp_rows(xr, inv_t, res, nt)
    return res.reshape(moved.shape[:-1]).astype(a.dtype)[()]
