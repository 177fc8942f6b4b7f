"""softmax, log_softmax and logsumexp against the reference: values, options, out=, layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_OUTS, BAD_TEMPS, BAD_THREADS, FLOATS, TEMPS, THREADS, WRONG_DTYPES, assert_match,
                      check_result, eps_of, expect_errors, expect_ok, finite_max, float_data, fn_id, fuzz, logits_input,
                      make_out, overflows, ref_outcome, rounded, tols, valid_out)

FNS = ["softmax", "log_softmax", "logsumexp"]
NORMALIZERS = ["softmax", "log_softmax"]  # the ones with out=


@st.composite
def call(draw, fn, dtypes=FLOATS):
    """(x, x64, dtype, axis, kwargs, in_place): a valid call of fn."""
    x, x64, dtype = draw(logits_input(dtypes=dtypes))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    kwargs = dict(temperature=draw(st.sampled_from(TEMPS)), num_threads=draw(st.sampled_from(THREADS)))
    in_place = False
    if fn in NORMALIZERS:
        kwargs["out"], in_place = draw(valid_out(x, x.shape, dtype))
    return x, x64, dtype, axis, kwargs, in_place


def assert_close_to_reference(fn, res, x64, axis, T, dtype):
    """res within the dtype's tolerance of the reference, plus the rounding of x / T in the compute dtype
    (8 eps max|x| / T per slice): relative to p for softmax, absolute for log_softmax and logsumexp."""
    rok, want = ref_outcome(getattr(ref, fn), x64, axis, temperature=float(T))
    assert rok, want
    rtol, atol = tols(dtype)
    cond = 8 * eps_of(dtype) * finite_max(np.moveaxis(x64, axis, -1)) / float(T)
    if fn == "logsumexp":
        assert_match(res, rounded(want, dtype), rtol, atol + cond)
        return
    w = np.moveaxis(rounded(want, dtype), axis, -1)
    r = np.moveaxis(np.asarray(res), axis, -1)
    slack = np.abs(w) * cond[..., None] if fn == "softmax" else cond[..., None]
    assert_match(r, w, rtol, atol + slack)


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@pytest.mark.parametrize("fn", FNS)
@fuzz(14)
@given(data=st.data())
def test_matches_reference(fn, dtype, data):
    """Any axis, temperature, thread count, layout and out= (in place too); special values propagate as
    the reference's (NaN, +-inf positions equal)."""
    x, x64, _, axis, kwargs, in_place = data.draw(call(fn, [dtype]))
    res = expect_ok(getattr(fastlm, fn), x, axis, **kwargs)
    if fn in NORMALIZERS:
        check_result(res, x, dtype, in_place)
    else:
        assert np.asarray(res).dtype == dtype
    if overflows(x64, kwargs["temperature"], dtype):
        return  # x / T overflows the compute dtype: documented as computed in that precision
    if fn in NORMALIZERS and x.size == 0:
        return  # the reference cannot take the max of an empty slice
    assert_close_to_reference(fn, res, x64, axis, kwargs["temperature"], dtype)


BAD_OPTIONS = {"axis": [1.5, "0", None, True], "temperature": BAD_TEMPS, "num_threads": BAD_THREADS}


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
@pytest.mark.parametrize("fn", FNS)
@fuzz(10)
@given(data=st.data())
def test_bad_option_raises(fn, name, data):
    """Every invalid value of the option, the other options valid."""
    x, _, _, axis, kwargs, _ = data.draw(call(fn))
    kwargs["axis"] = axis
    expect_errors(lambda bad: getattr(fastlm, fn)(x, **{**kwargs, name: bad}), BAD_OPTIONS[name])


@pytest.mark.parametrize("fn", FNS)
@fuzz(6)
@given(data=st.data())
def test_axis_out_of_range_raises(fn, data):
    x, _, _, _, kwargs, _ = data.draw(call(fn))
    expect_errors(lambda axis: getattr(fastlm, fn)(x, axis, **kwargs), [x.ndim, -x.ndim - 1])


@pytest.mark.parametrize("fn", NORMALIZERS)
@fuzz(10)
@given(data=st.data())
def test_bad_out_raises(fn, data):
    """out= of a wrong shape or dtype, read-only, or not an ndarray."""
    x, _, dtype, axis, kwargs, _ = data.draw(call(fn))
    expect_errors(lambda kind: getattr(fastlm, fn)(x, axis, **{**kwargs, "out": make_out(kind, x, x.shape, dtype)[0]}),
                  BAD_OUTS)


@pytest.mark.parametrize("fn", FNS)
@fuzz(10)
@given(data=st.data())
def test_wrong_dtype_raises(fn, data):
    """Integer, bool, object and complex logits."""
    _, x64, _, axis, kwargs, _ = data.draw(call(fn))
    with np.errstate(invalid="ignore"):  # NaN / inf cast to an integer dtype
        xs = {wrong: x64.astype(wrong) for wrong in WRONG_DTYPES}
    expect_errors(lambda wrong: getattr(fastlm, fn)(xs[wrong], axis, **kwargs), WRONG_DTYPES)


@fuzz(30)
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
