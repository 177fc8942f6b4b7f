"""Fuzzing every public function against fastlm.reference.

Each call gets random shapes (empty and size-1 dims, V = 1), layouts (transposed, negative strides,
strided, read-only, byte-swapped), dtypes (float16/32/64 and wrong ones), special values (NaN, +-inf,
1e30, 3e38, denormals) and valid or invalid options. The contract: the call returns what the float64
reference returns (within float32 / float16 tolerances) or raises ValueError / TypeError, and it raises
exactly when the input is invalid (the reference raises, or the documented validation rejects it).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlm
from fastlm import calibration, ngram
from fastlm import reference as ref

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)

FLOATS = [np.float16, np.float32, np.float64]
WRONG_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.object_, np.complex64, np.complex128]
COMPUTE = {np.float16: np.float32, np.float32: np.float32, np.float64: np.float64}
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -3e38, 1e-40, -1e-40, 5e-324, 0.0, -0.0]
OK_ERRORS = (ValueError, TypeError)


# ----------------------------------------------------------------------------------------- helpers

def outcome(fn, *args, **kwargs):
    """(True, result) or (False, exception) for ValueError / TypeError; anything else propagates."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return True, fn(*args, **kwargs)
    except OK_ERRORS as e:
        return False, e


def ref_outcome(fn, *args, **kwargs):
    """The reference's result, or the exception it raised (of any type: it does not validate)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return True, fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the reference signals bad data any way it happens to
        return False, e


def expect_error(fn, *args, **kwargs):
    ok, res = outcome(fn, *args, **kwargs)
    assert not ok, f"expected ValueError/TypeError, got {res!r}"


def rounded(a, dtype):
    """a rounded to dtype (as the result of a computation in dtype would be), back in float64."""
    with np.errstate(all="ignore"):
        return np.asarray(a, np.float64).astype(dtype).astype(np.float64)


def assert_match(got, want, rtol, atol=0.0):
    """Same shape, same NaN and +-inf positions, finite entries within atol + rtol |want| (atol may be an
    array broadcast against want)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions differ")
    np.testing.assert_array_equal(got == np.inf, want == np.inf, err_msg="+inf positions differ")
    np.testing.assert_array_equal(got == -np.inf, want == -np.inf, err_msg="-inf positions differ")
    atol = np.broadcast_to(np.asarray(atol, np.float64), want.shape)
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    tol = atol[fin] + rtol * np.abs(want[fin])
    bad = ~(err <= tol)
    assert not bad.any(), (f"{int(bad.sum())} entries off: got {got[fin][bad][:5]}, want {want[fin][bad][:5]}, "
                           f"tol {tol[bad][:5]}")


def tols(dtype):
    """(rtol, atol) of a result computed in dtype's compute precision, then rounded to dtype."""
    return {np.float16: (3e-3, 1e-6), np.float32: (1e-4, 1e-5), np.float64: (1e-9, 1e-12)}[dtype]


def native(dt):
    """dt in native byte order (an out= array of either byte order is accepted)."""
    return np.dtype(dt).newbyteorder("=")


def eps_of(dtype):
    return float(np.finfo(COMPUTE[dtype]).eps)


@st.composite
def float_data(draw, shape, dtype, grid=None, specials=True):
    """A float array of shape and dtype: a grid of multiples of 0.5 (exact ties, no near-ties) or normal
    values, with special values sprinkled in."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = draw(st.booleans()) if grid is None else grid
    if grid:
        x = rng.integers(-8, 9, size=shape) * 0.5
    else:
        x = rng.standard_normal(shape) * draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    if specials and x.size and draw(st.booleans()):
        n = draw(st.integers(1, max(1, x.size // 2)))
        pos = rng.integers(0, x.size, n)
        vals = draw(st.lists(st.sampled_from(SPECIALS), min_size=1, max_size=4))
        x.reshape(-1)[pos] = rng.choice(np.array(vals), n)
    with np.errstate(all="ignore"):
        return x.astype(dtype)


@st.composite
def relayout(draw, a):
    """An array equal to a with another memory layout (or flags)."""
    kind = draw(st.sampled_from(["c", "c", "f", "swap", "flip", "step", "readonly", "byteswap", "unaligned"]))
    if a.ndim == 0 or kind == "c":
        return a.copy()
    i = draw(st.integers(0, a.ndim - 1))
    if kind == "f":
        return np.asfortranarray(a)
    if kind == "swap":
        j = draw(st.integers(0, a.ndim - 1))
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, i, j)), i, j)
    if kind == "flip":
        return np.flip(np.ascontiguousarray(np.flip(a, i)), i)
    if kind == "step":
        shape = list(a.shape)
        shape[i] *= 2
        big = np.zeros(shape, a.dtype)
        idx = [slice(None)] * a.ndim
        idx[i] = slice(None, None, 2)
        big[tuple(idx)] = a
        return big[tuple(idx)]
    if kind == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if kind == "byteswap":
        return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<"))
    # unaligned: the same values at an odd byte offset
    buf = np.zeros(a.nbytes + 1, np.uint8)
    b = np.frombuffer(buf[1:].data, dtype=a.dtype, count=a.size).reshape(a.shape)
    if b.size:
        b[...] = a
    return b


def shapes(min_dims=1, max_dims=3, max_side=5, max_v=40):
    lead = st.lists(st.integers(0, max_side).filter(lambda n: True), min_size=min_dims - 1, max_size=max_dims - 1)
    V = st.sampled_from([0, 1, 1, 2, 3, 7, 8, 9, 17, max_v])
    return st.tuples(lead, V).map(lambda t: tuple(t[0]) + (t[1],))


def finite_max(x, axis=-1):
    """Per slice, max |x| over finite entries (0 for none), float64."""
    x = np.asarray(x, np.float64)
    return np.max(np.where(np.isfinite(x), np.abs(x), 0.0), axis=axis, initial=0.0)


def overflows(x, temperature, dtype):
    """Whether x / T leaves the compute dtype's range for some finite x (documented: float32 in float32)."""
    return finite_max(x, axis=None) / temperature > np.finfo(COMPUTE[dtype]).max / 4


THREADS = st.sampled_from([None, None, 1, 2])
BAD_THREADS = st.sampled_from([0, -1, 1.5, "2", True])
TEMPS = st.sampled_from([1.0, 1.0, 0.5, 2.0, 0.7, np.float32(1.5), 3])
BAD_TEMPS = st.sampled_from([0.0, -1.0, np.nan, np.inf, 1e-31, "1", None, True, 1j])


@st.composite
def temperature_option(draw):
    if draw(st.integers(0, 5)) == 0:
        return draw(BAD_TEMPS), False
    return draw(TEMPS), True


