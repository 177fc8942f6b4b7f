"""beam_search against the reference's plain beam search, on small deterministic models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlm
from fastlm import reference as ref

from .helpers import expect_error, expect_errors, expect_ok, fn_id, fuzz

DTYPES = [np.float32, np.float64]
EARLY_STOPPING = [False, True, "never"]
BAD_STEP_FNS = ["nan", "shape", "rows", "int"]


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
            for tok, logp in enumerate(ref.log_softmax(row)):
                sums.append(total + logp)
                if (eos is not None and tok == eos) or t == max_new:
                    finished.append((total + logp) / t ** lp)
                else:
                    nxt.append((q + [tok], total + logp))
        if close(sums):
            return True
        frontier = nxt
        if not frontier:
            break
    return close(finished)


@st.composite
def call(draw, dtypes=DTYPES, early_stopping=EARLY_STOPPING, bad=None):
    """A valid call on a model of V = 1 to 4 tokens (with bad, a model returning bad logits):
    SimpleNamespace(step_fn, prompt, V, dtype, kwargs)."""
    V = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(dtypes))
    step_fn, _ = make_step_fn(V, dtype, draw(st.integers(0, 1000)), bad)
    kwargs = dict(num_beams=draw(st.sampled_from([1, 2, 3])), max_new_tokens=draw(st.sampled_from([1, 2, 3])),
                  eos_id=draw(st.sampled_from([None, 0, 1 % V, V - 1])),
                  length_penalty=draw(st.sampled_from([1.0, 0.0, 2.0, -1.0])),
                  early_stopping=draw(st.sampled_from(early_stopping)))
    prompt = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    return SimpleNamespace(step_fn=step_fn, prompt=prompt, V=V, dtype=dtype, kwargs=kwargs)


def own_score(c, seq):
    """The score of seq under the model: sum of log p over its generated tokens / length ** lp, the
    length being the generated one when seq ends at EOS, else max_new_tokens."""
    total = 0.0
    for i in range(len(c.prompt), len(seq)):
        total += ref.log_softmax(np.asarray(c.step_fn(seq[None, :i]), np.float64)[0])[seq[i]]
    n, eos, max_new = len(seq) - len(c.prompt), c.kwargs["eos_id"], c.kwargs["max_new_tokens"]
    finished_by_eos = eos is not None and seq[-1] == eos and n <= max_new
    return total / (n if finished_by_eos else max_new) ** c.kwargs["length_penalty"]


@pytest.mark.parametrize("early_stopping", EARLY_STOPPING, ids=fn_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=fn_id)
@fuzz(12)
@given(data=st.data())
def test_matches_reference(dtype, early_stopping, data):
    """The reference's hypotheses and scores; each score is its own sequence's; the sequences equal the
    reference's unless two hypotheses tie within rounding."""
    c = data.draw(call([dtype], [early_stopping]))
    res = expect_ok(fastlm.beam_search, c.step_fn, np.array(c.prompt, dtype=np.int64), **c.kwargs)
    want = ref.beam_search(c.step_fn, c.prompt, **c.kwargs)
    assert len(res) == len(want)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    want_scores = np.array([s for _, s in want])
    np.testing.assert_allclose(np.array([s for _, s in res]), want_scores, rtol=tol, atol=tol)
    near_tie = want_scores.size > 1 and (np.abs(np.diff(np.sort(want_scores))) < 1e-3).any()
    near_tie |= beam_ties(c.step_fn, c.prompt, c.V, c.kwargs["max_new_tokens"], c.kwargs["eos_id"],
                          c.kwargs["length_penalty"])
    for (seq, score), (wseq, _) in zip(res, want):
        assert seq.dtype == np.int64
        np.testing.assert_array_equal(seq[:len(c.prompt)], c.prompt)
        assert abs(score - own_score(c, seq)) <= tol * (1 + abs(score))
        if not near_tie:
            np.testing.assert_array_equal(seq, wseq)


@pytest.mark.parametrize("name", ["num_beams", "max_new_tokens", "eos_id", "length_penalty", "early_stopping"])
@fuzz(6)
@given(data=st.data())
def test_bad_option_raises(name, data):
    """Each invalid value of the option (an eos_id of V is outside the model's vocabulary)."""
    c = data.draw(call())
    bads = {"num_beams": [0, 1.5, True], "max_new_tokens": [0, -1, 2.0], "eos_id": [c.V, -1, 1.5, True],
            "length_penalty": [np.nan, "x", np.inf], "early_stopping": ["sometimes", None]}[name]
    prompt = np.array(c.prompt, dtype=np.int64)
    expect_errors(lambda bad: fastlm.beam_search(c.step_fn, prompt, **{**c.kwargs, name: bad}), bads)


@pytest.mark.parametrize("bad", BAD_STEP_FNS)
@fuzz(6)
@given(data=st.data())
def test_bad_step_fn_raises(bad, data):
    """A model returning NaN, a 3-D array, twice the rows, or integer logits."""
    c = data.draw(call(bad=bad))
    prompt = np.array(c.prompt, dtype=np.int64)
    expect_error(fastlm.beam_search, c.step_fn, prompt, **c.kwargs)
