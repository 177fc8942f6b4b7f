"""greedy and the fused sampler against the reference: ids, support of the filtered distribution,
reproducible seeds, bad parameters and bad rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import (BAD_THREADS, COMPUTE, FLOATS, THREADS, bad_per_row, decoding_input, eps_of, expect_error,
                      expect_errors, expect_ok, finite_max, fn_id, fuzz, per_row, spoiled_input)

# parameter: (valid values, invalid values, integer?)
PARAMS = {
    "temperature": ([0.0, 1.0, 0.5, 2.0, 0.7], [-1.0, np.nan, np.inf, 1e-31, "1"], False),
    "top_k": ([0, -1, 1, 2, 5, 100], [1.5, "2", None], True),
    "top_p": ([1.0, 0.0, 0.5, 0.9], [-0.5, 1.5, np.nan], False),
    "min_p": ([0.0, 0.1, 0.5, 1.0], [-0.5, 2.0, np.nan], False),
}
SEEDS = [0, 1, 12345, 2**63, None, np.uint64(2**64 - 1), "per-row"]  # "per-row": an array of the leading shape
BAD_SEEDS = [-1, 1.5, "s"]


def seed_value(seed, lead):
    """The seed argument: an array 0, 1, ... of the leading shape for "per-row" (3 for 1-D logits)."""
    return (np.arange(math.prod(lead)).reshape(lead) if lead else 3) if isinstance(seed, str) else seed


@st.composite
def sample_call(draw, dtypes=FLOATS, spoil=None, seeds=SEEDS):
    """A valid sample call: SimpleNamespace(x, x64, dtype, kwargs, rows: per-row float64 parameters)."""
    x, x64, dtype = draw(spoiled_input(spoil, dtypes, max_v=33) if spoil else decoding_input(dtypes, max_v=33))
    lead = x.shape[:-1]
    kwargs, rows = {}, {}
    for name, (good, _, integer) in PARAMS.items():
        kwargs[name], rows[name] = draw(per_row(lead, good, integer=integer))
    kwargs["seed"] = seed_value(draw(st.sampled_from(seeds)), lead)
    kwargs["num_threads"] = draw(st.sampled_from(THREADS))
    return SimpleNamespace(x=x, x64=x64, dtype=dtype, kwargs=kwargs, rows=rows)


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(26)
@given(data=st.data())
def test_greedy_matches_reference(dtype, data):
    x, x64, _ = data.draw(decoding_input([dtype], max_v=33))
    res = expect_ok(fastlm.greedy, x, num_threads=data.draw(st.sampled_from(THREADS)))
    assert np.asarray(res).dtype == np.int64 and np.shape(res) == x.shape[:-1]
    if x.size:
        np.testing.assert_array_equal(res, ref.greedy(x64))


@pytest.mark.parametrize("kind", ["nan", "-inf", "empty"])
@fuzz(8)
@given(data=st.data())
def test_greedy_bad_rows_raise(kind, data):
    """A row holding NaN, a row with no logit above -inf, rows of V = 0 (the reference raises too)."""
    x, _, _ = data.draw(spoiled_input(kind, max_v=33))
    expect_error(fastlm.greedy, x, num_threads=data.draw(st.sampled_from(THREADS)))


@fuzz(10)
@given(data=st.data())
def test_greedy_bad_threads_raise(data):
    x, _, _ = data.draw(decoding_input(max_v=33))
    expect_errors(lambda nt: fastlm.greedy(x, num_threads=nt), BAD_THREADS)


@pytest.mark.parametrize("dtype", FLOATS, ids=fn_id)
@fuzz(40)
@given(data=st.data())
def test_sample_in_reference_support(dtype, data):
    """Every drawn id has probability > 0 in the reference's filtered distribution (the filters'
    parameters widened by their rounding, 64 V eps)."""
    c = data.draw(sample_call([dtype]))
    ids = np.asarray(expect_ok(fastlm.sample, c.x, **c.kwargs))
    assert ids.dtype == np.int64 and ids.shape == c.x.shape[:-1]
    if c.x.shape[-1] == 0 or ids.size == 0:
        return
    T = c.rows["temperature"]
    if (finite_max(c.x64)[..., None] / np.where(T > 0, T, 1.0)[..., None] > np.finfo(COMPUTE[dtype]).max / 4).any():
        return  # x / T overflows the compute dtype: documented as computed in that precision
    delta = max(1e-7, 64 * c.x.shape[-1] * eps_of(dtype))
    P, M = c.rows["top_p"], c.rows["min_p"]
    dist = ref.sample_distribution(c.x64, temperature=T, top_k=c.rows["top_k"].astype(np.int64),
                                   top_p=np.where(P < 1, np.minimum(P + delta, 1.0), 1.0),
                                   min_p=np.maximum(M - delta, 0.0))
    picked = np.take_along_axis(dist, ids[..., None], axis=-1)[..., 0]
    assert (picked > 0).all(), f"sampled ids {ids} with reference probability {picked}"


@pytest.mark.parametrize("seed", [s for s in SEEDS if s is not None], ids=fn_id)
@fuzz(6)
@given(data=st.data())
def test_sample_reproducible(seed, data):
    """An integer seed (or an array of them) gives the same ids again, on one thread."""
    c = data.draw(sample_call(seeds=[seed]))
    ids = expect_ok(fastlm.sample, c.x, **c.kwargs)
    np.testing.assert_array_equal(fastlm.sample(c.x, **{**c.kwargs, "num_threads": 1}), ids)


@pytest.mark.parametrize("name", sorted(PARAMS))
@fuzz(8)
@given(data=st.data())
def test_sample_bad_param_raises(name, data):
    """Each invalid value of the parameter, one of a wrong shape and every wrong dtype."""
    c = data.draw(sample_call())
    _, bad, integer = PARAMS[name]
    bads = bad + bad_per_row(c.x.shape[:-1], integer)
    expect_errors(lambda v: fastlm.sample(c.x, **{**c.kwargs, name: v}), bads)


@fuzz(10)
@given(data=st.data())
def test_sample_bad_seed_or_threads_raise(data):
    c = data.draw(sample_call())
    expect_errors(lambda seed: fastlm.sample(c.x, **{**c.kwargs, "seed": seed}), BAD_SEEDS)
    expect_errors(lambda nt: fastlm.sample(c.x, **{**c.kwargs, "num_threads": nt}), BAD_THREADS)


@pytest.mark.parametrize("kind", ["nan", "-inf", "empty"])
@fuzz(8)
@given(data=st.data())
def test_sample_bad_rows_raise(kind, data):
    """A row holding NaN, a row with no logit above -inf, rows of V = 0 (the reference raises too)."""
    c = data.draw(sample_call(spoil=kind))
    expect_error(fastlm.sample, c.x, **c.kwargs)