@st.composite
def threads_option(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(BAD_THREADS), False
    return draw(THREADS), True


@st.composite
def logits_input(draw, shape=None, dtypes=FLOATS, **kw):
    """(array passed to fastlm, float64 copy of its values, dtype)."""
    shape = draw(shapes(**kw)) if shape is None else shape
    dtype = draw(st.sampled_from(dtypes))
    x = draw(float_data(shape, dtype))
    return draw(relayout(x)), x.astype(np.float64), dtype


@st.composite
def out_option(draw, x, shape, dtype):
    """(out argument, valid?, in_place?) for a result of shape and dtype computed from input x."""
    kind = draw(st.sampled_from(["none", "none", "fresh", "inplace", "strided", "overlap", "shape", "dtype",
                                 "readonly", "list", "byteswap"]))
    if kind == "none":
        return None, True, False
    if kind == "fresh":
        return np.full(shape, 7, dtype), True, False
    if kind == "inplace":
        if isinstance(x, np.ndarray) and x.dtype == dtype and x.shape == shape and x.flags.writeable:
            return x, True, True
        return None, True, False
    if kind == "strided":
        big = np.full(tuple(2 * n for n in shape), 7, dtype)
        return big[tuple(slice(None, None, 2) for _ in shape)], True, False
    if kind == "overlap":
        return None, True, False
    if kind == "shape":
        return np.empty(shape + (1,), dtype), False, False
    if kind == "dtype":
        other = np.float64 if dtype != np.float64 else np.float32
        return np.empty(shape, other), False, False
    if kind == "readonly":
        o = np.empty(shape, dtype)
        o.setflags(write=False)
        return o, False, False
    if kind == "list":
        return np.empty(shape, dtype).tolist(), False, False
    o = np.empty(shape, np.dtype(dtype).newbyteorder(">"))
    return o, True, False


# ---------------------------------------------------------------------------------- softmax family

@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_softmax_family(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input())
    fn_name = draw(st.sampled_from(["softmax", "log_softmax", "logsumexp"]))
    axis_valid = True
    if draw(st.integers(0, 7)) == 0:
        axis = draw(st.sampled_from([x.ndim, -x.ndim - 1, 1.5, "0", None, True]))
        axis_valid = False
    else:
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
    T, t_valid = draw(temperature_option())
    nt, nt_valid = draw(threads_option())
    kwargs = dict(temperature=T, num_threads=nt)
    out_valid, in_place = True, False
    if fn_name != "logsumexp":
        out, out_valid, in_place = draw(out_option(x, x.shape, dtype))
        kwargs["out"] = out
    if draw(st.integers(0, 12)) == 0:  # a wrong dtype
        with np.errstate(invalid="ignore"):  # NaN / inf cast to an integer dtype
            x = x64.astype(draw(st.sampled_from(WRONG_DTYPES)))
        ok, res = outcome(getattr(fastlm, fn_name), x, axis, **kwargs)
        assert not ok
        return
    valid = axis_valid and t_valid and nt_valid and out_valid
    ok, res = outcome(getattr(fastlm, fn_name), x, axis, **kwargs)
    if not valid:
        assert not ok, f"invalid option accepted: axis={axis!r} T={T!r} threads={nt!r}"
        return
    assert ok, f"valid call raised {res!r}"
    if overflows(x64, T, dtype):
        return  # x / T overflows the compute dtype: documented as computed in that precision
    if fn_name != "logsumexp":
        assert isinstance(res, np.ndarray) and native(res.dtype) == dtype and res.shape == x.shape
        if in_place:
            assert res is x
        if x.size == 0:
            return  # the reference cannot take the max of an empty slice
    else:
        assert np.asarray(res).dtype == dtype
    rok, want = ref_outcome(getattr(ref, fn_name), x64, axis, temperature=float(T))
    assert rok, want
    rtol, atol = tols(dtype)
    cond = 8 * eps_of(dtype) * finite_max(np.moveaxis(x64, axis, -1)) / float(T)
    if fn_name == "softmax":
        w = np.moveaxis(rounded(want, dtype), axis, -1)
        r = np.moveaxis(np.asarray(res), axis, -1)
        assert_match(r, w, rtol, atol + np.abs(w) * cond[..., None])
    elif fn_name == "log_softmax":
        w = np.moveaxis(rounded(want, dtype), axis, -1)
        r = np.moveaxis(np.asarray(res), axis, -1)
        assert_match(r, w, rtol, atol + cond[..., None])
    else:
        assert_match(res, rounded(want, dtype), rtol, atol + cond)


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_softmax_overlapping_out(data):
    """out sharing memory with x, shifted by one element: the result is still the reference's."""
    V = data.draw(st.integers(1, 20))
    rows = data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from(FLOATS))
    buf = data.draw(float_data((rows * V + 1,), dtype, specials=False))
    x = buf[1:].reshape(rows, V)
    out = buf[:-1].reshape(rows, V)
    want = ref.softmax(x.astype(np.float64))
    res = fastlm.softmax(x, out=out)
    assert res is out
    rtol, atol = tols(dtype)
    assert_match(out, rounded(want, dtype), rtol, atol)


