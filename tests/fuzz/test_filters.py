"""top_k_filter, top_p_filter, min_p_filter and typical_filter against the reference's keep sets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_OUTS, BAD_THREADS, FLOATS, THREADS, bad_per_row, check_result, decoding_input, eps_of,
                      expect_error, expect_errors, expect_ok, fn_id, fuzz, make_out, per_row, rounded, spoiled_input,
                      valid_out)

# function: (valid parameter values, invalid parameter values)
FILTERS = {
    "top_k_filter": (list(range(-1, 12)) + [100], [1.5, np.nan, "3", None]),
    "top_p_filter": ([0.0, 0.1, 0.5, 0.9, 0.95, 1.0], [-0.1, 1.1, np.nan, np.inf, "0.5", None]),
    "min_p_filter": ([0.0, 0.05, 0.1, 0.5, 1.0], [-0.1, 1.5, np.nan, "0.1", None]),
    "typical_filter": ([0.1, 0.5, 0.9, 0.95, 1.0], [0.0, -0.2, 1.01, np.nan, "0.9", None]),
}
BAD_OPTIONS = {"min_tokens_to_keep": [0, -1, 1.0, True], "filter_value": [np.nan, "x", None],
               "num_threads": BAD_THREADS}


@st.composite
def call(draw, fn, dtypes=FLOATS, spoil=None):
    """A valid call: SimpleNamespace(x, x64, dtype, param, prow (per row, float64), kwargs, in_place); with
    spoil ("nan", "-inf", "empty"), the same with logits holding a row that decoding rejects."""
    x, x64, dtype = draw(spoiled_input(spoil, dtypes, max_v=33) if spoil else decoding_input(dtypes, max_v=33))
    param, prow = draw(per_row(x.shape[:-1], FILTERS[fn][0], integer=fn == "top_k_filter"))
    kwargs = dict(min_tokens_to_keep=draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, 3])),
                  filter_value=draw(st.sampled_from([-np.inf, -np.inf, -np.inf, -1e4, 0.0, np.inf, -np.inf, -1e4])),
                  num_threads=draw(st.sampled_from(THREADS)))
    kwargs["out"], in_place = draw(valid_out(x, x.shape, dtype))
    return SimpleNamespace(x=x, x64=x64, dtype=dtype, param=param, prow=prow, kwargs=kwargs, in_place=in_place)


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


def tied_in_reference(x64, bad):
    """Whether every token marked in bad has, in its row, the same float64 probability as a token with
    another logit (0 and -1e-40, say): the reference ranks such tokens by index, fastlm by logit, so for
    min_tokens_to_keep and the top-p cut either of them may come first."""
    x2 = x64.reshape(-1, x64.shape[-1])
    for r, j in np.argwhere(bad.reshape(x2.shape)):
        p = ref._probs(x2[r])
        if not ((p == p[j]) & (x2[r] != x2[r, j])).any():
            return False
    return True


def within_rounding(fn, c, bad):
    """Whether the disagreements in bad are ties the rounding decides: typical sets ambiguous within
    rounding (typical_ambiguous, per row), or probabilities tied in the reference (top-p, min-p)."""
    if fn == "typical_filter":
        rows = np.flatnonzero(bad.reshape(-1, c.x.shape[-1]).any(axis=1))
        x2, p2 = c.x64.reshape(-1, c.x.shape[-1]), c.prow.reshape(-1)
        return all(typical_ambiguous(x2[r], p2[r], 1e-4 if c.dtype != np.float64 else 1e-9) for r in rows)
    return fn != "top_k_filter" and tied_in_reference(c.x64, bad)


def keep_bounds(fn, c):
    """(keep_less, keep_more): the reference's keep sets for the parameter moved by its rounding error
    (64 V eps) towards fewer and towards more tokens; top-k is exact."""
    mtk = c.kwargs["min_tokens_to_keep"]
    if fn == "top_k_filter":
        keep = ref_keep(fn, c.x64, c.prow.astype(np.int64), mtk)
        return keep, keep
    delta = max(1e-7, 64 * c.x.shape[-1] * eps_of(c.dtype))
    lo, hi = np.clip(c.prow - delta, 0, 1), np.clip(c.prow + delta, 0, 1)
    if fn == "min_p_filter":
        lo, hi = hi, lo  # a larger min_p keeps fewer tokens
    if fn == "typical_filter":
        lo = np.maximum(lo, 1e-12)
    return ref_keep(fn, c.x64, lo, mtk), ref_keep(fn, c.x64, hi, mtk)


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@pytest.mark.parametrize("fn", sorted(FILTERS))
@fuzz(16)
@given(data=st.data())
def test_keeps_reference_tokens(fn, dtype, data):
    """Each entry is its logit (kept) or filter_value; the kept set is the reference's, up to the
    parameter's rounding (and, for typical, rows whose typical set is ambiguous within rounding)."""
    c = data.draw(call(fn, [dtype]))
    res = expect_ok(getattr(fastlm, fn), c.x, c.param, **c.kwargs)
    check_result(res, c.x, dtype, c.in_place)
    got = np.asarray(res, np.float64)
    fill = rounded(c.kwargs["filter_value"], dtype)
    kept = got == c.x64
    assert np.all(kept | (got == fill)), "an entry is neither its logit nor filter_value"
    if c.x.size == 0:
        return
    ambiguous = c.x64 == fill  # a kept logit equal to the fill reads as filtered, and the other way round
    kept_got = kept & ~(ambiguous & (got == fill))
    keep_less, keep_more = keep_bounds(fn, c)
    bad_less = keep_less & ~kept_got & ~ambiguous
    bad_more = kept_got & ~keep_more & ~ambiguous
    if (bad_less | bad_more).any() and within_rounding(fn, c, bad_less | bad_more):
        return
    assert not bad_less.any(), f"{fn} dropped tokens the reference keeps: {np.argwhere(bad_less)[:5]}"
    assert not bad_more.any(), f"{fn} kept tokens the reference drops: {np.argwhere(bad_more)[:5]}"


