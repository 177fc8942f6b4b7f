"""count_ngrams, NgramLM (counts, probabilities, scores, merge, generate, save / load) and the text
helpers against the reference."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlm import ngram
from fastlm import reference as ref

from .helpers import assert_match, expect_error, expect_errors, expect_ok, fuzz, outcome

ORDERS = [1, 2, 3, 4]

# ------------------------------------------------------------------------------------- count_ngrams


@st.composite
def tokens_call(draw, min_n=0):
    """(ids as int64, their values, order): 0 to 40 ids below 1, 2, 5, 300, 2^16 or 2^32 - 1."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(min_n, 40))
    hi = draw(st.sampled_from([1, 2, 5, 300, 2**16, 2**32 - 1]))
    tokens = rng.integers(0, hi, n, dtype=np.int64) if hi > 1 else np.zeros(n, np.int64)
    return tokens, draw(st.sampled_from([1, 2, 3, 5, 8]))


def keys_fit(tokens, order):
    """Documented limits: any order up to MAX_ORDER, any id below 2^32 (rank keys)."""
    return order <= ngram.MAX_ORDER and (tokens.size == 0 or int(tokens.max()) < 2**32)


@pytest.mark.parametrize("kind", ["int64", "uint32", "uint8", "list"])
@fuzz(20)
@given(call=tokens_call())
def test_count_ngrams_matches_reference(kind, call):
    """uint32 k-grams and int64 counts, the reference's, for every order and id the tables hold."""
    tokens, order = call
    tokens = tokens % 256 if kind == "uint8" else tokens
    t = {"int64": tokens, "uint32": tokens.astype(np.uint32), "uint8": tokens.astype(np.uint8),
         "list": tokens.tolist() or np.zeros(0, np.int64)}[kind]
    ok, res = outcome(ngram.count_ngrams, t, order)
    assert ok == keys_fit(tokens, order), res
    if not ok:
        return
    grams, counts = res
    wgrams, wcounts = ref.count_ngrams(tokens, order)
    assert grams.dtype == np.uint32 and counts.dtype == np.int64 and grams.shape == (wgrams.shape[0], order)
    np.testing.assert_array_equal(grams.astype(np.int64), wgrams)
    np.testing.assert_array_equal(counts, wcounts)


@fuzz(20)
@given(call=tokens_call(min_n=1))
def test_count_ngrams_bad_input_raises(call):
    """An id of -1 or 2^32, float, 2-D or bool ids; an order < 1 or not an int."""
    tokens, order = call
    neg, big = tokens.copy(), tokens.copy()
    neg[-1], big[0] = -1, 2**32
    bads = [neg, big, tokens.astype(np.float64), tokens.reshape(1, -1), tokens.astype(bool)]
    expect_errors(lambda bad: ngram.count_ngrams(bad, order), bads)
    expect_errors(lambda bad: ngram.count_ngrams(tokens, bad), [0, -1, 1.5, True])


# ------------------------------------------------------------------------------------------ NgramLM


def below(v, vocab_size):
    return vocab_size is None or v is None or v < vocab_size


@st.composite
def lm_params(draw, orders=ORDERS):
    """Valid constructor arguments (order, alpha, vocab_size, bos_id, eos_id) and V, the ids' bound."""
    V = draw(st.integers(1, 7))
    vocab_size = draw(st.sampled_from([None, V, V + 3]))
    p = dict(order=draw(st.sampled_from(orders)), alpha=draw(st.sampled_from([1.0, 0.1, 0.5, 2])),
             vocab_size=vocab_size, bos_id=draw(st.sampled_from([None, None, V, V + 1]).filter(
                 lambda v: below(v, vocab_size))),
             eos_id=draw(st.sampled_from([None, None, V + 1, V + 2]).filter(lambda v: below(v, vocab_size))))
    return p, V


def make(p, cls=ngram.NgramLM):
    return cls(p["order"], alpha=p["alpha"], vocab_size=p["vocab_size"], bos_id=p["bos_id"], eos_id=p["eos_id"])


