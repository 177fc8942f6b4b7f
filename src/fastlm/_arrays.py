"""Argument checking and array layout shared by the API modules.

The kernels see 2-D row views: (rows, V), class axis contiguous, rows a non-negative whole number of
elements apart. Inputs that already have that layout (any leading dims that collapse to one stride,
read-only or not) are used without a copy; anything else is copied once.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

COMPUTE: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.float16): np.dtype(np.float32), np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64)}


def position(flat: int, shape) -> str:
    """The index of flat position `flat` in an array of `shape`, written "[i, j]" ("" for a 0-d shape)."""
    if not shape:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(int(flat), shape)) + "]"


def as_numpy(x, name: str) -> np.ndarray:
    """x as an ndarray, sharing x's memory where x allows: an ndarray as it is; an object with __dlpack__
    (a torch tensor, a JAX or CuPy CPU array) through np.from_dlpack, a view at any strides; anything
    else through np.asarray (__array__, the buffer protocol, nested sequences). An object __dlpack__
    cannot export to the CPU (a GPU tensor, a tensor that requires grad, a dtype NumPy lacks such as
    bfloat16) gives a TypeError naming the argument."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and not isinstance(x, (str, bytes)):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} ({type(x).__name__}) cannot be read as a CPU array: {e}") from None
    return np.asarray(x)


def float_array(x, name: str) -> np.ndarray:
    """x as an ndarray of a supported float dtype (float16 / float32 / float64, native byte order)."""
    a = as_numpy(x, name)
    if a.dtype.kind != "f" or a.dtype.newbyteorder("=") not in COMPUTE:
        raise TypeError(f"{name} must be a float16, float32 or float64 array, got dtype {a.dtype}")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
UINT64_MAX = 2**64 - 1
C_INT_MAX = 2**31 - 1


def _bound(v: int) -> str:
    """v as written in range messages: powers of two (and one less) as 2^k."""
    m = abs(v)
    if m > 4096 and m & (m - 1) == 0:
        return f"{'-' if v < 0 else ''}2^{m.bit_length() - 1}"
    if v > 4096 and v & (v + 1) == 0:
        return f"2^{v.bit_length()} - 1"
    return str(v)


def range_error(name: str, v: int, lo: int | None, hi: int | None, kind: str) -> ValueError:
    """The ValueError for an integer v outside [lo, hi], the range of the C type (`kind`) it is passed as."""
    side = "out of range"
    if hi is not None and v > hi:
        side = f"at most {_bound(hi)}"
    elif lo is not None and v < lo:
        side = f"at least {_bound(lo)}"
    return ValueError(f"{name} = {v} does not fit in {kind} ({side})")


def python_ints(a: np.ndarray, name: str, lo: int, hi: int, kind: str) -> None:
    """For an object array of integers (what np.asarray makes of a list holding an int beyond every NumPy
    integer dtype): ValueError naming the first entry outside [lo, hi]. Other arrays pass unchecked."""
    if a.dtype != object:
        return
    flat = a.reshape(-1)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in flat):
        return
    for j, v in enumerate(flat):
        if not lo <= int(v) <= hi:
            raise range_error(f"{name}{position(j, a.shape)}", int(v), lo, hi, kind)


def int_array(x, name: str) -> np.ndarray:
    """x as an int64 ndarray; TypeError unless its dtype is an integer one (bool is not); ValueError
    naming the first entry beyond int64 (a uint64 one, or a Python int)."""
    a = as_numpy(x, name)
    python_ints(a, name, INT64_MIN, INT64_MAX, "int64")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > INT64_MAX:
        flat = int(np.argmax(a.reshape(-1) > INT64_MAX))
        raise range_error(f"{name}{position(flat, a.shape)}", int(a.reshape(-1)[flat]), INT64_MIN, INT64_MAX,
                          "int64")
    return a.astype(np.int64, copy=False)


