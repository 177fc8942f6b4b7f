"""Regression tests: one per fixed bug, named after it, each checked against fastlm.reference (and torch /
scipy where they define the expected result)."""

import numpy as np
import pytest
from conftest import logits_like

import fastlm
from fastlm import reference as ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequence_logprob_is_greedy_skips_excluded_rows(simd, rng, dtype):
    """return_is_greedy used to take the argmax of every row and raised on NaN / all -inf rows at
    positions the prompt, the mask or ignore_index exclude; such rows must not count at all."""
    B, T, V = 3, 6, 9
    x = logits_like(rng, (B, T, V), dtype)
    t = rng.integers(0, V, (B, T))
    t[1] = np.argmax(x[1], axis=-1)  # a sequence that is greedy at its scored positions
    t[2] = np.argmax(x[2], axis=-1)
    t[2, 5] = -100  # ignore_index
    prompt_lengths = np.array([2, 0, 1])
    mask = np.ones((B, T), bool)
    mask[1, 3] = False
    clean = x.copy()
    x[0, 0] = np.nan  # before the prompt's end
    x[0, 1] = -np.inf
    x[1, 3] = np.nan  # masked out
    x[1, 3, 0] = 1e30
    x[2, 0] = -np.inf  # prompt
    x[2, 5] = np.nan  # ignore_index
    t[1, 3] = 0  # not the argmax of the masked row's clean logits: it must not make sequence 1 non-greedy
    kw = dict(prompt_lengths=prompt_lengths, mask=mask, return_is_greedy=True)
    for normalize in (None, "tokens"):
        total, greedy = fastlm.sequence_logprob(x, t, normalize=normalize, **kw)
        want_total, want_greedy = ref.sequence_logprob(x.astype(np.float64), t, normalize=normalize, **kw)
        np.testing.assert_array_equal(greedy, want_greedy)
        np.testing.assert_array_equal(greedy, [False, True, True])
        np.testing.assert_allclose(total, want_total, rtol=1e-5 if dtype == np.float32 else 1e-12)
        # no influence: the same results as with finite logits at the excluded positions
        clean_total, clean_greedy = fastlm.sequence_logprob(clean, t, normalize=normalize, **kw)
        np.testing.assert_array_equal(total, clean_total)
        np.testing.assert_array_equal(greedy, clean_greedy)
    # a NaN / all -inf row at a scored position has no argmax: both raise, naming the position
    for bad in (np.nan, -np.inf):
        y = x.copy()
        y[0, 4] = bad
        with pytest.raises(ValueError, match=r"logits\[0, 4\]"):
            fastlm.sequence_logprob(y, t, **kw)
        with pytest.raises(ValueError, match=r"logits\[0, 4\]"):
            ref.sequence_logprob(y.astype(np.float64), t, **kw)
        # without is_greedy the scored row's sequence is NaN (as torch's losses), the others unchanged
        total = fastlm.sequence_logprob(y, t, prompt_lengths=prompt_lengths, mask=mask)
        want = ref.sequence_logprob(y.astype(np.float64), t, prompt_lengths=prompt_lengths, mask=mask)
        assert np.isnan(total[0]) and np.isnan(want[0])
        np.testing.assert_allclose(total[1:], want[1:], rtol=1e-5 if dtype == np.float32 else 1e-12)
