"""The thread setting, show_config, and the list of public names the fuzz tests cover."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest

import fastlm
from fastlm import calibration, ngram

from .helpers import expect_error, expect_ok, fn_id


@pytest.fixture
def restore_threads():
    before = fastlm.get_num_threads()
    yield before
    fastlm.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 2, 3, np.int64(2)], ids=fn_id)
def test_set_num_threads(n, restore_threads):
    """The setting takes any integer >= 1, and results do not depend on it."""
    expect_ok(fastlm.set_num_threads, n)
    assert fastlm.get_num_threads() == int(n)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(fastlm.softmax(x), fastlm.softmax(x, num_threads=1))


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", None, True], ids=fn_id)
def test_set_num_threads_bad_value_raises(n, restore_threads):
    """An error, and the setting is unchanged."""
    expect_error(fastlm.set_num_threads, n)
    assert fastlm.get_num_threads() == restore_threads


def test_show_config_returns_dict():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cfg = fastlm.show_config()
    assert isinstance(cfg, dict)


def test_public_api_is_covered():
    """Every public name is exercised by the fuzz tests (a new function needs a fuzz test)."""
    covered = {"__version__", "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad",
               "token_logprobs", "top_k_filter", "top_p_filter", "min_p_filter", "typical_filter",
               "apply_penalties", "apply_logit_bias", "mask_tokens", "cfg_mix", "greedy", "sample", "beam_search",
               "entropy", "kl_divergence", "perplexity", "bits_per_token", "bits_per_byte", "byte_perplexity",
               "word_perplexity", "sequence_logprob", "choose", "rolling_windows", "calibration", "ngram",
               "set_num_threads", "get_num_threads", "show_config", "linear_cross_entropy",
               "linear_cross_entropy_with_grad", "top_k_top_p_filter", "causal_targets", "score_continuations",
               "loglikelihood"}
    assert set(fastlm.__all__) <= covered, set(fastlm.__all__) - covered
    assert set(calibration.__all__) <= {"expected_calibration_error", "reliability_bins", "calibration_from_logits",
                                        "fit_temperature", "plot_reliability_diagram"}
    assert set(ngram.__all__) <= {"count_ngrams", "NgramLM", "load", "byte_tokens", "WordVocab", "BYTE_BOS", "BYTE_EOS",
                                  "BYTE_VOCAB", "ArpaLM", "SequenceScores", "TokenScores", "ByteVocab", "MAX_ORDER"}
