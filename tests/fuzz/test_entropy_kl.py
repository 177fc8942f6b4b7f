"""entropy and kl_divergence against the reference: any axis, base, dtypes (mixed for KL), layouts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_THREADS, COMPUTE, FLOATS, THREADS, assert_match, expect_error, expect_errors, expect_ok,
                      finite_max, float_data, fn_id, fuzz, logits_input, relayout, rounded, tols)

FNS = ["entropy", "kl_divergence"]
BASES = [None, None, 2, 10.0, np.e]
BAD_BASES = [1, 0, -2, np.nan, np.inf, "2", True]


@st.composite
def call(draw, fn, dtypes=FLOATS, empty_axis=False):
    """A valid call: SimpleNamespace(args (x, and q for KL), x64, q64 (or None), dtype, qdtype, axis,
    kwargs); with empty_axis, the same but with a distribution axis of length 0."""
    x, x64, dtype = draw(logits_input(dtypes=dtypes).filter(
        lambda c: (0 in c[0].shape) if empty_axis else any(c[0].shape)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1).filter(lambda a: (x.shape[a] == 0) == empty_axis))
    kwargs = dict(base=draw(st.sampled_from(BASES)), num_threads=draw(st.sampled_from(THREADS)))
    args, q64, qdtype = [x], None, dtype
    if fn == "kl_divergence":
        qdtype = draw(st.sampled_from(FLOATS))
        q = draw(float_data(x.shape, qdtype))
        q64 = q.astype(np.float64)
        args.append(draw(relayout(q)))
    return SimpleNamespace(args=args, x64=x64, q64=q64, dtype=dtype, qdtype=qdtype, axis=axis, kwargs=kwargs)


def assert_close_to_reference(fn, res, c):
    """Within 64 eps of the compute dtype times n (1 + max |logit|) / |log base|: the sums of n terms."""
    base = c.kwargs["base"]
    want = getattr(ref, fn)(*([c.x64] + ([c.q64] if c.q64 is not None else [])), axis=c.axis,
                            base=None if base is None else float(base))
    rdtype = np.result_type(c.dtype, c.qdtype).type
    f32 = COMPUTE[c.dtype] == np.float32 and (c.q64 is None or COMPUTE[c.qdtype] == np.float32)
    eps = float(np.finfo(np.float32 if f32 else np.float64).eps)
    zmax = finite_max(np.moveaxis(c.x64, c.axis, -1))
    if c.q64 is not None:
        zmax = zmax + finite_max(np.moveaxis(c.q64, c.axis, -1))
    n = c.x64.shape[c.axis]
    rtol, atol = tols(rdtype)
    lb = 1.0 if base is None else abs(math.log(base))
    assert_match(res, rounded(want, rdtype), max(rtol, 64 * eps), atol + 64 * eps * n * (1 + zmax) / lb)


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@pytest.mark.parametrize("fn", FNS)
@fuzz(15)
@given(data=st.data())
def test_matches_reference(fn, dtype, data):
    """In the logits' dtype (the promoted one of p and q for KL); NaN, +-inf as the reference's."""
    c = data.draw(call(fn, [dtype]))
    res = expect_ok(getattr(fastlm, fn), *c.args, c.axis, **c.kwargs)
    assert np.asarray(res).dtype == np.result_type(c.dtype, c.qdtype).type
    assert_close_to_reference(fn, res, c)


@pytest.mark.parametrize("fn", FNS)
@fuzz(12)
@given(data=st.data())
def test_bad_option_raises(fn, data):
    """An axis out of range or not an int; a base that is 1, not positive, not finite or not a number;
    a bad thread count."""
    c = data.draw(call(fn))
    f = getattr(fastlm, fn)
    ndim = c.x64.ndim
    expect_errors(lambda axis: f(*c.args, axis, **c.kwargs), [ndim, -ndim - 1, 1.5, None])
    expect_errors(lambda base: f(*c.args, c.axis, **{**c.kwargs, "base": base}), BAD_BASES)
    expect_errors(lambda nt: f(*c.args, c.axis, **{**c.kwargs, "num_threads": nt}), BAD_THREADS)


@pytest.mark.parametrize("fn", FNS)
@fuzz(8)
@given(data=st.data())
def test_empty_axis_raises(fn, data):
    """Documented: a distribution axis of length 0 raises."""
    c = data.draw(call(fn, empty_axis=True))
    expect_error(getattr(fastlm, fn), *c.args, c.axis, **c.kwargs)


@fuzz(10)
@given(data=st.data())
def test_kl_shape_mismatch_raises(data):
    c = data.draw(call("kl_divergence"))
    x, q = c.args
    expect_error(fastlm.kl_divergence, x, np.zeros(x.shape + (1,), q.dtype), c.axis, **c.kwargs)