@st.composite
def any_fitted(draw, orders=ORDERS):
    """A model fitted on 0 to 4 sequences of 0 to 8 ids and the reference fitted on the same:
    SimpleNamespace(lm, rlm, p (arguments), V, seqs, Vs (its vocab size), rng)."""
    p, V = draw(lm_params(orders))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    seqs = [rng.integers(0, V, draw(st.integers(0, 8))).tolist() for _ in range(draw(st.integers(0, 4)))]
    lm = expect_ok(make(p).fit, seqs)
    rlm = make({**p, "alpha": float(p["alpha"])}, ref.NgramLM).fit(seqs)
    return SimpleNamespace(lm=lm, rlm=rlm, p=p, V=V, seqs=seqs, Vs=lm.vocab_size, rng=rng)


def fitted(orders=ORDERS):
    """any_fitted with a token to query: nothing seen and no vocab_size, BOS or EOS gives |V| = 0."""
    return any_fitted(orders).filter(lambda c: c.Vs > 0)


def assert_same_counts(lm, rlm, order):
    assert lm.vocab_size == rlm.vocab_size
    for k in range(1, order + 1):
        g, c = lm.counts(k)
        wg, wc = rlm.counts(k)
        np.testing.assert_array_equal(g.astype(np.int64), wg)
        np.testing.assert_array_equal(c, wc)


@fuzz(20)
@given(pv=lm_params())
def test_ngram_lm_bad_arguments_raise(pv):
    """order < 1 or not an int; alpha <= 0, not finite or not a number; vocab_size < 1 or not an int;
    bos_id / eos_id negative, not an int, or not below vocab_size."""
    p, _ = pv
    bads = [{"order": v} for v in (0, 2.0, True)] + [{"alpha": v} for v in (0.0, -1.0, np.nan, np.inf, "a")] + [
        {"vocab_size": v} for v in (0, 1.5)] + [{"bos_id": v} for v in (-1, 0.5)] + [{"eos_id": -1}]
    if p["vocab_size"] is not None:
        bads += [{"bos_id": p["vocab_size"]}, {"eos_id": p["vocab_size"]}]
    expect_errors(lambda bad: make({**p, **bad}), bads)


@fuzz(20)
@given(data=st.data())
def test_ngram_lm_bad_sequences_raise(data):
    """fit on a sequence holding -1, an id of vocab_size, float ids, or on one flat array of ids."""
    c = data.draw(any_fitted())
    bads = [c.seqs + [[0, -1]], c.seqs + [[0.5, 1.0]], np.array(sum(c.seqs, []) or [0], np.int64)]
    bads += [c.seqs + [[c.p["vocab_size"]]]] * (c.p["vocab_size"] is not None)
    expect_errors(lambda bad: make(c.p).fit(bad), bads)


@pytest.mark.parametrize("order", ORDERS)
@fuzz(6)
@given(data=st.data())
def test_ngram_lm_counts_match_reference(order, data):
    """vocab_size and the k-grams and counts of every order (an empty vocabulary too); k outside
    [1, order] raises."""
    c = data.draw(any_fitted([order]))
    assert_same_counts(c.lm, c.rlm, order)
    expect_errors(c.lm.counts, [0, order + 1])


@pytest.mark.parametrize("order", ORDERS)
@fuzz(6)
@given(data=st.data())
def test_ngram_lm_probabilities_match_reference(order, data):
    """prob, logprob and next_token_distribution (summing to 1) for contexts of any length; float,
    out-of-range and mis-shaped queries raise."""
    c = data.draw(fitted([order]))
    m, k = data.draw(st.integers(1, 6)), data.draw(st.integers(0, order + 1))
    toks, ctx = c.rng.integers(0, c.Vs, m), c.rng.integers(0, c.Vs, (m, k))
    np.testing.assert_allclose(c.lm.prob(toks, ctx), c.rlm.prob(toks, ctx), rtol=1e-12)
    np.testing.assert_allclose(c.lm.logprob(toks, ctx), c.rlm.logprob(toks, ctx), rtol=1e-12)
    expect_error(c.lm.prob, toks, ctx.astype(np.float64))
    expect_error(c.lm.prob, np.append(toks, c.Vs), np.vstack([ctx, ctx[:1]]))
    expect_error(c.lm.prob, toks, ctx[:-1] if m > 1 else np.zeros((2, k), np.int64))
    negative = ctx.copy()
    negative[:1, :1] = -1
    expect_errors(lambda bad: c.lm.prob(toks, bad), [negative] * (k > 0))
    c1 = c.rng.integers(0, c.Vs, data.draw(st.integers(0, order)))
    d = c.lm.next_token_distribution(c1)
    np.testing.assert_allclose(d, c.rlm.next_token_distribution(c1), rtol=1e-12)
    np.testing.assert_allclose(d.sum(), 1.0, rtol=1e-9)