# ---------------------------------------------------------------------------------- cross-entropy

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_cross_entropy_family(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input(max_dims=3, max_v=33))
    lead, V = x.shape[:-1], x.shape[-1]
    fn_name = draw(st.sampled_from(["cross_entropy", "cross_entropy_with_grad", "token_logprobs", "perplexity",
                                    "bits_per_token"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ignore_index = draw(st.sampled_from([-100, -100, -1, 0, 3]))
    valid = True
    # targets: mostly valid class ids, sometimes ignored or out of range
    t = rng.integers(0, max(V, 1), size=lead)
    if t.size and draw(st.booleans()):
        t.reshape(-1)[rng.integers(0, t.size, draw(st.integers(1, t.size)))] = ignore_index
    if t.size and draw(st.integers(0, 5)) == 0:
        t.reshape(-1)[rng.integers(0, t.size)] = draw(st.sampled_from([V, V + 5, -2, -101]))
    tdtype = draw(st.sampled_from(INT_DTYPES))
    if (t < 0).any() and np.dtype(tdtype).kind == "u":
        tdtype = np.int64
    if t.size and (t.max() > np.iinfo(tdtype).max or t.min() < np.iinfo(tdtype).min):
        tdtype = np.int64
    targets = t.astype(tdtype)
    if draw(st.integers(0, 12)) == 0:
        targets = draw(st.sampled_from([t.astype(np.float64), t.astype(bool), t.astype(object),
                                        t.reshape(-1)[:-1] if t.size else np.zeros(1, np.int64),
                                        t[..., None]]))
        valid = False
    if V == 0 and (t != ignore_index).any():
        pass  # a target with no class: the reference raises
    kwargs = {"ignore_index": ignore_index}
    if draw(st.integers(0, 15)) == 0:
        kwargs["ignore_index"] = draw(st.sampled_from([1.5, "a", None, 2**64]))
        valid = False
    nt, nt_ok = draw(threads_option())
    kwargs["num_threads"] = nt
    valid &= nt_ok
    T = 1.0
    if fn_name in ("cross_entropy", "cross_entropy_with_grad", "token_logprobs"):
        T, t_ok = draw(temperature_option())
        kwargs["temperature"] = T
        valid &= t_ok
    grad_in_place = False
    if fn_name in ("cross_entropy", "cross_entropy_with_grad"):
        # at most one invalid option per call, so that most calls reach the comparison
        bad = draw(st.sampled_from([None] * 6 + ["reduction", "ls", "zl", "sc", "weight"]))
        red = draw(st.sampled_from(["avg", None] if bad == "reduction" else ["mean", "sum", "none"]))
        valid &= red in ("mean", "sum", "none")
        kwargs["reduction"] = red
        ls = draw(st.sampled_from([-0.1, 1.5, np.nan, "0.1"] if bad == "ls" else [0.0, 0.1, 0.3, 1.0]))
        zl = draw(st.sampled_from([-1.0, np.inf] if bad == "zl" else [0.0, 0.0, 1e-4, 0.5]))
        sc = draw(st.sampled_from([0.0, -5.0, np.nan, "c"] if bad == "sc" else [None, None, 30.0, 1.0]))
        valid &= isinstance(ls, float) and 0 <= ls <= 1
        valid &= zl >= 0 and math.isfinite(zl)
        valid &= sc is None or (isinstance(sc, float) and sc > 0)
        kwargs.update(label_smoothing=ls, z_loss=zl, softcap=sc)
        wkind = draw(st.sampled_from(["shape", "str", "complex"] if bad == "weight" else ["none", "ok", "int"]))
        if wkind != "none":
            w = rng.choice(np.array([0.0, 0.5, 1.0, 2.0, 3.0]), size=V)
            w = {"ok": w, "int": w.astype(np.int64), "shape": np.ones(V + 1), "str": w.astype(str),
                 "complex": w.astype(complex)}[wkind]
            valid &= wkind in ("ok", "int")
            kwargs["weight"] = w
        if fn_name == "cross_entropy_with_grad":
            g, g_ok, grad_in_place = draw(out_option(x, x.shape, dtype))
            kwargs["grad_out"] = g
            valid &= g_ok
    if draw(st.integers(0, 15)) == 0:
        with np.errstate(invalid="ignore"):  # NaN / inf cast to an integer dtype
            x = x64.astype(draw(st.sampled_from(WRONG_DTYPES)))
        valid = False
    # the reference, on the values (options it does not check are checked above)
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in ("num_threads", "grad_out")}
    if "temperature" in ref_kwargs and valid:
        ref_kwargs["temperature"] = float(ref_kwargs["temperature"])
    if "weight" in ref_kwargs and valid:
        ref_kwargs["weight"] = np.asarray(ref_kwargs["weight"], np.float64)
    if valid:
        rok, want = ref_outcome(getattr(ref, fn_name), x64, t, **ref_kwargs)
    ok, res = outcome(getattr(fastlm, fn_name), x, targets, **kwargs)
    if not valid:
        assert not ok, f"invalid call accepted: {kwargs}"
        return
    if not rok and V == 0 and "zero-size" in str(want):
        # the reference cannot reduce an empty class axis; every target must then be ignored
        assert ok == bool((t == ignore_index).all()), (ok, res)
        if ok and fn_name == "token_logprobs":
            np.testing.assert_array_equal(res, np.zeros(lead))
        return
    if not rok:
        assert not ok, f"reference raised {want!r} but fastlm returned {res!r}"
        return
    assert ok, f"valid call raised {res!r}"
    if overflows(x64, float(T), dtype):
        return
    rtol, atol = tols(dtype)
    eps = eps_of(dtype)
    zmax = finite_max(x64) / float(T)  # per row
    z_loss = kwargs.get("z_loss", 0.0)
    if fn_name == "cross_entropy_with_grad":
        loss, grad = res
        want_loss, want_grad = want
        assert isinstance(grad, np.ndarray) and grad.shape == x.shape and native(grad.dtype) == dtype
        if grad_in_place:
            assert grad is x
    else:
        loss, want_loss = res, want
    # loss (scalar or per position); the error of one row's loss grows with its logits' magnitude
    row_tol = 16 * eps * (1 + zmax) * (1 + 2 * z_loss * (1 + zmax))
    if isinstance(want_loss, float):
        assert isinstance(loss, float)
        scale = float(np.sum(np.where(np.isfinite(row_tol), row_tol, 0))) if row_tol.size else 0.0
        w = kwargs.get("weight")
        denom = 1.0
        if kwargs.get("reduction", "mean") == "mean" and np.size(t):
            ww = np.ones(V) if w is None else np.asarray(w, np.float64)
            keep = t != ignore_index
            denom = max(float(np.sum(np.where(keep, ww[np.where(keep, t, 0)], 0.0))), 1e-300)
            scale *= float(np.max(ww, initial=1.0))
        if fn_name in ("perplexity",):
            assert_match(loss, want_loss, 1e-3 if dtype != np.float64 else 1e-8, 0)
        else:
            assert_match(loss, want_loss, rtol, atol + 4 * scale / denom)
    else:
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype and loss.shape == lead
        w = kwargs.get("weight")
        wmax = 1.0 if w is None else float(np.max(np.abs(np.asarray(w, np.float64)), initial=1.0))
        assert_match(loss, rounded(want_loss, dtype), rtol, atol + row_tol * wmax)
    if fn_name == "cross_entropy_with_grad":
        gscale = float(np.max(np.abs(np.where(np.isfinite(want_grad), want_grad, 0)), initial=0))
        # plus one step of dtype's subnormals: both sides are rounded to dtype there
        assert_match(grad, rounded(want_grad, dtype), rtol, atol * max(gscale, 1e-3) + gscale * 16 * eps * (
            1 + zmax[..., None]) + float(np.finfo(dtype).smallest_subnormal))


# --------------------------------------------------------------------------------------- decoding

def row_invalid(x64):
    """Whether some row holds NaN or no logit above -inf (decoding raises on such rows)."""
    x2 = x64.reshape(math.prod(x64.shape[:-1]), x64.shape[-1])
    return bool(np.isnan(x2).any() or (~(x2 > -np.inf).any(axis=1)).any()) if x2.shape[0] else False


@st.composite
def per_row(draw, lead, valid_values, invalid_values, integer=False, bad=None):
    """(value, valid?, values per row as float64 array or None): a scalar or an array of the leading
    shape; or (bad=True; bad=None: sometimes) one of a wrong shape or dtype, or with an invalid value."""
    kinds = ["scalar", "scalar", "array"] if not bad else []
    kinds += ["badvalue", "badshape", "baddtype"] if bad is not False else []
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        v = draw(st.sampled_from(valid_values))
        return v, True, np.full(lead, v, np.float64)
    if kind == "array":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        arr = np.asarray(rng.choice(np.array(valid_values, dtype=np.float64), size=lead))
        if integer:
            arr = arr.astype(np.int64)
        return arr, True, arr.astype(np.float64)
    if kind == "badvalue":
        return draw(st.sampled_from(invalid_values)), False, None
    if kind == "badshape":
        return np.zeros(tuple(lead) + (2,), np.int64 if integer else np.float64), False, None
    return draw(st.sampled_from([np.array("a"), np.array(True), np.array(1 + 1j), np.array([None] * 1).reshape(())]
                                + ([np.array(1.5)] if integer else []))), False, None


FILTERS = {
    "top_k_filter": (list(range(-1, 12)) + [100], [1.5, np.nan, "3", None]),
    "top_p_filter": ([0.0, 0.1, 0.5, 0.9, 0.95, 1.0], [-0.1, 1.1, np.nan, np.inf, "0.5", None]),
    "min_p_filter": ([0.0, 0.05, 0.1, 0.5, 1.0], [-0.1, 1.5, np.nan, "0.1", None]),
    "typical_filter": ([0.1, 0.5, 0.9, 0.95, 1.0], [0.0, -0.2, 1.01, np.nan, "0.9", None]),
}


def ref_keep(fn_name, x64, params, mtk):
    """Reference keep mask with per-row params (NaN as the sentinel filter value)."""
    out = getattr(ref, fn_name)(x64, params, min_tokens_to_keep=mtk, filter_value=np.nan)
    return ~np.isnan(out)


def typical_ambiguous(row, mass, delta):
    """Whether the typical set of this row is within rounding of another: near-tied scores or a
    cumulative mass near `mass`."""
    probs = ref._probs(row)
    with np.errstate(divide="ignore", invalid="ignore"):
        nl = -np.log(probs)
    ent = np.sum(probs[probs > 0] * nl[probs > 0])
    score = np.abs(nl - ent)
    fin = np.sort(score[np.isfinite(score)])
    if fin.size > 1 and (np.diff(fin) <= delta * (1 + np.abs(fin[1:]))).any():
        return True
    order = np.lexsort((np.arange(row.size), score))
    cum = np.cumsum(probs[order])
    return bool((np.abs(cum - mass) <= delta).any())


@settings(max_examples=400, **SETTINGS)
@given(data=st.data())
def test_filters(data):
    draw = data.draw
    fn_name = draw(st.sampled_from(sorted(FILTERS)))
    x, x64, dtype = draw(logits_input(max_v=33))
    lead = x.shape[:-1]
    good, bad = FILTERS[fn_name]
    param, valid, prow = draw(per_row(lead, good, bad, integer=fn_name == "top_k_filter"))
    mtk = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, 3, 0, -1, 1.0, True]))
    valid &= isinstance(mtk, int) and not isinstance(mtk, bool) and mtk >= 1
    fv = draw(st.sampled_from([-np.inf, -np.inf, -np.inf, -1e4, 0.0, np.inf, -np.inf, -1e4, np.nan, "x", None]))
    valid &= isinstance(fv, float) and not math.isnan(fv)
    out, out_ok, in_place = draw(out_option(x, x.shape, dtype))
    valid &= out_ok
    nt, nt_ok = draw(threads_option())
    valid &= nt_ok
    if valid and row_invalid(x64):
        valid = False  # NaN or all -inf rows raise, as the reference's
    if valid and x.shape[-1] == 0 and math.prod(lead) > 0:
        valid = False  # a row with no logit above -inf
    ok, res = outcome(getattr(fastlm, fn_name), x, param, min_tokens_to_keep=mtk, filter_value=fv, out=out,
                      num_threads=nt)
    if not valid:
        assert not ok, f"invalid call accepted: param={param!r} mtk={mtk!r} fv={fv!r}"
        return
    assert ok, f"valid call raised {res!r}"
    assert isinstance(res, np.ndarray) and res.shape == x.shape and native(res.dtype) == dtype
    if in_place:
        assert res is x
    got = np.asarray(res, np.float64)
    fill = rounded(fv, dtype)
    # kept entries hold the logit, filtered ones the filter value
    kept = got == x64
    assert np.all(kept | (got == fill)), "an entry is neither its logit nor filter_value"
    if x.size == 0:
        return
    kept_got = kept & ~((x64 == fill) & (got == fill))  # ambiguous where the logit equals the fill
    ambiguous = (x64 == fill)
    if fn_name == "top_k_filter":
        keep_less = keep_more = ref_keep(fn_name, x64, prow.astype(np.int64), mtk)
    else:
        delta = max(1e-7, 64 * x.shape[-1] * eps_of(dtype))
        lo, hi = np.clip(prow - delta, 0, 1), np.clip(prow + delta, 0, 1)
        if fn_name == "min_p_filter":
            lo, hi = hi, lo  # a larger min_p keeps fewer tokens
        if fn_name == "typical_filter":
            lo = np.maximum(lo, 1e-12)
        keep_less = ref_keep(fn_name, x64, lo, mtk)
        keep_more = ref_keep(fn_name, x64, hi, mtk)
    bad_less = keep_less & ~kept_got & ~ambiguous
    bad_more = kept_got & ~keep_more & ~ambiguous
    if fn_name == "typical_filter" and (bad_less.any() or bad_more.any()):
        rows = np.flatnonzero((bad_less | bad_more).reshape(-1, x.shape[-1]).any(axis=1))
        x2, p2 = x64.reshape(-1, x.shape[-1]), prow.reshape(-1)
        if all(typical_ambiguous(x2[r], p2[r], 1e-4 if dtype != np.float64 else 1e-9) for r in rows):
            return
    assert not bad_less.any(), f"{fn_name} dropped tokens the reference keeps: {np.argwhere(bad_less)[:5]}"
    assert not bad_more.any(), f"{fn_name} kept tokens the reference drops: {np.argwhere(bad_more)[:5]}"