@pytest.mark.parametrize("fn", sorted(FILTERS))
@fuzz(8)
@given(data=st.data())
def test_bad_param_raises(fn, data):
    """Each invalid parameter value (as a scalar), one of a wrong shape, and every wrong dtype."""
    c = data.draw(call(fn))
    bads = FILTERS[fn][1] + bad_per_row(c.x.shape[:-1], integer=fn == "top_k_filter")
    expect_errors(lambda bad: getattr(fastlm, fn)(c.x, bad, **c.kwargs), bads)


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
@pytest.mark.parametrize("fn", sorted(FILTERS))
@fuzz(5)
@given(data=st.data())
def test_bad_option_raises(fn, name, data):
    c = data.draw(call(fn))
    expect_errors(lambda bad: getattr(fastlm, fn)(c.x, c.param, **{**c.kwargs, name: bad}), BAD_OPTIONS[name])


@pytest.mark.parametrize("fn", sorted(FILTERS))
@fuzz(6)
@given(data=st.data())
def test_bad_out_raises(fn, data):
    """out= of a wrong shape or dtype, read-only, or not an ndarray."""
    c = data.draw(call(fn))
    outs = {kind: make_out(kind, c.x, c.x.shape, c.dtype)[0] for kind in BAD_OUTS}
    expect_errors(lambda kind: getattr(fastlm, fn)(c.x, c.param, **{**c.kwargs, "out": outs[kind]}), BAD_OUTS)


@pytest.mark.parametrize("kind", ["nan", "-inf", "empty"])
@pytest.mark.parametrize("fn", sorted(FILTERS))
@fuzz(4)
@given(data=st.data())
def test_bad_rows_raise(fn, kind, data):
    """A row holding NaN, a row with no logit above -inf, rows of V = 0 (the reference raises too)."""
    c = data.draw(call(fn, spoil=kind))
    expect_error(getattr(fastlm, fn), c.x, c.param, **c.kwargs)


@fuzz(80)
@given(data=st.data())
def test_top_k_top_p_matches_the_reference(data):
    """top_k_top_p_filter keeps the reference's set (temperature, then top-k, then top-p), up to ties the
    rounding decides (tied_in_reference); kept entries hold x / T; bad parameters raise."""
    x, x64, dtype = data.draw(decoding_input(FLOATS, max_v=33))
    lead = x.shape[:-1]
    k, _ = data.draw(per_row(lead, list(range(-1, 12)) + [100], integer=True))
    p, _ = data.draw(per_row(lead, [0.0, 0.1, 0.5, 0.9, 1.0]))
    t = data.draw(st.sampled_from([0.25, 0.7, 1.0, 1.0, 3.0]))
    mtk = data.draw(st.sampled_from([1, 1, 2, 3]))
    two = [expect_ok(fastlm.top_k_top_p_filter, x, k, p, temperature=t, min_tokens_to_keep=mtk, filter_value=fill)
           for fill in (-1e4, 1e4)]
    kept = (two[0] == two[1]) | (np.isnan(two[0]) & np.isnan(two[1]))  # (a filtered entry takes the fill)
    got = two[0]
    if x.size == 0:
        return
    want = ref.top_k_top_p_filter(x64, k, p, temperature=t, min_tokens_to_keep=mtk, filter_value=np.nan)
    bad = kept != ~np.isnan(want)
    assert not bad.any() or tied_in_reference(x64 / t, bad)
    np.testing.assert_array_equal(got[kept], (x.astype(np.float64 if dtype == np.float64 else np.float32)
                                              / np.float32(t) if dtype != np.float64 else x / t)[kept].astype(dtype))
    expect_errors(lambda bad_t: fastlm.top_k_top_p_filter(x, k, p, temperature=bad_t), [0.0, -1.0, np.inf, np.nan, "1"])
    expect_errors(lambda bad_p: fastlm.top_k_top_p_filter(x, k, bad_p), [-0.1, 1.1, np.nan, "0.5", None])