def fitted_and_tests(data, order):
    """A fitted model and its reference (fitted()), and two test sequences of up to 6 ids."""
    c = data.draw(fitted([order]))
    return c, [c.rng.integers(0, c.Vs, data.draw(st.integers(0, 6))).tolist() for _ in range(2)]


@pytest.mark.parametrize("order", ORDERS)
@fuzz(6)
@given(data=st.data())
def test_ngram_lm_scores_match_reference(order, data):
    """score, perplexity and count; out-of-range or float ids and n-grams of no or too many ids raise."""
    c, test_seqs = fitted_and_tests(data, order)
    for s in test_seqs:
        np.testing.assert_allclose(c.lm.score(s), c.rlm.score(s), rtol=1e-9, atol=1e-12)
    assert_match(c.lm.perplexity(test_seqs), c.rlm.perplexity(test_seqs), 1e-9)
    expect_errors(c.lm.score, [[c.Vs], [0.5]])
    expect_error(c.lm.perplexity, [[0], [-1]])
    gram = test_seqs[0][:order] or [0]
    assert c.lm.count(gram) == c.rlm.count(gram)
    expect_errors(c.lm.count, [[], [0] * (order + 1)])


@pytest.mark.parametrize("order", ORDERS)
@fuzz(6)
@given(data=st.data())
def test_ngram_lm_merge_matches_reference(order, data):
    """lm + other has the summed counts; a model of another order, or no model, raises."""
    c, test_seqs = fitted_and_tests(data, order)
    merged = c.lm + make(c.p).fit(test_seqs)
    rmerged = c.rlm.merge(make({**c.p, "alpha": float(c.p["alpha"])}, ref.NgramLM).fit(test_seqs))
    assert_same_counts(merged, rmerged, order)
    expect_errors(c.lm.merge, [ngram.NgramLM(order + 1, alpha=c.p["alpha"]), "model"])


@pytest.mark.parametrize("n_new", [0, 1, 5])
@fuzz(8)
@given(data=st.data())
def test_ngram_lm_generate(n_new, data):
    """At most n_new ids in [0, |V|), never BOS, nothing after EOS; a negative or float count raises."""
    c = data.draw(fitted())
    c1 = c.rng.integers(0, c.Vs, data.draw(st.integers(0, c.p["order"])))
    seed = data.draw(st.integers(0, 2**64 - 1))
    out = expect_ok(c.lm.generate, c1, n_new, seed=seed)
    assert out.dtype == np.int64 and out.size <= n_new
    assert ((out >= 0) & (out < c.Vs)).all()
    assert c.p["bos_id"] is None or (out != c.p["bos_id"]).all()
    assert c.p["eos_id"] is None or not out.size or (out[:-1] != c.p["eos_id"]).all()
    expect_errors(lambda bad: c.lm.generate(c1, bad, seed=seed), [-1, 1.5])


@pytest.mark.parametrize("variant", ["truncate", "flip"])
@fuzz(10)
@given(data=st.data())
def test_ngram_lm_save_load(variant, data):
    """save / load gives the same distributions; a truncated file, or one with a byte flipped, raises."""
    c = data.draw(fitted())
    c1 = c.rng.integers(0, c.Vs, data.draw(st.integers(0, c.p["order"])))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.bin")
        c.lm.save(path)
        dist = c.lm.next_token_distribution(c1)
        np.testing.assert_allclose(ngram.NgramLM.load(path).next_token_distribution(c1), dist)
        assert dist.shape == (c.Vs,)
        raw = bytearray(open(path, "rb").read())
        cut = data.draw(st.integers(0, len(raw) - 1))
        if variant == "truncate":
            raw = raw[:cut]
        else:
            raw[cut] ^= 0x41
        with open(path, "wb") as f:
            f.write(bytes(raw))
        expect_error(ngram.NgramLM.load, path)


# ------------------------------------------------------------------------------------- text helpers

@fuzz(20)
@given(text=st.text(max_size=30))
def test_byte_tokens(text):
    """The UTF-8 bytes as int64 ids, from str or bytes."""
    ids = ngram.byte_tokens(text)
    np.testing.assert_array_equal(ids, list(text.encode("utf-8")))
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ngram.byte_tokens(text.encode("utf-8")), ids)