@settings(max_examples=250, **SETTINGS)
@given(data=st.data())
def test_greedy_and_sample(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input(max_v=33))
    lead = x.shape[:-1]
    nt, valid = draw(threads_option())
    if row_invalid(x64) or (x.shape[-1] == 0 and math.prod(lead) > 0):
        valid = False
    if draw(st.booleans()):
        ok, res = outcome(fastlm.greedy, x, num_threads=nt)
        if not valid:
            assert not ok
            return
        assert ok, res
        assert np.asarray(res).dtype == np.int64 and np.shape(res) == lead
        if x.size:
            np.testing.assert_array_equal(res, ref.greedy(x64))
        return
    bad = draw(st.sampled_from([None] * 4 + ["T", "K", "P", "M"]))
    T, tv, Trow = draw(per_row(lead, [0.0, 1.0, 0.5, 2.0, 0.7], [-1.0, np.nan, np.inf, 1e-31, "1"], bad=bad == "T"))
    K, kv, Krow = draw(per_row(lead, [0, -1, 1, 2, 5, 100], [1.5, "2", None], integer=True, bad=bad == "K"))
    P, pv, Prow = draw(per_row(lead, [1.0, 0.0, 0.5, 0.9], [-0.5, 1.5, np.nan], bad=bad == "P"))
    M, mv, Mrow = draw(per_row(lead, [0.0, 0.1, 0.5, 1.0], [-0.5, 2.0, np.nan], bad=bad == "M"))
    seed = draw(st.sampled_from([0, 1, 12345, 2**63, None, np.uint64(2**64 - 1), -1, 1.5, "s",
                                 np.arange(math.prod(lead)).reshape(lead) if lead else 3]))
    seed_ok = seed is None or (isinstance(seed, (int, np.integer, np.ndarray)) and not isinstance(seed, bool)
                               and np.all(np.asarray(seed) >= 0))
    valid &= tv and kv and pv and mv and seed_ok
    ok, res = outcome(fastlm.sample, x, temperature=T, top_k=K, top_p=P, min_p=M, seed=seed, num_threads=nt)
    if not valid:
        assert not ok, f"invalid call accepted T={T!r} K={K!r} P={P!r} M={M!r} seed={seed!r}"
        return
    assert ok, f"valid call raised {res!r}"
    ids = np.asarray(res)
    assert ids.dtype == np.int64 and ids.shape == lead
    if x.shape[-1] == 0 or ids.size == 0:
        return
    Tsafe = np.where(Trow > 0, Trow, 1.0)
    if (finite_max(x64)[..., None] / Tsafe[..., None] > np.finfo(COMPUTE[dtype]).max / 4).any():
        return
    delta = max(1e-7, 64 * x.shape[-1] * eps_of(dtype))
    dist = ref.sample_distribution(x64, temperature=Trow, top_k=Krow.astype(np.int64),
                                   top_p=np.where(Prow < 1, np.minimum(Prow + delta, 1.0), 1.0),
                                   min_p=np.maximum(Mrow - delta, 0.0))
    picked = np.take_along_axis(dist, ids[..., None], axis=-1)[..., 0]
    assert (picked > 0).all(), f"sampled ids {ids} with reference probability {picked}"
    if seed is not None:  # reproducible for an integer seed
        again = fastlm.sample(x, temperature=T, top_k=K, top_p=P, min_p=M, seed=seed, num_threads=1)
        np.testing.assert_array_equal(again, ids)


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_penalties_bias_mask(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input(max_v=20))
    lead, V = x.shape[:-1], x.shape[-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    which = draw(st.sampled_from(["penalties", "bias", "mask"]))
    out, valid, in_place = draw(out_option(x, x.shape, dtype))
    rtol, atol = tols(dtype)
    if which == "penalties":
        L = draw(st.integers(1, 6))
        h = rng.integers(-1, max(V, 1), size=lead + (L,))
        if V == 0:
            h[...] = -1
        hist = h
        kind = draw(st.sampled_from(["ok", "ok", "ok", "range", "neg", "shape", "float", "bool"]))
        if kind == "range" and h.size:
            hist = h.copy()
            hist.reshape(-1)[0] = V
        elif kind == "neg" and h.size:
            hist = h.copy()
            hist.reshape(-1)[0] = -2
        elif kind == "shape":
            hist = np.zeros(lead[:-1] + (L,), np.int64) if lead else np.zeros((), np.int64)
        elif kind == "float":
            hist = h.astype(np.float64)
        elif kind == "bool":
            hist = h.astype(bool)
        valid &= kind == "ok" or (kind in ("range", "neg") and h.size == 0)
        if kind == "shape" and lead and lead[:-1] + (L,) == lead + (L,):
            valid = False
        theta = draw(st.sampled_from([1.0, 1.3, 0.5, 2, 0.0, -1.0, np.nan, np.inf, "2", True]))
        pres = draw(st.sampled_from([0.0, 0.5, -1.0, 2, np.inf, np.nan, None]))
        freq = draw(st.sampled_from([0.0, 0.25, -0.5, np.inf, "f"]))
        valid &= not isinstance(theta, (str, bool)) and math.isfinite(theta) and theta > 0
        valid &= pres is not None and math.isfinite(pres)
        valid &= not isinstance(freq, str) and math.isfinite(freq)
        ok, res = outcome(fastlm.apply_penalties, x, hist, repetition_penalty=theta, presence_penalty=pres,
                          frequency_penalty=freq, out=out)
        if not valid:
            assert not ok, f"invalid call accepted: {kind} theta={theta!r} pres={pres!r} freq={freq!r}"
            return
        assert ok, res
        if x.size == 0:
            return
        want = ref.apply_penalties(x64, h, repetition_penalty=float(theta), presence_penalty=float(pres),
                                   frequency_penalty=float(freq))
        counts = np.zeros(x64.reshape(-1, V).shape) if V else np.zeros((0, 0))
        for i, row in enumerate(h.reshape(-1, L)):
            for tok in row[row >= 0]:
                counts[i, tok] += 1
        scale = np.abs(x64).reshape(counts.shape) + counts * abs(freq) + abs(pres)
        assert_match(res, rounded(want, dtype), rtol, atol + 4 * eps_of(dtype) * scale.reshape(x.shape))
    elif which == "bias":
        n = draw(st.integers(0, 4))
        ids = rng.integers(0, max(V, 1), n)
        vals = rng.choice(np.array([1.0, -2.5, 0.0, 100.0, -np.inf, 1e30]), n)
        kind = draw(st.sampled_from(["dict", "pair", "pair", "range", "neg", "float_ids", "lengths", "scalar",
                                     "complex"]))
        if V == 0 and n:
            kind = "range"
        bias = {"dict": dict(zip(ids.tolist(), vals.tolist())), "pair": (ids, vals),
                "range": (np.append(ids, V), np.append(vals, 1.0)), "neg": (np.append(ids, -1), np.append(vals, 1.0)),
                "float_ids": (ids + 0.5, vals), "lengths": (ids, np.append(vals, 1.0)), "scalar": 5,
                "complex": (ids, vals + 1j)}[kind]
        valid &= kind in ("dict", "pair") or (kind == "float_ids" and n == 0)  # no ids: [] is fine
        ok, res = outcome(fastlm.apply_logit_bias, x, bias, out=out)
        if not valid:
            assert not ok, f"invalid bias accepted: {kind}"
            return
        assert ok, res
        if x.size == 0:
            return
        want = ref.apply_logit_bias(x64, bias)
        assert_match(res, rounded(want, dtype), rtol, atol + 4 * eps_of(dtype) * (np.abs(x64) + 100))
    else:
        allowed = None if draw(st.booleans()) else rng.integers(0, max(V, 1), draw(st.integers(0, 4)))
        banned = None if draw(st.booleans()) else rng.integers(0, max(V, 1), draw(st.integers(0, 4)))
        if V == 0:
            allowed = None if allowed is None else allowed[:0]
            banned = None if banned is None else banned[:0]
        kind = draw(st.sampled_from(["ok", "ok", "range", "float", "list", "scalar"]))
        if kind == "range":
            banned = [V]
        elif kind == "float":
            allowed = [0.5]
        elif kind == "list" and allowed is not None:
            allowed = allowed.tolist()
        elif kind == "scalar" and V:
            banned = 0
        valid &= kind in ("ok", "list", "scalar")
        ok, res = outcome(fastlm.mask_tokens, x, allowed=allowed, banned=banned, out=out)
        if not valid:
            assert not ok, f"invalid ids accepted: {kind}"
            return
        assert ok, res
        if x.size == 0:
            return
        want = ref.mask_tokens(x64, allowed=allowed, banned=banned)
        assert_match(res, rounded(want, dtype), 0, 0)
    assert isinstance(res, np.ndarray) and res.shape == x.shape and native(res.dtype) == dtype
    if in_place:
        assert res is x


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_cfg_mix(data):
    draw = data.draw
    c, c64, dtype = draw(logits_input(max_v=20))
    u = draw(relayout(draw(float_data(c.shape, dtype))))
    u64 = np.asarray(u, np.float64)
    g = draw(st.sampled_from([0.0, 1.0, 1.5, 3, -0.5, np.nan, np.inf, "g", None]))
    valid = not isinstance(g, (str, type(None))) and math.isfinite(g)
    kind = draw(st.sampled_from(["ok", "ok", "ok", "shape", "dtype"]))
    if kind == "shape":
        u = np.zeros(c.shape + (1,), dtype)
        valid = False
    elif kind == "dtype":
        u = u64.astype(np.int64)
        valid = False
    ok, res = outcome(fastlm.cfg_mix, c, u, g)
    if not valid:
        assert not ok, f"invalid cfg_mix accepted: g={g!r} {kind}"
        return
    assert ok, res
    assert res.shape == c.shape and native(res.dtype) == dtype
    if c.size == 0:
        return
    want = ref.cfg_mix(c64, u64, float(g))
    lc, lu = ref.log_softmax(c64), ref.log_softmax(u64)
    # the mix is taken in the logits' dtype: rounding of both log-probabilities, amplified by g
    with np.errstate(all="ignore"):
        scale = np.where(np.isfinite(lu), np.abs(lu), 0) + abs(g) * np.where(np.isfinite(lc - lu), np.abs(lc - lu), 0)
    cond = 8 * float(np.finfo(dtype).eps) * scale + 8 * eps_of(dtype) * (1 + 2 * abs(g)) * (
        1 + finite_max(c64) + finite_max(u64))[..., None]
    rtol, atol = tols(dtype)
    # the mix subtracts two log-probabilities: where both are -inf the reference gives NaN
    assert_match(res, rounded(want, dtype), rtol, atol + cond)


def make_step_fn(V, dtype, salt, bad=None):
    """A deterministic model: logits from a hash of each sequence (grid values, so ties happen)."""
    calls = []

    def step_fn(seqs):
        calls.append(seqs.shape)
        h = (seqs.astype(np.int64) * 7919 + salt).sum(axis=1) + seqs.shape[1] * 31
        cols = np.arange(V)
        vals = ((h[:, None] * 2654435761 + cols * 40503) % 13 - 6).astype(np.float64) * 0.5
        if bad == "nan":
            vals[0, 0] = np.nan
        if bad == "shape":
            return vals[:, :, None]
        if bad == "rows":
            return np.vstack([vals, vals])
        if bad == "int":
            return vals.astype(np.int64)
        return vals.astype(dtype)
    return step_fn, calls


def beam_ties(step_fn, prompt, V, max_new, eos, lp, rel=1e-6):
    """Whether two distinct hypotheses tie (within rel) anywhere beam search compares them: the running
    sums of the prefixes of one length, or the finished scores. Rounding then decides, differently in
    float32 and float64, so either sequence is right."""
    def close(vals):
        v = np.sort(np.asarray(vals, np.float64))
        v = v[np.isfinite(v)]
        return v.size > 1 and bool((np.diff(v) <= rel * (1 + np.abs(v[1:]))).any())

    frontier, finished = [(list(prompt), 0.0)], []
    for t in range(1, max_new + 1):
        rows = np.asarray(step_fn(np.array([q for q, _ in frontier], dtype=np.int64)), np.float64)
        nxt, sums = [], []
        for (q, total), row in zip(frontier, rows):
            for tok, l in enumerate(ref.log_softmax(row)):
                sums.append(total + l)
                if (eos is not None and tok == eos) or t == max_new:
                    finished.append((total + l) / t ** lp)
                else:
                    nxt.append((q + [tok], total + l))
        if close(sums):
            return True
        frontier = nxt
        if not frontier:
            break
    return close(finished)


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_beam_search(data):
    draw = data.draw
    V = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    salt = draw(st.integers(0, 1000))
    which = draw(st.sampled_from([None] * 8 + ["nan", "shape", "rows", "int", "beams", "max_new", "eos", "lp",
                                             "es"]))
    bad = which if which in ("nan", "shape", "rows", "int") else None
    step_fn, _ = make_step_fn(V, dtype, salt, bad)
    prompt = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    num_beams = draw(st.sampled_from([0, 1.5, True] if which == "beams" else [1, 2, 3]))
    max_new = draw(st.sampled_from([0, -1, 2.0] if which == "max_new" else [1, 2, 3]))
    eos = draw(st.sampled_from([V, -1, 1.5, True] if which == "eos" else [None, 0, 1 % V, V - 1]))
    lp = draw(st.sampled_from([np.nan, "x", np.inf] if which == "lp" else [1.0, 0.0, 2.0, -1.0]))
    es = draw(st.sampled_from(["sometimes", None] if which == "es" else [False, True, "never"]))
    valid = bad is None
    valid &= isinstance(num_beams, int) and not isinstance(num_beams, bool) and num_beams >= 1
    valid &= isinstance(max_new, int) and max_new >= 1
    valid &= eos is None or (isinstance(eos, int) and not isinstance(eos, bool) and 0 <= eos < V)
    valid &= isinstance(lp, float) and math.isfinite(lp)
    valid &= es in (False, True, "never")
    if bad == "rows" and num_beams != 1:
        pass
    ok, res = outcome(fastlm.beam_search, step_fn, np.array(prompt, dtype=np.int64), num_beams=num_beams,
                      max_new_tokens=max_new, eos_id=eos, length_penalty=lp, early_stopping=es)
    if not valid:
        assert not ok, (f"invalid beam_search accepted: beams={num_beams!r} max_new={max_new!r} eos={eos!r} "
                        f"lp={lp!r} es={es!r} bad={bad}")
        return
    assert ok, res
    want = ref.beam_search(step_fn, prompt, num_beams=num_beams, max_new_tokens=max_new, eos_id=eos,
                           length_penalty=lp, early_stopping=es)
    assert len(res) == len(want)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    got_scores = np.array([s for _, s in res])
    want_scores = np.array([s for _, s in want])
    np.testing.assert_allclose(got_scores, want_scores, rtol=tol, atol=tol)
    near_tie = want_scores.size > 1 and (np.abs(np.diff(np.sort(want_scores))) < 1e-3).any()
    near_tie |= beam_ties(step_fn, prompt, V, max_new, eos, lp)
    for (seq, score), (wseq, _) in zip(res, want):
        assert seq.dtype == np.int64
        np.testing.assert_array_equal(seq[:len(prompt)], prompt)
        # the score is the one of its own sequence under the model
        total = 0.0
        for i in range(len(prompt), len(seq)):
            total += ref.log_softmax(np.asarray(step_fn(seq[None, :i]), np.float64)[0])[seq[i]]
        n = len(seq) - len(prompt)
        finished_by_eos = eos is not None and seq[-1] == eos and n <= max_new
        length = n if finished_by_eos else max_new
        assert abs(score - total / length ** lp) <= tol * (1 + abs(score))
        if not near_tie:
            np.testing.assert_array_equal(seq, wseq)


# ------------------------------------------------------------------------------------- evaluation

@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_entropy_kl(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input())
    fn_name = draw(st.sampled_from(["entropy", "kl_divergence"]))
    valid = True
    if draw(st.integers(0, 7)) == 0:
        axis = draw(st.sampled_from([x.ndim, -x.ndim - 1, 1.5, None]))
        valid = False
    else:
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
    base = draw(st.sampled_from([None, None, 2, 10.0, np.e, 1, 0, -2, np.nan, np.inf, "2", True]))
    valid &= base is None or (not isinstance(base, (str, bool)) and math.isfinite(base) and base > 0 and base != 1)
    nt, nt_ok = draw(threads_option())
    valid &= nt_ok
    if valid and x.shape[axis % x.ndim] == 0:
        valid = False  # documented: an empty distribution axis raises
    args = [x]
    q64 = None
    if fn_name == "kl_divergence":
        qdtype = draw(st.sampled_from(FLOATS))
        q = draw(float_data(x.shape, qdtype))
        q64 = q.astype(np.float64)
        if draw(st.integers(0, 8)) == 0:
            q = np.zeros(x.shape + (1,), qdtype)
            valid = False
        args.append(draw(relayout(q)))
        rdtype = np.result_type(dtype, qdtype).type
    else:
        rdtype = dtype
    ok, res = outcome(getattr(fastlm, fn_name), *args, axis, base=base, num_threads=nt)
    if not valid:
        assert not ok, f"invalid call accepted axis={axis!r} base={base!r}"
        return
    assert ok, res
    want = getattr(ref, fn_name)(*([x64] + ([q64] if q64 is not None else [])), axis=axis,
                                 base=None if base is None else float(base))
    assert np.asarray(res).dtype == rdtype
    cdt = np.float32 if COMPUTE[dtype] == np.float32 and (q64 is None or COMPUTE[qdtype] == np.float32) else \
        np.float64
    eps = float(np.finfo(cdt).eps)
    zmax = finite_max(np.moveaxis(x64, axis, -1))
    if q64 is not None:
        zmax = zmax + finite_max(np.moveaxis(q64, axis, -1))
    n = x.shape[axis % x.ndim]
    rtol, atol = tols(rdtype)
    lb = 1.0 if base is None else abs(math.log(base))
    assert_match(res, rounded(want, rdtype), max(rtol, 64 * eps), atol + 64 * eps * n * (1 + zmax) / lb)


@settings(max_examples=80, **SETTINGS)
@given(data=st.data())
def test_pooled_metrics(data):
    draw = data.draw
    fn_name = draw(st.sampled_from(["bits_per_byte", "byte_perplexity", "word_perplexity"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 5))
    total = draw(st.sampled_from([
        -rng.random(n) * 50, float(-rng.random() * 10), np.array([np.nan] * max(n, 1)), [-np.inf], [0.0],
        ["a"], [1 + 2j], None, [object()]]))
    count = draw(st.sampled_from([rng.integers(1, 100, n), 10, 0, -5, [0, 0], [np.nan], [np.inf], ["b"],
                                  [1 + 1j], None]))
    valid = True
    tarr = np.asarray(total, dtype=object) if total is not None else None
    carr = np.asarray(count, dtype=object) if count is not None else None
    for a in (tarr, carr):
        if a is None or any(isinstance(v, (str, complex)) or not isinstance(v, (int, float, np.number))
                            or isinstance(v, np.complexfloating) for v in a.reshape(-1)):
            valid = False
    if valid:
        c = float(np.sum(np.asarray(count, np.float64)))
        valid = c > 0  # documented: the counts must add up to a positive number
    ok, res = outcome(getattr(fastlm, fn_name), total, count)
    if not valid:
        assert not ok, f"invalid {fn_name} accepted: {total!r} {count!r}"
        return
    assert ok, res
    rok, want = ref_outcome(getattr(ref, fn_name), total, count)
    assert rok, want
    assert isinstance(res, float)
    assert_match(res, want, 1e-12, 0)


@settings(max_examples=80, **SETTINGS)
@given(data=st.data())
def test_sequence_logprob_and_choose(data):
    draw = data.draw
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.sampled_from([1, 2, 5, 9])))
        x, x64, dtype = draw(logits_input(shape=shape))
        B, T, V = shape
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        t = rng.integers(0, V, (B, T))
        if t.size and draw(st.booleans()):
            t.reshape(-1)[0] = -100
        valid = True  # a NaN / all -inf row gives NaN, as torch's losses; with is_greedy it is an error
        need_greedy = draw(st.booleans())
        kwargs = dict(return_is_greedy=need_greedy)
        if need_greedy and row_invalid(x64):
            valid = False
        if draw(st.booleans()):
            mask = rng.random((B, T)) < 0.7
            kwargs["mask"] = draw(st.sampled_from([mask, mask.astype(np.int64), np.ones((B, T + 1), bool)]))
            valid &= kwargs["mask"].shape == (B, T)
        if draw(st.booleans()):
            pl = rng.integers(0, T + 1, B)
            kwargs["prompt_lengths"] = draw(st.sampled_from([pl, pl + T + 1, -pl - 1, pl.astype(float),
                                                             np.zeros(B + 1, np.int64)]))
            p = kwargs["prompt_lengths"]
            valid &= p.dtype.kind == "i" and p.shape == (B,) and bool(((p >= 0) & (p <= T)).all())
        norm = draw(st.sampled_from([None, "tokens", "chars", "bytes", "words"]))
        kwargs["normalize"] = norm
        valid &= norm in (None, "tokens", "chars", "bytes")
        if norm in ("chars", "bytes"):
            ln = draw(st.sampled_from([rng.integers(1, 20, B), None, np.zeros(B), np.ones(B + 1)]))
            kwargs["lengths"] = ln
            valid &= ln is not None and np.shape(ln) == (B,) and bool((np.asarray(ln) > 0).all())
        if draw(st.integers(0, 10)) == 0:
            x = x64.reshape(-1)
            valid = False
        ok, res = outcome(fastlm.sequence_logprob, x, t, **kwargs)
        if not valid:
            assert not ok, f"invalid sequence_logprob accepted: {kwargs}"
            return
        if not ok:  # a NaN / all -inf row is only an error for is_greedy, or when it is scored
            assert row_invalid(x64), res
            return
        rkw = dict(kwargs)
        rok, want = ref_outcome(ref.sequence_logprob, x64, t, **rkw)
        assert rok, want
        if need_greedy:
            res, is_greedy = res
            want, want_greedy = want
            np.testing.assert_array_equal(is_greedy, want_greedy)
        rtol, atol = tols(dtype)
        cond = 16 * eps_of(dtype) * (1 + finite_max(x64)).sum(axis=1) if B else 0
        assert_match(res, want, rtol, atol * max(T, 1) + cond)
    else:
        Q = draw(st.sampled_from([None, 0, 1, 3]))
        C = draw(st.sampled_from([0, 1, 2, 4]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        shape = (C,) if Q is None else (Q, C)
        ll = rng.integers(-6, 1, shape) * 0.5
        if ll.size and draw(st.booleans()):
            ll.reshape(-1)[0] = draw(st.sampled_from([-np.inf, np.nan, np.inf]))
        valid = C >= 1 and not np.isnan(ll).any()
        norm = draw(st.sampled_from([None, "chars", "bytes", "tokens"]))
        kwargs = {"normalize": norm}
        valid &= norm in (None, "chars", "bytes")
        if norm in ("chars", "bytes"):
            ln = draw(st.sampled_from([rng.integers(1, 9, shape), None, np.zeros(shape), np.ones((7,))]))
            kwargs["lengths"] = ln
            valid &= ln is not None and np.shape(ln) == shape and bool((np.asarray(ln) > 0).all())
        ok, res = outcome(fastlm.choose, ll, **kwargs)
        if not valid:
            assert not ok, f"invalid choose accepted: {ll!r} {kwargs}"
            return
        assert ok, res
        want = ref.choose(ll, **kwargs)
        np.testing.assert_array_equal(res, want)


@settings(max_examples=80, **SETTINGS)
@given(n=st.sampled_from([0, 1, 5, 17, 100, -1, 2.5, "3", True]),
       m=st.sampled_from([1, 2, 7, 100, 0, -3, 1.0]),
       s=st.sampled_from([None, 1, 2, 3, 7, 0, 101, 1.5]))
def test_rolling_windows(n, m, s):
    valid = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) and (s is None or (
        isinstance(s, int) and not isinstance(s, bool)))
    valid = valid and n >= 0 and m >= 1 and (s is None or 1 <= s <= m)
    ok, res = outcome(fastlm.rolling_windows, n, m, stride=s)
    if not valid:
        assert not ok
        return
    assert ok, res
    np.testing.assert_array_equal(res, ref.rolling_windows(n, m, stride=s))
    assert res.dtype == np.int64 and res.shape[1] == 3
    # every token scored exactly once
    scored = np.concatenate([np.arange(f, e) for _, e, f in res] or [np.zeros(0, int)])
    np.testing.assert_array_equal(scored, np.arange(n))


# ------------------------------------------------------------------------------------ calibration

@settings(max_examples=120, **SETTINGS)
@given(data=st.data())
def test_calibration_bins(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 30))
    conf = rng.choice(np.array([0.0, 0.1, 0.5, 0.55, 1.0, 1 / 3, 2 / 3, 0.999]), n) if draw(st.booleans()) else \
        rng.random(n)
    correct = rng.random(n) < 0.6
    valid = n > 0
    ck = draw(st.sampled_from(["bool", "int", "float", "bad01", "str", "shape", "badconf"]))
    if ck == "int":
        correct = correct.astype(np.int64)
    elif ck == "float":
        correct = correct.astype(np.float64)
    elif ck == "bad01":
        correct = correct.astype(np.int64) * 2  # invalid where a 2 appears (all 0 stays valid)
        valid = False if (correct == 2).any() else valid
    elif ck == "str":
        correct = correct.astype(str)
        valid = False
    elif ck == "shape":
        correct = np.append(correct, True)
        valid = False
    elif ck == "badconf" and n:
        conf = conf.copy()
        conf[rng.integers(0, n)] = draw(st.sampled_from([np.nan, -0.1, 1.5, np.inf]))
        valid = False
    n_bins = draw(st.sampled_from([1, 2, 5, 15, 0, -1, 2.5, True]))
    valid &= isinstance(n_bins, int) and not isinstance(n_bins, bool) and n_bins >= 1
    strategy = draw(st.sampled_from(["uniform", "quantile", "other"]))
    closed = draw(st.sampled_from(["right", "left", "both"]))
    norm = draw(st.sampled_from(["l1", "l2", "max", "linf"]))
    valid &= strategy != "other" and closed != "both"
    fn = draw(st.sampled_from(["ece", "bins", "plot"]))
    if fn == "ece":
        valid &= norm != "linf"
        ok, res = outcome(calibration.expected_calibration_error, conf, correct, n_bins=n_bins, strategy=strategy,
                          norm=norm, closed=closed)
    elif fn == "bins":
        ok, res = outcome(calibration.reliability_bins, conf, correct, n_bins=n_bins, strategy=strategy,
                          closed=closed)
    else:
        pytest.importorskip("matplotlib")
        ok, res = outcome(calibration.plot_reliability_diagram, conf, correct, n_bins=n_bins, strategy=strategy,
                          closed=closed)
    if not valid:
        assert not ok, f"invalid calibration input accepted: {ck} n_bins={n_bins!r} {strategy} {closed} {norm}"
        return
    assert ok, res
    if fn == "plot":
        return
    rok, want = ref_outcome(ref.expected_calibration_error if fn == "ece" else ref.reliability_bins, conf,
                            correct.astype(np.float64), n_bins=n_bins, strategy=strategy, closed=closed,
                            **({"norm": norm} if fn == "ece" else {}))
    if strategy == "quantile" and np.unique(conf).size == 1:
        return  # the reference's quantile edges collapse to one (no bin, or an error); fastlm keeps [0, 1]
    assert rok, want
    if fn == "ece":
        assert_match(res, want, 1e-9, 1e-12)
    else:
        for key in ("lower", "upper", "count", "confidence", "accuracy"):
            assert_match(res[key], want[key], 1e-9, 1e-12)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_calibration_from_logits_and_fit_temperature(data):
    draw = data.draw
    x, x64, dtype = draw(logits_input(max_dims=2, max_v=12))
    lead, V = x.shape[:-1], x.shape[-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, max(V, 1), lead)
    lk = draw(st.sampled_from(["ok", "ok", "ok", "range", "float", "shape"]))
    valid = True
    if lk == "range" and labels.size:
        labels = labels.copy()
        labels.reshape(-1)[0] = V
        valid = False
    elif lk == "float":
        labels = labels.astype(np.float64)
        valid = False
    elif lk == "shape":
        labels = labels.reshape(-1)[:-1] if labels.size else np.zeros(2, np.int64)
        valid = False
    if V == 0 and labels.size:
        valid = False
    if draw(st.booleans()):
        inv = row_invalid(x64) if x.size or math.prod(lead) == 0 else math.prod(lead) > 0
        ok, res = outcome(calibration.calibration_from_logits, x, labels)
        if not valid or (inv and math.prod(lead) > 0):
            assert not ok, "invalid calibration_from_logits accepted"
            return
        assert ok, res
        conf, correct = res
        if x.size == 0:
            assert np.shape(conf) == lead and np.shape(correct) == lead
            return
        wconf, wcorrect = ref.calibration_from_logits(x64, labels)
        rtol, atol = tols(dtype)
        eps = eps_of(dtype)
        assert_match(conf, wconf, rtol, atol + 16 * eps * (1 + finite_max(x64)))
        np.testing.assert_array_equal(correct, wcorrect)
        return
    bounds = draw(st.sampled_from([(0.05, 20.0), (0.5, 2.0), (1e-3, 1e3), (0, 1), (2, 1), (1, np.inf),
                                   (np.nan, 1), 5, ("a", "b")]))
    valid &= isinstance(bounds, tuple) and all(isinstance(b, float) or isinstance(b, int) for b in bounds) and \
        0 < bounds[0] < bounds[1] < np.inf
    if x.ndim != 2 or x.shape[0] == 0 or V == 0:
        valid = False
    elif not np.isfinite(np.max(x64, axis=1)).all():
        valid = False  # documented: each row must be finite at its max
    ok, res = outcome(calibration.fit_temperature, x, labels, bounds=bounds)
    if not valid:
        assert not ok, f"invalid fit_temperature accepted: {x.shape} {bounds!r} {lk}"
        return
    assert ok, res
    assert isinstance(res, float) and bounds[0] <= res <= bounds[1]
    if finite_max(x64, axis=None) > 1e4:
        return  # huge logits: the NLL is flat or steep beyond float precision
    T_ref = ref.fit_temperature(x64, labels, bounds=bounds)
    nll = ref.mean_nll_at_temperature(x64, labels, res)
    nll_ref = ref.mean_nll_at_temperature(x64, labels, T_ref)
    assert nll <= nll_ref + 1e-5 * (1 + abs(nll_ref)), (res, T_ref, nll, nll_ref)