def real_array(value, name: str) -> np.ndarray:
    """value as a float64 array; TypeError unless it holds real numbers (None, strings, complex are not);
    ValueError for an integer beyond the float64 range."""
    a = np.asarray(value)
    if a.dtype.kind == "O" and all(isinstance(v, numbers.Real) for v in a.reshape(-1)):
        flat = a.reshape(-1)
        for j, v in enumerate(flat):
            try:
                float(v)
            except OverflowError:
                raise ValueError(f"{name}{position(j, a.shape)} = {v} is beyond the float64 range") from None
        a = a.astype(np.float64)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {value!r}")
    return a.astype(np.float64)


def real(value, name: str, ok, valid: str) -> float:
    """A finite real option with ok(value) true, as a float; `valid` words the rule for the message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond the float64 range
        v = math.nan
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return v


def integer(value, name: str, ok=None, valid: str = "", *, lo: int | None = INT64_MIN, hi: int | None = INT64_MAX,
            kind: str = "int64") -> int:
    """An integer option (bool is not one) with ok(value) true, as an int: TypeError for a non-integer,
    ValueError, worded by `valid`, for one out of range, and for one outside [lo, hi]: the range of the C
    type `kind` the kernels take it as (int64 unless said otherwise; None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if ok is not None and not ok(v):
        raise ValueError(f"{name} must be {valid}, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise range_error(name, v, lo, hi, kind)
    return v


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    axis = integer(axis, name, lo=None, hi=None)  # any int: out of range is an AxisError
    if not -ndim <= axis < ndim:
        raise getattr(np, "exceptions", np).AxisError(axis, ndim, name)
    return axis % ndim


def row_view(a: np.ndarray):
    """(rows, V) view of a (..., V) array without a copy, or None when its layout does not allow one."""
    V = a.shape[-1]
    lead = a.shape[:-1]
    rows = math.prod(lead)
    item = a.itemsize
    if a.size == 0:
        return a.reshape(rows, V)
    if not a.flags.aligned or (V > 1 and a.strides[-1] != item):
        return None
    stride = None  # the one stride the non-trivial leading dims must collapse to
    expected = None
    for n, st in zip(reversed(lead), reversed(a.strides[:-1])):
        if n == 1:
            continue
        if stride is None:
            stride = st
        elif st != expected:
            return None
        expected = st * n
    if rows <= 1 or stride is None:
        stride = V * item
    if stride < 0 or stride % item or stride // item < V:
        return None
    return np.lib.stride_tricks.as_strided(a, shape=(rows, V), strides=(stride, item))


def rows_in(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Row view of a in the compute dtype, copying only when needed."""
    if a.dtype == dtype:
        v = row_view(a)
        if v is not None:
            return v
    # a fresh C-ordered copy (np.ascontiguousarray would return an unaligned array unchanged)
    return np.array(a, dtype=dtype, order="C", copy=True).reshape(math.prod(a.shape[:-1]), a.shape[-1])


def check_out(out, shape, dtype, name: str = "out") -> np.ndarray:
    """A caller-supplied output: an ndarray of exactly this shape and dtype, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype.newbyteorder("=") != dtype.newbyteorder("="):  # either byte order is fine
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def write_rows(out: np.ndarray, src_rows: np.ndarray, dtype: np.dtype, kernel):
    """Run kernel(target) where target is a (rows, V) array of dtype the kernel fills, and land it in
    `out` (same shape as the rows, any layout): directly when out's layout allows (rows_out), else
    through a temporary copied in afterwards, so that out is never written before the kernel succeeds.
    Returns what kernel returns."""
    target = rows_out(out, src_rows, dtype)
    if target is not None:
        return kernel(target)
    tmp = np.empty(src_rows.shape, dtype)
    result = kernel(tmp)
    np.copyto(out, tmp.reshape(out.shape), casting="same_kind")
    return result


def rows_out(out: np.ndarray, src_rows: np.ndarray, dtype: np.dtype):
    """A row view of out the kernel can write directly: same dtype, row layout, and either the very same
    rows as the input (in place) or no memory shared with it. None means: write a temporary and copy."""
    if out.dtype != dtype:
        return None
    v = row_view(out)
    if v is None:
        return None
    if np.may_share_memory(v, src_rows):
        same = (v.__array_interface__["data"][0] == src_rows.__array_interface__["data"][0]
                and v.strides == src_rows.strides and v.shape == src_rows.shape)
        return v if same else None
    return v