@fuzz(20)
@given(texts=st.lists(st.text(alphabet="ab c\n", max_size=12), max_size=4), min_count=st.sampled_from([1, 2, 3]))
def test_word_vocab(texts, min_count):
    """3 special words, then the words seen min_count times; encode / decode maps the others to <unk>;
    a min_count < 1 or not an int raises."""
    vocab = expect_ok(ngram.WordVocab.build, texts, min_count)
    c = Counter(w for t in texts for w in t.split())
    kept = {w for w, n in c.items() if n >= min_count}
    assert set(vocab.words[3:]) == kept and len(vocab) == 3 + len(kept)
    for t in texts:
        assert vocab.decode(vocab.encode(t)) == " ".join(w if w in kept else "<unk>" for w in t.split())
    expect_errors(lambda bad: ngram.WordVocab.build(texts, bad), [0, -1, 1.5, True])


@fuzz(20)
@given(text=st.text(max_size=30))
def test_byte_vocab(text):
    """ByteVocab: byte_tokens, decoded back to the text; BOS / EOS ids are dropped by decode."""
    v = ngram.ByteVocab()
    ids = v.encode(text)
    np.testing.assert_array_equal(ids, ngram.byte_tokens(text))
    assert v.decode(list(ids) + [v.EOS]) == text and len(v) == ngram.BYTE_VOCAB


@pytest.mark.filterwarnings("ignore:.*fallback discounts:UserWarning")
@fuzz(15)
@given(data=st.data())
def test_kneser_ney_and_arpa(data):
    """Kneser-Ney (any order, with or without BOS / EOS / UNK) equals the reference's estimate; its ARPA
    file read back (ArpaLM) scores every sequence as the model does (8 digits); score_batch, full_scores
    and perplexity agree with one another; a model of order MAX_ORDER counts."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    order = data.draw(st.integers(1, 6))
    V = data.draw(st.integers(4, 9))
    specials = data.draw(st.sampled_from([(1, 2, 0), (1, 2, None), (None, 2, None), (None, None, None)]))
    seqs = [list(rng.integers(3, V, rng.integers(0, 10))) for _ in range(data.draw(st.integers(1, 30)))]
    bos, eos, unk = specials
    lm = ngram.NgramLM(order, smoothing="kneser-ney", vocab_size=V + 1, bos_id=bos, eos_id=eos, unk_id=unk,
                       discount_fallback=True).fit(seqs)
    want, disc, unseen = ref.kneser_ney(seqs, order, vocab_size=V + 1, bos_id=bos, eos_id=eos, unk_id=unk,
                                        discount_fallback=True)
    bm = lm.backoff_model()
    got = {}
    for k in range(1, order + 1):
        for row, p, i in zip(bm.ngrams(k).tolist(), bm.prob[k - 1].tolist(), range(bm.keys[k - 1].size)):
            got[tuple(row)] = (p, bm.backoff[k - 1][i] if k < order else 0.0)
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[g] for g in want], [want[g] for g in want], atol=1e-12)
    np.testing.assert_allclose(lm.discounts, disc)
    test = [list(rng.integers(0, V + 1, rng.integers(0, 8))) for _ in range(5)]
    test = [[t for t in s if t not in (bos, eos)] for s in test]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.arpa")
        lm.to_arpa(path)
        back = ngram.ArpaLM.from_arpa(path)
    s = lm.score_batch(test, log10=True)
    assert isinstance(s, ngram.SequenceScores)
    words = {w: i for i, w in enumerate(back.words)}
    names = lm._words()
    mapped = [[words.get(names[t], words.get("<unk>", -1)) for t in seq] for seq in test]
    if all(t >= 0 for seq in mapped for t in seq):  # (without <unk>, an unseen id has no word in the file)
        np.testing.assert_allclose(back.score_batch(mapped, log10=True).logprob, s.logprob, atol=1e-6)
    fs = lm.full_scores(test)
    assert isinstance(fs, ngram.TokenScores)
    for i in range(len(test)):
        assert fs.logprob[fs.offsets[i]:fs.offsets[i + 1]].sum() == pytest.approx(s.logprob[i] * np.log(10),
                                                                                  abs=1e-9)
    assert ngram.count_ngrams(rng.integers(0, 3, ngram.MAX_ORDER + 2), ngram.MAX_ORDER)[1].sum() == 3