# ------------------------------------------------------------------------------------------ n-grams

@settings(max_examples=80, **SETTINGS)
@given(data=st.data())
def test_count_ngrams(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 40))
    hi = draw(st.sampled_from([1, 2, 5, 300, 2**16, 2**32 - 1]))
    tokens = rng.integers(0, hi, n, dtype=np.int64) if hi > 1 else np.zeros(n, np.int64)
    order = draw(st.sampled_from([1, 2, 3, 5, 8, 0, -1, 1.5, True]))
    kind = draw(st.sampled_from(["i64", "u32", "u8", "list", "neg", "big", "float", "2d", "bool"]))
    valid = isinstance(order, int) and not isinstance(order, bool) and order >= 1
    t = tokens
    if kind == "u32":
        t = tokens.astype(np.uint32)
    elif kind == "u8":
        t = (tokens % 256).astype(np.uint8)
        tokens = t.astype(np.int64)
    elif kind == "list":
        t = tokens.tolist()
        if not t:
            t = np.zeros(0, np.int64)
    elif kind == "neg" and n:
        t = tokens.copy()
        t[-1] = -1
        valid = False
    elif kind == "big" and n:
        t = tokens.copy()
        t[0] = 2**32
        valid = False
    elif kind == "float" and n:
        t, valid = tokens.astype(np.float64), False
    elif kind == "2d":
        t, valid = tokens.reshape(1, -1), False
    elif kind == "bool" and n:
        t, valid = tokens.astype(bool), False
    if valid and n >= order:
        bits = max(1, int(tokens.max()).bit_length())
        valid = order * bits <= 64  # documented limit of the packed keys
    ok, res = outcome(ngram.count_ngrams, t, order)
    if not valid:
        assert not ok, f"invalid count_ngrams accepted: {kind} order={order!r}"
        return
    assert ok, res
    grams, counts = res
    wgrams, wcounts = ref.count_ngrams(tokens, order)
    assert grams.dtype == np.uint32 and counts.dtype == np.int64 and grams.shape == (wgrams.shape[0], order)
    np.testing.assert_array_equal(grams.astype(np.int64), wgrams)
    np.testing.assert_array_equal(counts, wcounts)


