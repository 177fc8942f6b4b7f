"""sequence_logprob, choose and rolling_windows (answer scoring as lm-evaluation-harness does it)
against the reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (FLOATS, assert_match, eps_of, expect_error, expect_errors, expect_ok, finite_max, fn_id, fuzz,
                      logits_input, outcome, ref_outcome, row_invalid, spoil_row, tols)


@st.composite
def seq_call(draw, dtypes=FLOATS, return_is_greedy=False, min_side=0):
    """A valid sequence_logprob call on (B, T, V) logits: SimpleNamespace(x, x64, dtype, t, kwargs, rng)
    with an optional mask (bool or int), prompt lengths and normalization."""
    shape = (draw(st.integers(min_side, 3)), draw(st.integers(min_side, 4)), draw(st.sampled_from([1, 2, 5, 9])))
    x, x64, dtype = draw(logits_input(shape=shape, dtypes=dtypes).filter(
        lambda c: not return_is_greedy or not row_invalid(c[1])))
    B, T, V = shape
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = rng.integers(0, V, (B, T))
    if t.size and draw(st.booleans()):
        t.reshape(-1)[0] = -100
    kwargs = dict(return_is_greedy=return_is_greedy, normalize=draw(st.sampled_from([None, "tokens", "chars",
                                                                                     "bytes"])))
    if draw(st.booleans()):
        mask = rng.random((B, T)) < 0.7
        kwargs["mask"] = draw(st.sampled_from([mask, mask.astype(np.int64)]))
    if draw(st.booleans()):
        kwargs["prompt_lengths"] = rng.integers(0, T + 1, B)
    if kwargs["normalize"] in ("chars", "bytes"):
        kwargs["lengths"] = rng.integers(1, 20, B)
    return SimpleNamespace(x=x, x64=x64, dtype=dtype, t=t, kwargs=kwargs, rng=rng)


@pytest.mark.parametrize("return_is_greedy", [False, True])
@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(15)
@given(data=st.data())
def test_sequence_logprob_matches_reference(dtype, return_is_greedy, data):
    """Within the dtype's tolerance per scored token plus the rounding of the logits (16 eps (1 + max|x|)
    per position); is_greedy exactly. A NaN / all -inf row gives NaN, as torch's losses."""
    c = data.draw(seq_call([dtype], return_is_greedy))
    ok, res = outcome(fastlm.sequence_logprob, c.x, c.t, **c.kwargs)
    if not ok:  # a NaN / all -inf row is only an error for is_greedy, or when it is scored
        assert row_invalid(c.x64), res
        return
    rok, want = ref_outcome(ref.sequence_logprob, c.x64, c.t, **c.kwargs)
    assert rok, want
    if return_is_greedy:
        (res, is_greedy), (want, want_greedy) = res, want
        np.testing.assert_array_equal(is_greedy, want_greedy)
    B, T, _ = c.x.shape
    rtol, atol = tols(dtype)
    cond = 16 * eps_of(dtype) * (1 + finite_max(c.x64)).sum(axis=1) if B else 0
    assert_match(res, want, rtol, atol * max(T, 1) + cond)


@pytest.mark.parametrize("kind", ["nan", "-inf"])
@fuzz(8)
@given(data=st.data())
def test_sequence_logprob_greedy_bad_rows_raise(kind, data):
    """With return_is_greedy, a scored row holding NaN or no logit above -inf has no argmax: an error; a
    row the mask, ignore_index or the prompt excludes does not count (the reference says which)."""
    c = data.draw(seq_call(return_is_greedy=True, min_side=1))
    bad64 = spoil_row(c.x64, kind, c.rng)
    rok, _ = ref_outcome(ref.sequence_logprob, bad64, c.t, **c.kwargs)
    ok, res = outcome(fastlm.sequence_logprob, bad64.astype(c.dtype), c.t, **c.kwargs)
    assert ok == rok, res


@fuzz(15)
@given(data=st.data())
def test_sequence_logprob_bad_input_raises(data):
    """A mask of another shape; prompt lengths past T, negative, float or of another shape; normalize
    "words"; chars / bytes without lengths, with zero lengths or lengths of another shape; 1-D logits."""
    c = data.draw(seq_call(min_side=1))
    B, T, _ = c.x.shape
    pl = c.rng.integers(0, T + 1, B)
    bads = [{"mask": np.ones((B, T + 1), bool)}, {"normalize": "words"}] + [
        {"prompt_lengths": p} for p in (pl + T + 1, -pl - 1, pl.astype(float), np.zeros(B + 1, np.int64))] + [
        {"normalize": norm, "lengths": ln} for norm in ("chars", "bytes") for ln in (None, np.zeros(B), np.ones(B + 1))]
    expect_errors(lambda bad: fastlm.sequence_logprob(c.x, c.t, **{**c.kwargs, **bad}), bads)
    expect_error(fastlm.sequence_logprob, c.x64.reshape(-1), c.t, **c.kwargs)


@st.composite
def choose_call(draw, questions=(None, 0, 1, 3), choices=(1, 2, 4)):
    """A valid choose call: (loglikelihoods (C,) or (Q, C) on a grid of 7 or 2 values (ties at the best
    choice are common), maybe one +-inf), kwargs, rng."""
    Q, C = draw(st.sampled_from(questions)), draw(st.sampled_from(choices))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (C,) if Q is None else (Q, C)
    ll = rng.integers(1 - draw(st.sampled_from([7, 2])), 1, shape) * 0.5
    if ll.size and draw(st.booleans()):
        ll.reshape(-1)[0] = draw(st.sampled_from([-np.inf, np.inf]))
    kwargs = {"normalize": draw(st.sampled_from([None, "chars", "bytes"]))}
    if kwargs["normalize"]:
        kwargs["lengths"] = rng.integers(1, 9, shape)
    return ll, kwargs, rng


