"""cross_entropy, cross_entropy_with_grad, token_logprobs, perplexity and bits_per_token against the
reference: every option (weight, ignore_index, reduction, label smoothing, z-loss, softcap, temperature),
target dtypes, bad targets and bad options."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_OUTS, BAD_TEMPS, BAD_THREADS, FLOATS, INT_DTYPES, TEMPS, THREADS, WRONG_DTYPES, assert_match,
                      eps_of, expect_errors, expect_ok, finite_max, fn_id, fuzz, logits_input, make_out, native,
                      outcome, overflows, ref_outcome, rounded, tols, valid_out)

WITH_OPTIONS = ["cross_entropy", "cross_entropy_with_grad"]  # reduction, smoothing, z-loss, softcap, weight
WITH_TEMPERATURE = WITH_OPTIONS + ["token_logprobs"]
LOSSES = WITH_TEMPERATURE + ["perplexity", "bits_per_token"]
# (function, reduction): the reference comparison runs once per reduction of the functions that have one
VARIANTS = [(fn, red) for fn in WITH_OPTIONS for red in ("mean", "sum", "none")] + [
    (fn, None) for fn in LOSSES if fn not in WITH_OPTIONS]
IGNORE_INDICES = [-100, -100, -1, 0, 3]


def out_of_range(V):
    """Target values that are no class id (unless equal to ignore_index)."""
    return [V, V + 5, -2, -101]


def in_int_dtype(t, tdtype):
    """t (int64) as tdtype, or as int64 where tdtype cannot hold its values."""
    if (t < 0).any() and np.dtype(tdtype).kind == "u":
        tdtype = np.int64
    if t.size and (t.max() > np.iinfo(tdtype).max or t.min() < np.iinfo(tdtype).min):
        tdtype = np.int64
    return t.astype(tdtype)


@st.composite
def call(draw, fn, dtypes=FLOATS, reduction=None, vs=(1, 1, 2, 3, 7, 8, 9, 17, 33), nonempty=False):
    """A valid call of fn: SimpleNamespace(x, x64, dtype, t (int64 targets), targets (as passed), kwargs,
    grad_in_place). Targets are class ids in [0, V), some set to ignore_index."""
    x, x64, dtype = draw(logits_input(max_dims=3, vs=list(vs), dtypes=dtypes).filter(
        lambda c: not nonempty or math.prod(c[0].shape[:-1]) > 0))
    lead, V = x.shape[:-1], x.shape[-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ignore_index = draw(st.sampled_from(IGNORE_INDICES))
    t = rng.integers(0, max(V, 1), size=lead)
    if t.size and draw(st.booleans()):
        t.reshape(-1)[rng.integers(0, t.size, draw(st.integers(1, t.size)))] = ignore_index
    kwargs = {"ignore_index": ignore_index, "num_threads": draw(st.sampled_from(THREADS))}
    if fn in WITH_TEMPERATURE:
        kwargs["temperature"] = draw(st.sampled_from(TEMPS))
    grad_in_place = False
    if fn in WITH_OPTIONS:
        kwargs.update(reduction=reduction or draw(st.sampled_from(["mean", "sum", "none"])),
                      label_smoothing=draw(st.sampled_from([0.0, 0.1, 0.3, 1.0])),
                      z_loss=draw(st.sampled_from([0.0, 0.0, 1e-4, 0.5])),
                      softcap=draw(st.sampled_from([None, None, 30.0, 1.0])))
        w = rng.choice(np.array([0.0, 0.5, 1.0, 2.0, 3.0]), size=V)
        weight = draw(st.sampled_from([None, w, w.astype(np.int64)]))
        if weight is not None:
            kwargs["weight"] = weight
    if fn == "cross_entropy_with_grad":
        kwargs["grad_out"], grad_in_place = draw(valid_out(x, x.shape, dtype))
    targets = in_int_dtype(t, draw(st.sampled_from(INT_DTYPES)))
    return SimpleNamespace(x=x, x64=x64, dtype=dtype, t=t, targets=targets, kwargs=kwargs,
                           grad_in_place=grad_in_place)


def reference(fn, c):
    """The reference's (loss or (loss, grad)) for the call's values and options."""
    ref_kwargs = {k: v for k, v in c.kwargs.items() if k not in ("num_threads", "grad_out")}
    if "temperature" in ref_kwargs:
        ref_kwargs["temperature"] = float(ref_kwargs["temperature"])
    if "weight" in ref_kwargs:
        ref_kwargs["weight"] = np.asarray(ref_kwargs["weight"], np.float64)
    rok, want = ref_outcome(getattr(ref, fn), c.x64, c.t, **ref_kwargs)
    assert rok, want
    return want


def row_tolerance(c):
    """Per row: the error of one row's loss grows with its logits' magnitude (and with z_loss)."""
    zmax = finite_max(c.x64) / float(c.kwargs.get("temperature", 1.0))
    z_loss = c.kwargs.get("z_loss", 0.0)
    return 16 * eps_of(c.dtype) * (1 + zmax) * (1 + 2 * z_loss * (1 + zmax)), zmax


def assert_reduced_loss(fn, loss, want, c):
    """A float within the sum of the rows' tolerances, over the mean's denominator sum w[y]."""
    assert isinstance(loss, float)
    row_tol, _ = row_tolerance(c)
    rtol, atol = tols(c.dtype)
    scale = float(np.sum(np.where(np.isfinite(row_tol), row_tol, 0))) if row_tol.size else 0.0
    w, V, ignore_index = c.kwargs.get("weight"), c.x.shape[-1], c.kwargs["ignore_index"]
    denom = 1.0
    if c.kwargs.get("reduction", "mean") == "mean" and np.size(c.t):
        ww = np.ones(V) if w is None else np.asarray(w, np.float64)
        keep = c.t != ignore_index
        denom = max(float(np.sum(np.where(keep, ww[np.where(keep, c.t, 0)], 0.0))), 1e-300)
        scale *= float(np.max(ww, initial=1.0))
    if fn == "perplexity":
        assert_match(loss, want, 1e-3 if c.dtype != np.float64 else 1e-8, 0)
    else:
        assert_match(loss, want, rtol, atol + 4 * scale / denom)


def assert_row_losses(loss, want, c):
    """Per position, in the logits' dtype: within each row's tolerance times the largest weight."""
    assert isinstance(loss, np.ndarray) and loss.dtype == c.dtype and loss.shape == c.x.shape[:-1]
    row_tol, _ = row_tolerance(c)
    rtol, atol = tols(c.dtype)
    w = c.kwargs.get("weight")
    wmax = 1.0 if w is None else float(np.max(np.abs(np.asarray(w, np.float64)), initial=1.0))
    assert_match(loss, rounded(want, c.dtype), rtol, atol + row_tol * wmax)


def assert_grad(grad, want_grad, c):
    assert isinstance(grad, np.ndarray) and grad.shape == c.x.shape and native(grad.dtype) == c.dtype
    if c.grad_in_place:
        assert grad is c.x
    _, zmax = row_tolerance(c)
    rtol, atol = tols(c.dtype)
    eps = eps_of(c.dtype)
    gscale = float(np.max(np.abs(np.where(np.isfinite(want_grad), want_grad, 0)), initial=0))
    # plus one step of dtype's subnormals: both sides are rounded to dtype there
    assert_match(grad, rounded(want_grad, c.dtype), rtol, atol * max(gscale, 1e-3) + gscale * 16 * eps * (
        1 + zmax[..., None]) + float(np.finfo(c.dtype).smallest_subnormal))


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@pytest.mark.parametrize("fn,reduction", VARIANTS, ids=[f"{f}-{r}" if r else f for f, r in VARIANTS])
@fuzz(6)
@given(data=st.data())
def test_matches_reference(fn, reduction, dtype, data):
    """Valid and ignored targets of any integer dtype, every valid option, any layout; grad_out= too."""
    c = data.draw(call(fn, [dtype], reduction))
    res = expect_ok(getattr(fastlm, fn), c.x, c.targets, **c.kwargs)
    if overflows(c.x64, float(c.kwargs.get("temperature", 1.0)), dtype):
        return  # x / T overflows the compute dtype: documented as computed in that precision
    want = reference(fn, c)
    with_grad = fn == "cross_entropy_with_grad"
    (loss, grad), (want_loss, want_grad) = (res, want) if with_grad else ((res, None), (want, None))
    if isinstance(want_loss, float):
        assert_reduced_loss(fn, loss, want_loss, c)
    else:
        assert_row_losses(loss, want_loss, c)
    if grad is not None:
        assert_grad(grad, want_grad, c)


@pytest.mark.parametrize("all_ignored", [True, False])
@pytest.mark.parametrize("fn", LOSSES)
@fuzz(4)
@given(data=st.data())
def test_empty_class_axis(fn, all_ignored, data):
    """V = 0: valid exactly when every target is ignore_index (a token_logprob of 0 each); else the
    reference raises, and so does fastlm."""
    c = data.draw(call(fn, vs=[0], nonempty=not all_ignored))
    ignore_index = c.kwargs["ignore_index"]
    if all_ignored:
        c.t[...] = ignore_index
    else:
        c.t.reshape(-1)[data.draw(st.integers(0, c.t.size - 1))] = 0 if ignore_index != 0 else 1
    ok, res = outcome(getattr(fastlm, fn), c.x, in_int_dtype(c.t, c.targets.dtype), **c.kwargs)
    assert ok == all_ignored, res
    if ok and fn == "token_logprobs":
        np.testing.assert_array_equal(res, np.zeros(c.x.shape[:-1]))


@pytest.mark.parametrize("fn", LOSSES)
@fuzz(6)
@given(data=st.data())
def test_target_out_of_range_raises(fn, data):
    """One target that is no class id and not ignore_index: V, V + 5, -2 or -101 (the reference raises)."""
    c = data.draw(call(fn, nonempty=True))
    V, ignore_index = c.x.shape[-1], c.kwargs["ignore_index"]
    pos = data.draw(st.integers(0, c.t.size - 1))
    bads = [v for v in out_of_range(V) if v != ignore_index]

    def plant(value):
        t = c.t.copy()
        t.reshape(-1)[pos] = value
        assert not ref_outcome(getattr(ref, fn), c.x64, t, ignore_index=ignore_index)[0]
        return getattr(fastlm, fn)(c.x, in_int_dtype(t, c.targets.dtype), **c.kwargs)
    expect_errors(plant, bads)


BAD_OPTIONS = {
    "ignore_index": [1.5, "a", None, 2**64], "num_threads": BAD_THREADS, "temperature": BAD_TEMPS,
    "reduction": ["avg", None], "label_smoothing": [-0.1, 1.5, np.nan, "0.1"], "z_loss": [-1.0, np.inf],
    "softcap": [0.0, -5.0, np.nan, "c"]}
OPTION_CASES = [(fn, name) for fn in LOSSES for name in BAD_OPTIONS if name in ("ignore_index", "num_threads")
                or (name == "temperature" and fn in WITH_TEMPERATURE) or fn in WITH_OPTIONS]


@pytest.mark.parametrize("fn,name", OPTION_CASES, ids=[f"{f}-{n}" for f, n in OPTION_CASES])
@fuzz(4)
@given(data=st.data())
def test_bad_option_raises(fn, name, data):
    """Every invalid value of the option, the other options valid."""
    c = data.draw(call(fn))
    expect_errors(lambda bad: getattr(fastlm, fn)(c.x, c.targets, **{**c.kwargs, name: bad}), BAD_OPTIONS[name])


@pytest.mark.parametrize("fn", WITH_OPTIONS)
@fuzz(6)
@given(data=st.data())
def test_bad_weight_raises(fn, data):
    """weight of V + 1 classes, of strings, of complex numbers."""
    c = data.draw(call(fn))
    w = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).choice(
        np.array([0.0, 0.5, 1.0, 2.0, 3.0]), size=c.x.shape[-1])
    expect_errors(lambda bad: getattr(fastlm, fn)(c.x, c.targets, **{**c.kwargs, "weight": bad}),
                  [np.ones(c.x.shape[-1] + 1), w.astype(str), w.astype(complex)])


@fuzz(6)
@given(data=st.data())
def test_bad_grad_out_raises(data):
    """grad_out of a wrong shape or dtype, read-only, or not an ndarray."""
    c = data.draw(call("cross_entropy_with_grad"))
    outs = {kind: make_out(kind, c.x, c.x.shape, c.dtype)[0] for kind in BAD_OUTS}
    expect_errors(lambda kind: fastlm.cross_entropy_with_grad(c.x, c.targets, **{**c.kwargs, "grad_out": outs[kind]}),
                  BAD_OUTS)


@pytest.mark.parametrize("fn", LOSSES)
@fuzz(6)
@given(data=st.data())
def test_bad_targets_raise(fn, data):
    """Targets of float, bool or object dtype, one position short (flattened), or with an extra axis."""
    c = data.draw(call(fn))
    t = c.t
    bads = [t.astype(np.float64), t.astype(bool), t.astype(object),
            t.reshape(-1)[:-1] if t.size else np.zeros(1, np.int64), t[..., None]]
    expect_errors(lambda bad: getattr(fastlm, fn)(c.x, bad, **c.kwargs), bads)


@pytest.mark.parametrize("fn", LOSSES)
@fuzz(5)
@given(data=st.data())
def test_wrong_dtype_raises(fn, data):
    """Integer, bool, object and complex logits."""
    c = data.draw(call(fn))
    with np.errstate(invalid="ignore"):  # NaN / inf cast to an integer dtype
        xs = {wrong: c.x64.astype(wrong) for wrong in WRONG_DTYPES}
    expect_errors(lambda wrong: getattr(fastlm, fn)(xs[wrong], c.targets, **c.kwargs), WRONG_DTYPES)