@settings(max_examples=70, **SETTINGS)
@given(data=st.data())
def test_ngram_lm(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    order = draw(st.sampled_from([1, 2, 3, 4, 0, 2.0, True]))
    alpha = draw(st.sampled_from([1.0, 0.1, 0.5, 2, 0.0, -1.0, np.nan, np.inf, "a"]))
    V = draw(st.integers(1, 7))
    vocab_size = draw(st.sampled_from([None, V, V + 3, 0, 1.5]))
    bos = draw(st.sampled_from([None, None, V, V + 1, -1, 0.5]))
    eos = draw(st.sampled_from([None, None, V + 1, V + 2, -1]))
    valid = isinstance(order, int) and not isinstance(order, bool) and order >= 1
    valid &= not isinstance(alpha, str) and math.isfinite(alpha) and alpha > 0
    valid &= vocab_size is None or (isinstance(vocab_size, int) and vocab_size >= 1)
    for v in (bos, eos):
        valid &= v is None or (isinstance(v, int) and v >= 0 and (not isinstance(vocab_size, int)
                                                                   or v < vocab_size or vocab_size < 1))
    ok, lm = outcome(ngram.NgramLM, order, alpha=alpha, vocab_size=vocab_size, bos_id=bos, eos_id=eos)
    if not valid:
        assert not ok, f"invalid NgramLM accepted: {order!r} {alpha!r} {vocab_size!r} {bos!r} {eos!r}"
        return
    assert ok, lm
    seqs = [rng.integers(0, V, draw(st.integers(0, 8))).tolist() for _ in range(draw(st.integers(0, 4)))]
    skind = draw(st.sampled_from(["ok", "ok", "ok", "neg", "range", "float", "flat"]))
    fit_seqs = seqs
    fit_valid = True
    if skind == "neg":
        fit_seqs, fit_valid = seqs + [[0, -1]], False
    elif skind == "range" and vocab_size is not None:
        fit_seqs, fit_valid = seqs + [[vocab_size]], False
    elif skind == "float":
        fit_seqs, fit_valid = seqs + [[0.5, 1.0]], False
    elif skind == "flat":
        fit_seqs, fit_valid = np.array(sum(seqs, []) or [0], np.int64), False
    ok, res = outcome(lm.fit, fit_seqs)
    if not fit_valid:
        assert not ok, f"invalid sequences accepted: {skind}"
        return
    assert ok, res
    rlm = ref.NgramLM(order, alpha=float(alpha), vocab_size=vocab_size, bos_id=bos, eos_id=eos).fit(seqs)
    assert lm.vocab_size == rlm.vocab_size
    Vs = lm.vocab_size
    if Vs == 0:  # nothing seen and no vocab_size: no token to query
        return
    for k in range(1, order + 1):
        g, c = lm.counts(k)
        wg, wc = rlm.counts(k)
        np.testing.assert_array_equal(g.astype(np.int64), wg)
        np.testing.assert_array_equal(c, wc)
    expect_error(lm.counts, 0)
    expect_error(lm.counts, order + 1)
    # probabilities of random queries with contexts of random lengths
    m = draw(st.integers(1, 6))
    k = draw(st.integers(0, order + 1))
    toks = rng.integers(0, Vs, m)
    ctx = rng.integers(0, Vs, (m, k))
    np.testing.assert_allclose(lm.prob(toks, ctx), rlm.prob(toks, ctx), rtol=1e-12)
    np.testing.assert_allclose(lm.logprob(toks, ctx), rlm.logprob(toks, ctx), rtol=1e-12)
    expect_error(lm.prob, toks, ctx.astype(np.float64))
    expect_error(lm.prob, np.append(toks, Vs), np.vstack([ctx, ctx[:1]]))
    expect_error(lm.prob, toks, ctx[:-1] if m > 1 else np.zeros((2, k), np.int64))
    if k:
        bad_ctx = ctx.copy()
        bad_ctx[0, 0] = -1
        expect_error(lm.prob, toks, bad_ctx)
    c1 = rng.integers(0, Vs, draw(st.integers(0, order)))
    d = lm.next_token_distribution(c1)
    np.testing.assert_allclose(d, rlm.next_token_distribution(c1), rtol=1e-12)
    np.testing.assert_allclose(d.sum(), 1.0, rtol=1e-9)
    # scoring
    test_seqs = [rng.integers(0, Vs, draw(st.integers(0, 6))).tolist() for _ in range(2)]
    for s in test_seqs:
        np.testing.assert_allclose(lm.score(s), rlm.score(s), rtol=1e-9, atol=1e-12)
    assert_match(lm.perplexity(test_seqs), rlm.perplexity(test_seqs), 1e-9)
    expect_error(lm.score, [Vs])
    expect_error(lm.score, [0.5])
    expect_error(lm.perplexity, [[0], [-1]])
    assert lm.count(test_seqs[0][:order] or [0]) == rlm.count(test_seqs[0][:order] or [0])
    expect_error(lm.count, [])
    expect_error(lm.count, [0] * (order + 1))
    # merge
    other = ngram.NgramLM(order, alpha=alpha, vocab_size=vocab_size, bos_id=bos, eos_id=eos).fit(test_seqs)
    merged = lm + other
    rmerged = rlm.merge(ref.NgramLM(order, alpha=float(alpha), vocab_size=vocab_size, bos_id=bos,
                                    eos_id=eos).fit(test_seqs))
    assert merged.vocab_size == rmerged.vocab_size
    for kk in range(1, order + 1):
        g, c = merged.counts(kk)
        wg, wc = rmerged.counts(kk)
        np.testing.assert_array_equal(g.astype(np.int64), wg)
        np.testing.assert_array_equal(c, wc)
    expect_error(lm.merge, ngram.NgramLM(order + 1, alpha=alpha))
    expect_error(lm.merge, "model")
    # generation: ids in range, never BOS, stops after EOS
    n_new = draw(st.sampled_from([0, 1, 5, -1, 1.5]))
    gen_ok = isinstance(n_new, int) and n_new >= 0
    ok, out = outcome(lm.generate, c1, n_new, seed=draw(st.integers(0, 2**64 - 1)))
    if not gen_ok:
        assert not ok
    else:
        assert ok, out
        assert out.dtype == np.int64 and out.size <= n_new
        assert ((out >= 0) & (out < Vs)).all()
        if bos is not None:
            assert (out != bos).all()
        if eos is not None and out.size:
            assert (out[:-1] != eos).all()
    # save / load round trip, and a corrupted file
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.bin")
        lm.save(path)
        back = ngram.NgramLM.load(path)
        np.testing.assert_allclose(back.next_token_distribution(c1), d_ := lm.next_token_distribution(c1))
        assert d_.shape == (Vs,)
        raw = bytearray(open(path, "rb").read())
        cut = draw(st.integers(0, len(raw) - 1))
        variant = draw(st.sampled_from(["truncate", "flip"]))
        if variant == "truncate":
            raw = raw[:cut]
        else:
            raw[cut] ^= 0x41
        with open(path, "wb") as f:
            f.write(bytes(raw))
        expect_error(ngram.NgramLM.load, path)


@settings(max_examples=40, **SETTINGS)
@given(text=st.text(max_size=30), texts=st.lists(st.text(alphabet="ab c\n", max_size=12), max_size=4),
       min_count=st.sampled_from([1, 2, 3, 0, -1, 1.5, True]))
def test_text_helpers(text, texts, min_count):
    ids = ngram.byte_tokens(text)
    np.testing.assert_array_equal(ids, list(text.encode("utf-8")))
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ngram.byte_tokens(text.encode("utf-8")), ids)
    ok, vocab = outcome(ngram.WordVocab.build, texts, min_count)
    if not (isinstance(min_count, int) and not isinstance(min_count, bool) and min_count >= 1):
        assert not ok
        return
    assert ok, vocab
    from collections import Counter
    c = Counter(w for t in texts for w in t.split())
    kept = {w for w, n in c.items() if n >= min_count}
    assert set(vocab.words[3:]) == kept and len(vocab) == 3 + len(kept)
    for t in texts:
        enc = vocab.encode(t)
        words = t.split()
        assert vocab.decode(enc) == " ".join(w if w in kept else "<unk>" for w in words)