@fuzz(40)
@given(data=st.data())
def test_choose_matches_reference(data):
    """The first best choice per question, exactly the reference's."""
    ll, kwargs, _ = data.draw(choose_call())
    res = expect_ok(fastlm.choose, ll, **kwargs)
    np.testing.assert_array_equal(res, ref.choose(ll, **kwargs))


@fuzz(20)
@given(data=st.data())
def test_choose_bad_input_raises(data):
    """No choices (C = 0), a NaN log-likelihood, normalize "tokens"; chars / bytes without lengths, with
    zero lengths or lengths of another shape."""
    ll, kwargs, _ = data.draw(choose_call(questions=(None, 1, 3)))
    nan = ll.copy()
    nan.reshape(-1)[0] = np.nan
    expect_errors(lambda bad: fastlm.choose(bad, **kwargs), [ll[..., :0], nan])
    bads = [{"normalize": "tokens"}] + [{"normalize": norm, "lengths": ln} for norm in ("chars", "bytes")
                                        for ln in (None, np.zeros(ll.shape), np.ones((7,)))]
    expect_errors(lambda bad: fastlm.choose(ll, **{**kwargs, **bad}), bads)


NS, BAD_NS = [0, 1, 5, 17, 100], [-1, 2.5, "3", True]
MS, BAD_MS = [1, 2, 7, 100], [0, -3, 1.0]


@st.composite
def windows_call(draw):
    """(n_tokens, max_length, stride), stride None or in [1, max_length]."""
    n, m = draw(st.sampled_from(NS)), draw(st.sampled_from(MS))
    return n, m, draw(st.sampled_from([None] + [s for s in (1, 2, 3, 7, 101) if s <= m]))


@fuzz(40)
@given(call=windows_call())
def test_rolling_windows_match_reference(call):
    """int64 (input, logit, target range) rows, the reference's; every token after the first scored exactly
    once, the first too after a prefix token."""
    n, m, s = call
    for prefix in (False, True):
        res = expect_ok(fastlm.rolling_windows, n, m, stride=s, prefix_token=prefix)
        np.testing.assert_array_equal(res, ref.rolling_windows(n, m, stride=s, prefix_token=prefix))
        assert res.dtype == np.int64 and res.shape[1] == 6
        scored = np.concatenate([np.arange(t0, t1) for *_, t0, t1 in res] or [np.zeros(0, int)])
        np.testing.assert_array_equal(scored, np.arange(0 if prefix else min(n, 1), n))


@fuzz(20)
@given(call=windows_call())
def test_rolling_windows_bad_input_raises(call):
    """n_tokens < 0 or not an int; max_length < 1 or not an int; stride 0, past max_length or not an int."""
    n, m, s = call
    expect_errors(lambda bad: fastlm.rolling_windows(bad, m, stride=s), BAD_NS)
    expect_errors(lambda bad: fastlm.rolling_windows(n, bad, stride=s), BAD_MS)
    expect_errors(lambda bad: fastlm.rolling_windows(n, m, stride=bad), [0, 1.5, m + 1] + [101] * (m < 101))


@st.composite
def causal_call(draw):
    """A batch of (context + continuation) requests padded left or right: (x, ids, mask, contexts)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B, T, V = draw(st.integers(1, 4)), draw(st.integers(2, 9)), draw(st.integers(1, 7))
    side = draw(st.sampled_from(["left", "right", "none"]))
    lengths = rng.integers(2, T + 1, B) if side != "none" else np.full(B, T)
    ids = rng.integers(0, V, (B, T))
    mask = np.zeros((B, T), np.int64)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1 if side == "left" else 0
        mask[b, :n] = 1 if side != "left" else mask[b, :n]
    ids = np.where(mask == 1, ids, 0)
    contexts = np.array([rng.integers(1, n + 1) for n in lengths])
    x = np.round(rng.normal(0, 2, (B, T, V)), 1)  # (ties: the first argmax)
    return x, ids, (None if side == "none" else mask), contexts


@fuzz(60)
@given(call=causal_call())
def test_causal_helpers_match_reference(call):
    """causal_targets, score_continuations and loglikelihood against the reference's loops."""
    x, ids, mask, contexts = call
    np.testing.assert_array_equal(fastlm.causal_targets(ids, mask), ref.causal_targets(ids, mask))
    lp, greedy = expect_ok(fastlm.score_continuations, x, ids, contexts, attention_mask=mask)
    want_lp, want_greedy = ref.score_continuations(x, ids, contexts, attention_mask=mask)
    np.testing.assert_allclose(lp, want_lp, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(greedy, want_greedy)
    assert [g for _, g in fastlm.loglikelihood(x, ids, contexts, attention_mask=mask)] == want_greedy.tolist()
    expect_errors(lambda bad: fastlm.score_continuations(x, ids, bad, attention_mask=mask),
                  [np.zeros_like(contexts), contexts + ids.shape[1], contexts[:-1], [1.5] * len(contexts)])
    expect_errors(lambda bad: fastlm.causal_targets(ids, bad), [np.full(ids.shape, 2), np.ones((1, 1)), "x"])
