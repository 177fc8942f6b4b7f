"""bits_per_byte, byte_perplexity and word_perplexity (pooled over documents) against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import assert_match, expect_errors, expect_ok, fuzz, ref_outcome

FNS = ["bits_per_byte", "byte_perplexity", "word_perplexity"]


@st.composite
def totals(draw, rng):
    """Valid total log-probabilities: per document (0 to 5 of them), one float, NaN, -inf or 0."""
    n = draw(st.integers(0, 5))
    return draw(st.sampled_from([-rng.random(n) * 50, float(-rng.random() * 10), np.array([np.nan] * max(n, 1)),
                                 [-np.inf], [0.0]]))


@st.composite
def counts(draw, rng):
    """Valid counts: adding up to a positive number (+inf too)."""
    return draw(st.sampled_from([rng.integers(1, 100, draw(st.integers(1, 5))), 10, [np.inf]]))


BAD_TOTALS = [["a"], [1 + 2j], None, [object()]]


def bad_counts(rng):
    """Counts that are no real numbers, or that do not add up to a positive number."""
    return [rng.integers(1, 100, 0), 0, -5, [0, 0], [np.nan], ["b"], [1 + 1j], None]


def draw_args(data):
    """(rng, total, count) of one call."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return rng, data.draw(totals(rng)), data.draw(counts(rng))


@pytest.mark.parametrize("fn", FNS)
@fuzz(15)
@given(data=st.data())
def test_matches_reference(fn, data):
    """A float equal to the reference's (NaN, +-inf as its)."""
    _, total, count = draw_args(data)
    res = expect_ok(getattr(fastlm, fn), total, count)
    rok, want = ref_outcome(getattr(ref, fn), total, count)
    assert rok, want
    assert isinstance(res, float)
    assert_match(res, want, 1e-12, 0)


@pytest.mark.parametrize("fn", FNS)
@fuzz(10)
@given(data=st.data())
def test_bad_input_raises(fn, data):
    """Totals or counts of strings, complex numbers, None or objects; counts adding up to <= 0 or NaN."""
    rng, total, count = draw_args(data)
    expect_errors(lambda bad: getattr(fastlm, fn)(bad, count), BAD_TOTALS)
    expect_errors(lambda bad: getattr(fastlm, fn)(total, bad), bad_counts(rng))
