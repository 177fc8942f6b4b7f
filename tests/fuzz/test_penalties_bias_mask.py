"""apply_penalties, apply_logit_bias and mask_tokens against the reference: values, bad histories, ids
and options, out=."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_OUTS, FLOATS, assert_match, check_result, eps_of, expect_errors, expect_ok, fn_id, fuzz,
                      logits_input, make_out, rounded, tols, valid_out)

FNS = ["apply_penalties", "apply_logit_bias", "mask_tokens"]
PENALTIES = {  # option: (valid values, invalid values)
    "repetition_penalty": ([1.0, 1.3, 0.5, 2], [0.0, -1.0, np.nan, np.inf, "2", True]),
    "presence_penalty": ([0.0, 0.5, -1.0, 2], [np.inf, np.nan, None]),
    "frequency_penalty": ([0.0, 0.25, -0.5], [np.inf, "f"]),
}


@st.composite
def call(draw, fn, dtypes=FLOATS, nonempty=False):
    """A valid call: SimpleNamespace(x, x64, dtype, rng, args (after the logits), kwargs, in_place); with
    nonempty, of logits with at least one row."""
    x, x64, dtype = draw(logits_input(max_v=20, dtypes=dtypes).filter(
        lambda c: not nonempty or math.prod(c[0].shape[:-1]) > 0))
    lead, V = x.shape[:-1], x.shape[-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    args, kwargs = {
        "apply_penalties": lambda: penalty_args(draw, rng, lead, V),
        "apply_logit_bias": lambda: bias_args(draw, rng, V),
        "mask_tokens": lambda: mask_args(draw, rng, V),
    }[fn]()
    kwargs["out"], in_place = draw(valid_out(x, x.shape, dtype))
    return SimpleNamespace(x=x, x64=x64, dtype=dtype, rng=rng, args=args, kwargs=kwargs, in_place=in_place)


def penalty_args(draw, rng, lead, V):
    """(history,), options: a history of 1 to 6 ids per row, -1 for none."""
    h = rng.integers(-1, max(V, 1), size=lead + (draw(st.integers(1, 6)),))
    if V == 0:
        h[...] = -1
    return (h,), {name: draw(st.sampled_from(good)) for name, (good, _) in PENALTIES.items()}


def bias_args(draw, rng, V):
    """(bias,): a dict or an (ids, values) pair of 0 to 4 entries, or an empty pair of float ids."""
    kind = draw(st.sampled_from(["dict", "pair", "pair", "empty_float_ids"]))
    n = 0 if V == 0 or kind == "empty_float_ids" else draw(st.integers(0, 4))
    ids = rng.integers(0, max(V, 1), n)
    vals = rng.choice(np.array([1.0, -2.5, 0.0, 100.0, -np.inf, 1e30]), n)
    bias = {"dict": dict(zip(ids.tolist(), vals.tolist())), "pair": (ids, vals), "empty_float_ids": (ids + 0.5, vals)}
    return (bias[kind],), {}


def some_ids(draw, rng, V):
    """None, or 0 to 4 ids in [0, V) (none for V = 0)."""
    ids = None if draw(st.booleans()) else rng.integers(0, max(V, 1), draw(st.integers(0, 4)))
    return ids if ids is None or V else ids[:0]


def mask_args(draw, rng, V):
    """(), allowed / banned: None or up to 4 ids, as arrays or lists, or a scalar banned id."""
    allowed, banned = some_ids(draw, rng, V), some_ids(draw, rng, V)
    kind = draw(st.sampled_from(["ok", "ok", "list", "scalar"]))
    if kind == "list" and allowed is not None:
        allowed = allowed.tolist()
    elif kind == "scalar" and V:
        banned = 0
    return (), {"allowed": allowed, "banned": banned}


def history_counts(h, V):
    """(rows, V) counts of each id in each row's history."""
    counts = np.zeros((h.size // h.shape[-1], V))
    for i, row in enumerate(h.reshape(-1, h.shape[-1])):
        for tok in row[row >= 0]:
            counts[i, tok] += 1
    return counts


def valid_call(data, name, dtype):
    """A valid call of fastlm.<name> (call()) and its checked result (check_result)."""
    c = data.draw(call(name, [dtype]))
    args = c.args if name != "mask_tokens" else ()
    res = expect_ok(getattr(fastlm, name), c.x, *args, **c.kwargs)
    check_result(res, c.x, dtype, c.in_place)
    return c, res


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(15)
@given(data=st.data())
def test_penalties_match_reference(dtype, data):
    """Within the rounding of |x| + count |frequency_penalty| + |presence_penalty| in the compute dtype."""
    c, res = valid_call(data, "apply_penalties", dtype)
    if c.x.size == 0:
        return
    (h,), k = c.args, c.kwargs
    want = ref.apply_penalties(c.x64, h, repetition_penalty=float(k["repetition_penalty"]),
                               presence_penalty=float(k["presence_penalty"]),
                               frequency_penalty=float(k["frequency_penalty"]))
    counts = history_counts(h, c.x.shape[-1])
    scale = np.abs(c.x64).reshape(counts.shape) + counts * abs(k["frequency_penalty"]) + abs(k["presence_penalty"])
    rtol, atol = tols(dtype)
    assert_match(res, rounded(want, dtype), rtol, atol + 4 * eps_of(dtype) * scale.reshape(c.x.shape))


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(15)
@given(data=st.data())
def test_logit_bias_matches_reference(dtype, data):
    """Within the rounding of |x| + 100 (the largest finite bias) in the compute dtype."""
    c, res = valid_call(data, "apply_logit_bias", dtype)
    if c.x.size == 0:
        return
    rtol, atol = tols(dtype)
    with np.errstate(invalid="ignore"):  # -inf + inf
        want = ref.apply_logit_bias(c.x64, *c.args)
    assert_match(res, rounded(want, dtype), rtol, atol + 4 * eps_of(dtype) * (np.abs(c.x64) + 100))


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(15)
@given(data=st.data())
def test_mask_matches_reference(dtype, data):
    """Exactly: each entry is its logit or -inf."""
    c, res = valid_call(data, "mask_tokens", dtype)
    if c.x.size == 0:
        return
    want = ref.mask_tokens(c.x64, allowed=c.kwargs["allowed"], banned=c.kwargs["banned"])
    assert_match(res, rounded(want, dtype), 0, 0)


@fuzz(12)
@given(data=st.data())
def test_penalties_bad_history_raises(data):
    """An id of V or -2 (-1 is "no token"), a history missing the last leading dim, float or bool ids."""
    c = data.draw(call("apply_penalties", nonempty=True))
    (h,), lead, V = c.args, c.x.shape[:-1], c.x.shape[-1]
    too_big, negative = h.copy(), h.copy()
    too_big.reshape(-1)[0], negative.reshape(-1)[0] = V, -2
    short = np.zeros(lead[:-1] + h.shape[-1:], np.int64) if lead else np.zeros((), np.int64)
    bads = [too_big, negative, short, h.astype(np.float64), h.astype(bool)]
    expect_errors(lambda bad: fastlm.apply_penalties(c.x, bad, **c.kwargs), bads)


@pytest.mark.parametrize("name", sorted(PENALTIES))
@fuzz(6)
@given(data=st.data())
def test_penalties_bad_option_raises(name, data):
    c = data.draw(call("apply_penalties"))
    expect_errors(lambda bad: fastlm.apply_penalties(c.x, *c.args, **{**c.kwargs, name: bad}), PENALTIES[name][1])


@fuzz(12)
@given(data=st.data())
def test_logit_bias_bad_ids_raise(data):
    """Ids of V or -1, float ids, more values than ids, a scalar, complex values."""
    c = data.draw(call("apply_logit_bias"))
    V = c.x.shape[-1]
    n = data.draw(st.integers(0, 4))
    ids = c.rng.integers(0, max(V, 1), n)
    vals = c.rng.choice(np.array([1.0, -2.5, 0.0, 100.0, -np.inf, 1e30]), n)
    bads = [(np.append(ids, V), np.append(vals, 1.0)), (np.append(ids, -1), np.append(vals, 1.0)),
            (np.append(ids, 0) + 0.5, np.append(vals, 1.0)), (ids, np.append(vals, 1.0)), 5, (ids, vals + 1j)]
    expect_errors(lambda bad: fastlm.apply_logit_bias(c.x, bad, **c.kwargs), bads)


@fuzz(12)
@given(data=st.data())
def test_mask_bad_ids_raise(data):
    """A banned id of V, a float allowed id."""
    c = data.draw(call("mask_tokens"))
    bads = [{"banned": [c.x.shape[-1]]}, {"allowed": [0.5]}]
    expect_errors(lambda bad: fastlm.mask_tokens(c.x, **{**c.kwargs, **bad}), bads)


@pytest.mark.parametrize("fn", FNS)
@fuzz(6)
@given(data=st.data())
def test_bad_out_raises(fn, data):
    """out= of a wrong shape or dtype, read-only, or not an ndarray."""
    c = data.draw(call(fn))
    outs = {kind: make_out(kind, c.x, c.x.shape, c.dtype)[0] for kind in BAD_OUTS}
    expect_errors(lambda kind: getattr(fastlm, fn)(c.x, *c.args, **{**c.kwargs, "out": outs[kind]}), BAD_OUTS)
