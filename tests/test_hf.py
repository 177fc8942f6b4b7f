"""fastlm.hf against Hugging Face transformers' own processors and generate(), on random logits and on the
logits of a small GPT-2 built from a config (no weights are downloaded)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastlm
import fastlm.reference as ref

import anchors

torch = anchors.module("torch", "pip install torch")
transformers = anchors.module("transformers", "pip install fastlm[hf]")
import fastlm.hf as fh  # noqa: E402
from transformers.generation import logits_process as lp  # noqa: E402

PAIRS = [
    (lambda: fh.TopKProcessor(50), lambda: lp.TopKLogitsWarper(50)),
    (lambda: fh.TopKProcessor(3, min_tokens_to_keep=7), lambda: lp.TopKLogitsWarper(3, min_tokens_to_keep=7)),
    (lambda: fh.TopPProcessor(0.9), lambda: lp.TopPLogitsWarper(0.9)),
    (lambda: fh.TopPProcessor(0.3, min_tokens_to_keep=4, filter_value=-1e4),
     lambda: lp.TopPLogitsWarper(0.3, min_tokens_to_keep=4, filter_value=-1e4)),
    (lambda: fh.MinPProcessor(0.05), lambda: lp.MinPLogitsWarper(0.05)),
    (lambda: fh.TypicalProcessor(0.9), lambda: lp.TypicalLogitsWarper(0.9)),
    (lambda: fh.TemperatureProcessor(0.7), lambda: lp.TemperatureLogitsWarper(0.7)),
    (lambda: fh.RepetitionPenaltyProcessor(1.3), lambda: lp.RepetitionPenaltyLogitsProcessor(1.3)),
    (lambda: fh.RepetitionPenaltyProcessor(0.8, prompt_ignore_length=5),
     lambda: lp.RepetitionPenaltyLogitsProcessor(0.8, prompt_ignore_length=5)),
    (lambda: fh.TopKTopPProcessor(50, 0.9, 0.7),
     lambda: transformers.LogitsProcessorList([lp.TemperatureLogitsWarper(0.7), lp.TopKLogitsWarper(50),
                                               lp.TopPLogitsWarper(0.9)])),
    (lambda: fh.TopKTopPProcessor(5, 0.2, 1.5, min_tokens_to_keep=3),
     lambda: transformers.LogitsProcessorList([lp.TemperatureLogitsWarper(1.5), lp.TopKLogitsWarper(5, min_tokens_to_keep=3),
                                               lp.TopPLogitsWarper(0.2, min_tokens_to_keep=3)])),
    (lambda: fh.LogitBiasProcessor({(5,): 2.0, (11, 7): -1.5, (3, 4, 9): 4.0}),
     lambda: lp.SequenceBiasLogitsProcessor({(5,): 2.0, (11, 7): -1.5, (3, 4, 9): 4.0})),
]


@pytest.fixture(scope="module")
def gpt2():
    cfg = transformers.GPT2Config(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # a peaked head, as trained models have
        model.lm_head.weight.mul_(40)
    return model


def model_logits(model, batch=8, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g)
    with torch.no_grad():
        return ids, model(ids).logits[:, -1, :].float().contiguous()


def inputs(kind, gpt2):
    if kind == "model":
        ids, x = model_logits(gpt2)
    else:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(8, 5000, generator=g) * 3
        ids = torch.randint(0, 5000, (8, 20), generator=g)
    ids[0, -2:] = torch.tensor([3, 4])  # (the bias sequences' prefixes end some rows)
    ids[1, -1] = 11
    return ids, x


def assert_same_but_boundary_ties(got, want, x):
    """got equals want except at entries of one row that all hold the same score (tokens tied at a filter's
    boundary: fastlm keeps the lower index first, Hugging Face's sort leaves their order unspecified)."""
    diff = got != want
    for r in torch.nonzero(diff.any(1)).reshape(-1).tolist():
        tied = x[r][diff[r]]
        assert torch.all(tied == tied[0]), f"row {r} differs beyond a boundary tie"
        assert int(torch.isinf(got[r]).sum()) == int(torch.isinf(want[r]).sum())  # (as many kept)


@pytest.mark.parametrize("kind", ["random", "model"])
@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_processor_equals_hugging_face(pair, kind, gpt2):
    """float32 scores: the same tensor out; bfloat16 / float16 scores: the kept set and values of Hugging
    Face's processor on the float32 scores (generate's dtype; Hugging Face in bfloat16 accumulates in
    bfloat16), written back in the scores' dtype; log-probabilities filter as the logits do."""
    ours, theirs = PAIRS[pair]
    ids, x = inputs(kind, gpt2)
    want = theirs()(ids, x.clone())
    got = x.clone()
    assert ours()(ids, got) is got  # in place
    assert torch.equal(got, want)
    for dt in (torch.bfloat16, torch.float16):
        low = x.to(dt)
        got = ours()(ids, low.clone())
        assert got.dtype == dt
        assert_same_but_boundary_ties(got, theirs()(ids, low.float()).to(dt), low)
    if pair in (0, 2, 4, 5, 9):  # filters: log_softmax input keeps the same set
        lsm = torch.log_softmax(x, -1)
        np.testing.assert_array_equal(torch.isinf(ours()(ids, lsm.clone())).numpy(), torch.isinf(want).numpy())
    noncontig = torch.stack([x, x], 2)[:, :, 0]  # (a strided view of x)
    assert torch.equal(ours()(ids, noncontig), want)


def test_processors_validate_as_hugging_face():
    cases = [("TopKProcessor", "TopKLogitsWarper", {"top_k": 0}), ("TopKProcessor", "TopKLogitsWarper", {"top_k": 2.5}),
             ("TopPProcessor", "TopPLogitsWarper", {"top_p": 1.5}),
             ("TopPProcessor", "TopPLogitsWarper", {"top_p": 0.5, "min_tokens_to_keep": 0}),
             ("MinPProcessor", "MinPLogitsWarper", {"min_p": -0.1}), ("TypicalProcessor", "TypicalLogitsWarper", {"mass": 1.5}),
             ("TemperatureProcessor", "TemperatureLogitsWarper", {"temperature": 0}),
             ("RepetitionPenaltyProcessor", "RepetitionPenaltyLogitsProcessor", {"penalty": -1.0}),
             ("LogitBiasProcessor", "SequenceBiasLogitsProcessor", {"sequence_bias": [[[1], "x"]]})]
    for ours, theirs, kw in cases:
        with pytest.raises(ValueError) as want:
            getattr(lp, theirs)(**kw)
        with pytest.raises(ValueError) as got:
            getattr(fh, ours)(**kw)
        assert str(got.value) == str(want.value)
    with pytest.raises(TypeError, match="2-D torch tensor"):
        fh.TopKProcessor(5)(torch.zeros(1, 3, dtype=torch.long), torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        fh.TopKProcessor(5)(torch.zeros(1, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="contains NaN"):
        fh.TopPProcessor(0.5)(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="needs a seed"):
        fh.processors(sample=True)


def test_presence_and_frequency_penalties_match_the_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50, generator=g)
    ids = torch.randint(0, 50, (4, 30), generator=g)
    got = fh.RepetitionPenaltyProcessor(1.2, presence_penalty=0.5, frequency_penalty=0.25)(ids, x.clone())
    want = ref.apply_penalties(x.numpy().astype(np.float64), ids.numpy(), repetition_penalty=1.2,
                               presence_penalty=0.5, frequency_penalty=0.25)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_processors_builds_hugging_faces_order():
    got = fh.processors(temperature=0.7, top_k=50, top_p=0.9, min_p=0.05, typical_p=0.95, repetition_penalty=1.1,
                        sequence_bias={(1,): 1.0})
    assert [type(p).__name__ for p in got] == ["LogitBiasProcessor", "RepetitionPenaltyProcessor",
                                               "TopKTopPProcessor", "MinPProcessor", "TypicalProcessor"]
    got = fh.processors(temperature=0.7, top_k=50, min_p=0.05)
    assert [type(p).__name__ for p in got] == ["TemperatureProcessor", "TopKProcessor", "MinPProcessor"]
    assert len(fh.processors(temperature=1.0, top_k=0, top_p=1.0)) == 0


@pytest.mark.parametrize("opts", [{"top_k": 50, "top_p": 0.9, "temperature": 0.7}, {"top_p": 0.5},
                                  {"min_p": 0.1, "repetition_penalty": 1.3}])
def test_generate_with_fastlm_processors_equals_hugging_faces(gpt2, opts):
    """generate(do_sample=True) with fastlm's processors (Hugging Face's warpers off) draws the same
    sequences as with Hugging Face's own, from the same torch seed."""
    ids, _ = model_logits(gpt2, batch=4, length=6, seed=5)
    torch.manual_seed(123)
    want = gpt2.generate(ids, do_sample=True, max_new_tokens=12, pad_token_id=0, **opts,
                         **({"top_k": 0} if "top_k" not in opts else {}))
    hf_off = {"top_k": 0, "top_p": 1.0, "temperature": 1.0}
    torch.manual_seed(123)
    got = gpt2.generate(ids, do_sample=True, max_new_tokens=12, pad_token_id=0, logits_processor=fh.processors(**opts),
                        **hf_off)
    assert torch.equal(got, want)


def test_sample_processor_is_fastlms_seeded_sampler(gpt2):
    """do_sample=False + SampleProcessor: each step's token is fastlm.sample of the step's scores with
    step_seed(length); reproducible; a row's draws do not depend on the other rows."""
    ids, _ = model_logits(gpt2, batch=3, length=5, seed=9)
    kw = {"do_sample": False, "max_new_tokens": 10, "pad_token_id": 0, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
    plist = fh.processors(sample=True, seed=42, temperature=0.8, top_k=40, top_p=0.95)
    a = gpt2.generate(ids, logits_processor=plist, **kw)
    b = gpt2.generate(ids, logits_processor=fh.processors(sample=True, seed=42, temperature=0.8, top_k=40, top_p=0.95),
                      **kw)
    assert torch.equal(a, b)
    one = gpt2.generate(ids[1:2], logits_processor=plist, **kw)
    assert torch.equal(one[0], a[1])
    seq = ids.clone()  # the same loop by hand
    sp = plist[-1]
    for _ in range(10):
        with torch.no_grad():
            x = gpt2(seq).logits[:, -1, :].float().numpy()
        nxt = fastlm.sample(x, temperature=0.8, top_k=40, top_p=0.95, seed=sp.step_seed(seq.shape[1]))
        seq = torch.cat([seq, torch.from_numpy(np.asarray(nxt)).reshape(-1, 1)], 1)
    assert torch.equal(seq, a)
    hot = [gpt2.generate(ids, logits_processor=fh.processors(sample=True, seed=s, temperature=50.0), **kw)
           for s in (42, 43)]
    assert not torch.equal(hot[0], hot[1])  # (another seed, other draws)


def test_top_p_boundary_is_exact_in_float64(gpt2):
    """Where Hugging Face's float32 accumulation and fastlm's float64 disagree on a kept set, the token
    in question sits within float32 rounding of the threshold (the documented difference); on these
    inputs they agree."""
    _, x = model_logits(gpt2, batch=8, seed=2)
    for p in (0.5, 0.8, 0.9, 0.95, 0.99):
        got = torch.isinf(fh.TopPProcessor(p)(None, x.clone()))
        want = torch.isinf(lp.TopPLogitsWarper(p)(None, x.clone()))
        for r in torch.nonzero((got != want).any(1)).reshape(-1).tolist():
            q = np.exp(x[r].double().numpy() - np.logaddexp.reduce(x[r].double().numpy()))
            order = np.argsort(-q, kind="stable")
            cum = np.cumsum(q[order])
            j = int(np.argmax((got[r] != want[r]).numpy()[order]))
            assert abs(cum[j] - p) < 1e-6 or abs(cum[j - 1] - p) < 1e-6
    assert math.isfinite(float(x.max()))


BEAM_CASES = [(1, True)] + [(nb, es) for nb in (2, 3, 5, 8) for es in (True, False, "never")]


@pytest.mark.parametrize("num_beams, early_stopping", BEAM_CASES)
def test_batched_beam_search_equals_generate(gpt2, num_beams, early_stopping):
    """fastlm.beam_search with CausalLMStep (the KV cache reordered per step) on a batch of ragged prompts
    against generate(num_beams=...) on the same prompts left-padded: every returned sequence equal and the
    scores equal to float32 accumulation, for length penalties -1, 0, 1, 2 and an EOS that ends beams
    mid-search. (generate with one beam is greedy search, which a one-beam search with early_stopping=True
    is.)"""
    prompts = [[5, 17, 900, 3, 44], [7, 7, 1], [250, 12, 13, 14, 15, 16, 999]]
    L, pad, new = max(map(len, prompts)), 0, 6
    ids = torch.tensor([[pad] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=pad, top_k=None, top_p=None,
              temperature=None)
    plain = gpt2.generate(ids, num_beams=max(num_beams, 2), num_return_sequences=1, eos_token_id=None, **kw)
    eos = int(plain[0, L + 2])  # a token the best beam of the first prompt takes at its third step
    ended_early = 0
    for lpen in (-1.0, 0.0, 1.0, 2.0):
        out = gpt2.generate(ids, num_beams=num_beams, num_return_sequences=num_beams, eos_token_id=eos,
                            length_penalty=lpen, early_stopping=early_stopping, return_dict_in_generate=True,
                            output_scores=True, **kw)
        got = fastlm.beam_search(fh.CausalLMStep(gpt2), prompts, num_beams=num_beams, max_new_tokens=new, eos_id=eos,
                                 length_penalty=lpen, early_stopping=early_stopping)
        for b, p in enumerate(prompts):
            assert len(got[b]) == num_beams
            for j, (seq, score) in enumerate(got[b]):
                hf = out.sequences[b * num_beams + j, L - len(p):].numpy()
                np.testing.assert_array_equal(hf[:seq.size], seq, err_msg=f"prompt {b}, beam {j}, lp {lpen}")
                assert (hf[seq.size:] == (pad if num_beams == 1 else pad or eos)).all()  # (generate's fill)
                if num_beams > 1:
                    assert score == pytest.approx(float(out.sequences_scores[b * num_beams + j]), rel=2e-5, abs=2e-5)
                ended_early += seq[-1] == eos and seq.size < len(p) + new
    assert ended_early  # the EOS ended some beams before max_new_tokens


def test_causal_lm_step_matches_the_model_without_cache(gpt2):
    """The cached step's logits equal the model run on each beam's whole sequence (no padding), through
    beam reorders that drop and repeat rows."""
    step = fh.CausalLMStep(gpt2)
    prompts = [[5, 17, 900], [7]]
    seqs = [list(p) for p in prompts]
    got = step.start(np.array([[5, 17, 900], [0, 0, 7]]), np.array([[1, 1, 1], [0, 0, 1]]))
    for beam_idx, toks in (([1, 1, 0], [3, 4, 5]), ([2, 0], [8, 9]), ([0, 0, 1, 1], [1, 2, 3, 4])):
        for r, s in enumerate(seqs):
            with torch.no_grad():
                want = gpt2(torch.tensor([s])).logits[0, -1].numpy()
            np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-4)
        seqs = [seqs[b] + [t] for b, t in zip(beam_idx, toks)]
        got = step.step(np.array(toks), np.array(beam_idx))
    assert step.model_seconds > 0