# ---------------------------------------------------------------------------------------- settings

@settings(max_examples=20, **SETTINGS)
@given(n=st.sampled_from([1, 2, 3, 0, -1, 1.5, "2", None, True, np.int64(2)]))
def test_num_threads_settings(n):
    before = fastlm.get_num_threads()
    try:
        ok, res = outcome(fastlm.set_num_threads, n)
        valid = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
        if not valid:
            assert not ok
            assert fastlm.get_num_threads() == before
        else:
            assert ok, res
            assert fastlm.get_num_threads() == int(n)
            x = np.arange(12, dtype=np.float32).reshape(3, 4)
            np.testing.assert_array_equal(fastlm.softmax(x), fastlm.softmax(x, num_threads=1))
    finally:
        fastlm.set_num_threads(before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = fastlm.show_config()
    assert isinstance(cfg, dict)


def test_public_api_is_covered():
    """Every public name is exercised by this file (a new function needs a fuzz test)."""
    covered = {"__version__", "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad",
               "token_logprobs", "top_k_filter", "top_p_filter", "min_p_filter", "typical_filter",
               "apply_penalties", "apply_logit_bias", "mask_tokens", "cfg_mix", "greedy", "sample", "beam_search",
               "entropy", "kl_divergence", "perplexity", "bits_per_token", "bits_per_byte", "byte_perplexity",
               "word_perplexity", "sequence_logprob", "choose", "rolling_windows", "calibration", "ngram",
               "set_num_threads", "get_num_threads", "show_config"}
    assert set(fastlm.__all__) <= covered, set(fastlm.__all__) - covered
    assert set(calibration.__all__) <= {"expected_calibration_error", "reliability_bins", "calibration_from_logits",
                                        "fit_temperature", "plot_reliability_diagram"}
    assert set(ngram.__all__) <= {"count_ngrams", "NgramLM", "byte_tokens", "WordVocab", "BYTE_BOS", "BYTE_EOS",
                                  "BYTE_VOCAB"}
