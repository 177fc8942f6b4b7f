"""Typed usage of the fastlm API, checked by mypy --strict in tests/test_typing.py.

Every result is bound to an annotated variable, so that a wrong or missing annotation in fastlm makes
mypy fail here. The file also runs (tests/test_typing.py executes it) to show that the annotations
describe what the functions return.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

import fastlm
from fastlm import calibration, ngram, reference
from fastlm.ngram import NgramLM, WordVocab

Floats = NDArray[np.floating[Any]]


def tiny_model(seqs: NDArray[np.int64]) -> NDArray[np.float32]:
    """A step function for beam search: (B, L) int64 ids -> (B, V) float32 logits."""
    V = 11
    last = seqs[:, -1]
    logits = np.zeros((seqs.shape[0], V), np.float32)
    logits[np.arange(seqs.shape[0]), (last + 1) % V] = 3.0
    return logits


def main() -> None:
    rng = np.random.default_rng(0)
    logits: NDArray[np.float32] = rng.standard_normal((4, 8, 11)).astype(np.float32)
    targets: NDArray[np.int64] = rng.integers(0, 11, size=(4, 8))

    # softmax family
    probs: Floats = fastlm.softmax(logits, axis=-1, temperature=0.7)
    logp: Floats = fastlm.log_softmax(logits, out=np.empty_like(logits), num_threads=2)
    lse: np.floating[Any] | Floats = fastlm.logsumexp(logits[0, 0])
    lse_value: float = float(lse)
    assert probs.shape == logp.shape == logits.shape
    assert isinstance(lse, np.floating)

    # losses: the reduction selects the overload
    loss: float = fastlm.cross_entropy(logits, targets, label_smoothing=0.1, z_loss=1e-4)
    per_token: Floats = fastlm.cross_entropy(logits, targets, reduction="none")
    summed: float = fastlm.cross_entropy(logits, targets, reduction="sum", weight=np.ones(11))
    grad_loss, grad = fastlm.cross_entropy_with_grad(logits, targets, softcap=30.0, ignore_index=-100)
    grad_loss_value: float = grad_loss
    grad_array: Floats = grad
    rows_loss, rows_grad = fastlm.cross_entropy_with_grad(logits, targets, reduction="none", grad_out=logits.copy())
    rows_loss_array: Floats = rows_loss
    token_lp: Floats = fastlm.token_logprobs(logits, targets, temperature=2.0)
    assert isinstance(loss, float) and isinstance(summed, float) and isinstance(grad_loss_value, float)
    assert per_token.shape == targets.shape == rows_loss_array.shape == token_lp.shape
    assert grad_array.shape == rows_grad.shape == logits.shape

    # decoding
    row = logits[0, 0]
    kept: Floats = fastlm.top_p_filter(logits, 0.9, min_tokens_to_keep=2)
    kept_k: Floats = fastlm.top_k_filter(logits, np.full((4, 8), 3), filter_value=-1e9)
    kept_min: Floats = fastlm.min_p_filter(row, 0.05)
    kept_typ: Floats = fastlm.typical_filter(row, 0.95)
    history: NDArray[np.int64] = np.array([[1, 2, 2, -1]])
    penalized: Floats = fastlm.apply_penalties(logits[0, :1], history, repetition_penalty=1.3,
                                               frequency_penalty=0.1)
    biased: Floats = fastlm.apply_logit_bias(row, {3: 2.0, 4: -1.0})
    biased_pair: Floats = fastlm.apply_logit_bias(row, ([3, 4], [2.0, -1.0]))
    masked: Floats = fastlm.mask_tokens(row, allowed=[1, 2, 3], banned=np.array([2]))
    mixed: Floats = fastlm.cfg_mix(row, row[::-1].copy(), 1.5)
    ids: np.int64 | NDArray[np.int64] = fastlm.sample(logits, temperature=0.8, top_k=5, top_p=0.9, seed=7)
    one_id: int = int(fastlm.sample(row, seed=1))
    best: int = int(fastlm.greedy(row))
    hyps: list[tuple[NDArray[np.int64], float]] = fastlm.beam_search(
        tiny_model, [1, 2], num_beams=3, max_new_tokens=4, eos_id=0, length_penalty=1.0, early_stopping="never")
    for seq, score in hyps:
        first_token: int = int(seq[0])
        score_value: float = score
        assert first_token == 1 and isinstance(score_value, float)
    assert kept.shape == kept_k.shape == logits.shape
    assert kept_min.shape == kept_typ.shape == biased.shape == biased_pair.shape == masked.shape == mixed.shape
    assert penalized.shape == (1, 11) and np.shape(ids) == (4, 8) and 0 <= one_id < 11 and 0 <= best < 11

    # metrics
    ppl: float = fastlm.perplexity(logits, targets)
    bpt: float = fastlm.bits_per_token(logits, targets)
    bpb: float = fastlm.bits_per_byte([-10.0, -20.0], [12, 30])
    ent: np.floating[Any] | Floats = fastlm.entropy(logits, base=2)
    kl: np.floating[Any] | Floats = fastlm.kl_divergence(logits, logits[::-1])
    seq_lp: NDArray[np.float64] = fastlm.sequence_logprob(logits, targets, prompt_lengths=[2, 3, 0, 1])
    seq_lp2, is_greedy = fastlm.sequence_logprob(logits, targets, normalize="tokens", return_is_greedy=True)
    is_greedy_mask: NDArray[np.bool_] = is_greedy
    choice: np.intp | NDArray[np.intp] = fastlm.choose(seq_lp.reshape(2, 2))
    windows: NDArray[np.int64] = fastlm.rolling_windows(100, 32, stride=16)
    assert ppl > 1 and bpt > 0 and bpb > 0 and np.shape(ent) == np.shape(kl) == (4, 8)
    assert seq_lp.shape == seq_lp2.shape == is_greedy_mask.shape == (4,) and np.shape(choice) == (2,)
    assert windows.shape[1] == 6

    # calibration
    conf, correct = calibration.calibration_from_logits(logits.reshape(-1, 11), targets.reshape(-1))
    ece: float = calibration.expected_calibration_error(conf, correct, n_bins=10, norm="l2", closed="left")
    bins: dict[str, NDArray[Any]] = calibration.reliability_bins(conf, correct, strategy="quantile")
    temperature: float = calibration.fit_temperature(logits.reshape(-1, 11), targets.reshape(-1), bounds=(0.1, 10.0))
    assert 0 <= ece <= 1 and set(bins) >= {"count", "accuracy"} and 0.1 <= temperature <= 10.0

    # n-grams
    vocab: WordVocab = WordVocab.build(["the cat sat", "the dog sat"], min_count=1)
    encoded: NDArray[np.int64] = vocab.encode("the cat sat")
    text: str = vocab.decode(encoded)
    lm: NgramLM = NgramLM(3, alpha=0.5, bos_id=WordVocab.BOS, eos_id=WordVocab.EOS)
    lm = lm.fit([encoded, vocab.encode("the dog sat")]).update([[3, 4, 5]])
    dist: NDArray[np.float64] = lm.next_token_distribution([WordVocab.BOS, 3])
    p: NDArray[np.float64] = lm.prob([4], [[3]])
    lm_ppl: float = lm.perplexity([encoded])
    lm_score: float = lm.score(encoded)
    n: int = lm.count([3, 4]) + lm.vocab_size + lm.nbytes()
    grams, counts = lm.counts(2)
    gram_ids: NDArray[np.uint32] = grams
    gram_counts: NDArray[np.int64] = counts
    generated: NDArray[np.int64] = lm.generate([3], 5, seed=0, top_k=3)
    merged: NgramLM = lm + lm
    byte_ids: NDArray[np.int64] = ngram.byte_tokens("héllo")
    all_grams, all_counts = ngram.count_ngrams(byte_ids, 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.bin")
        merged.save(path)
        loaded: NgramLM = NgramLM.load(path)
    assert text == "the cat sat" and abs(float(dist.sum()) - 1) < 1e-9 and p.shape == (1,)
    assert lm_ppl > 1 and lm_score < 0 and n > 0 and gram_ids.shape[0] == gram_counts.shape[0]
    assert generated.dtype == np.int64 and loaded.order == 3 and all_grams.shape[0] == all_counts.shape[0]

    # the float64 reference
    ref_loss: float = reference.cross_entropy(logits, targets, label_smoothing=0.1, z_loss=1e-4)
    ref_probs: NDArray[np.float64] = reference.softmax(logits)
    ref_hyps: list[tuple[NDArray[np.int64], float]] = reference.beam_search(tiny_model, [1], num_beams=2,
                                                                            max_new_tokens=2)
    ref_lm: reference.NgramLM = reference.NgramLM(2).fit([[1, 2, 3]])
    assert abs(ref_loss - loss) < 1e-3 and ref_probs.shape == logits.shape and len(ref_hyps) == 2
    assert ref_lm.count([1, 2]) == 1

    # configuration
    fastlm.set_num_threads(2)
    threads: int = fastlm.get_num_threads()
    assert threads == 2
    assert isinstance(lse_value, float) and fastlm.__version__


if __name__ == "__main__":
    main()
