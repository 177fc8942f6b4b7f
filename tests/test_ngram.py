"""N-gram models against the dict-based reference (and NLTK where installed)."""

import math
import os

import numpy as np
import pytest

import fastlm.ngram as ng
from fastlm import cli
from fastlm import reference as ref

OPTIONS = [{}, {"bos_id": 20, "eos_id": 21}, {"eos_id": 20}, {"bos_id": 20}, {"bos_id": 20, "eos_id": 21,
                                                                              "vocab_size": 40}]


def corpus(rng, n=40, V=20, max_len=15):
    return [rng.integers(0, V, rng.integers(0, max_len)) for _ in range(n)]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_count_ngrams(rng, order):
    t = np.minimum(rng.zipf(1.5, 3000), 300) - 1
    g, c = ng.count_ngrams(t, order)
    rg, rc = ref.count_ngrams(t, order)
    np.testing.assert_array_equal(g, rg)
    np.testing.assert_array_equal(c, rc)
    assert g.dtype == np.uint32 and c.dtype == np.int64
    assert c.sum() == max(t.size - order + 1, 0)
    g, c = ng.count_ngrams(t[: order - 1], order)
    assert g.shape == (0, order) and c.size == 0


def test_count_ngrams_bad_input():
    with pytest.raises(ValueError, match="order must be >= 1"):
        ng.count_ngrams([1, 2], 0)
    with pytest.raises(TypeError, match="integer"):
        ng.count_ngrams([1.5, 2.0], 2)
    with pytest.raises(ValueError, match=r"tokens\[1\] = -3"):
        ng.count_ngrams([1, -3], 1)
    with pytest.raises(ValueError, match=r"tokens\[1\] = 4294967296"):
        ng.count_ngrams([0, 2**32, 5], 3)
    with pytest.raises(ValueError, match="order = 65 does not fit"):
        ng.count_ngrams([1, 2], 65)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("opts", OPTIONS)
def test_model_matches_reference(rng, order, opts):
    seqs = corpus(rng)
    a = ng.NgramLM(order, alpha=0.3, **opts).fit(seqs)
    b = ref.NgramLM(order, alpha=0.3, **opts).fit(seqs)
    assert a.vocab_size == b.vocab_size
    for k in range(1, order + 1):
        g1, c1 = a.counts(k)
        g2, c2 = b.counts(k)
        np.testing.assert_array_equal(g1, g2)
        np.testing.assert_array_equal(c1, c2)
    V = a.vocab_size
    for width in range(0, order + 1):
        ctx = rng.integers(0, V, (60, width))
        w = rng.integers(0, V, 60)
        np.testing.assert_allclose(a.prob(w, ctx), b.prob(w, ctx), rtol=1e-12)
        np.testing.assert_allclose(a.logprob(w, ctx), b.logprob(w, ctx), rtol=1e-12)
    for s in seqs[:5]:
        assert a.score(s) == pytest.approx(b.score(s), rel=1e-12, abs=1e-12)
    assert a.perplexity(seqs) == pytest.approx(b.perplexity(seqs), rel=1e-12)
    h = seqs[0][: order - 1] if order > 1 else np.zeros(0, np.int64)
    np.testing.assert_allclose(a.next_token_distribution(h), b.next_token_distribution(h), rtol=1e-12)
    assert a.count(seqs[1][:order]) == b.count(seqs[1][:order])


def test_distributions_sum_to_one_and_totals(rng):
    seqs = corpus(rng, n=60)
    lm = ng.NgramLM(3, alpha=0.1, bos_id=20, eos_id=21).fit(seqs)
    for _ in range(20):
        ctx = rng.integers(0, 22, rng.integers(0, 4))
        assert lm.next_token_distribution(ctx).sum() == pytest.approx(1.0, abs=1e-12)
    predicted = sum(len(s) + 1 for s in seqs)  # tokens + EOS, BOS never predicted
    for k in (1, 2, 3):
        assert lm.counts(k)[1].sum() == predicted
    plain = ng.NgramLM(3).fit(seqs)
    for k in (1, 2, 3):
        assert plain.counts(k)[1].sum() == sum(max(len(s) - k + 1, 0) for s in seqs)


@pytest.mark.parametrize("wide", [False, True])
def test_counting_by_first_id_ranges(rng, wide):
    """Each first-id range counted on its own (one heavy id, empty ranges, cuts past every id; packed and
    rank keys), a range's tables of several parts merged, and the ranges narrowed and joined in order give
    the counts of all sequences (the reference's); narrowing keeps counts and ids past its small types."""
    from fastlm import _ngram_tables as tables

    parts = [corpus(rng, n=30, V=12) + [[0] * 9] for _ in range(4)]
    lm = ng.NgramLM(4, bos_id=12, eos_id=13)
    laid = [lm._lay_out(*lm._gather(p)) for p in parts]
    want = ref.NgramLM(4, bos_id=12, eos_id=13).fit([s for p in parts for s in p])
    for cuts in ([0, 2**32], [0, 1, 2**32], [0, 0, 5, 5, 11, 30, 2**32], [0, 3, 4, 13, 2**32]):
        ranges = []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            pieces = []
            for tokens, starts, _ in laid:
                keys, counts = tables.count(tokens, starts, 4, 4, wide=wide, first=(lo, hi))
                assert ((keys[0] >= lo) & (keys[0] < hi)).all()  # order 1's keys are the ids
                for k in range(4):
                    counts[k][tables.last(keys[k]) == 12] = 0
                pieces.append((keys, counts))
            ranges.append(tables.merge(*pieces))
        got = ng.NgramLM(4, bos_id=12, eos_id=13)
        got._keys, got._counts = tables.concat([tables.narrow(r) for r in ranges])
        for k in (1, 2, 3, 4):
            for x, y in zip(got.counts(k), want.counts(k)):
                np.testing.assert_array_equal(x, y)
    wide_table = ([np.array([5, 70_000], np.uint64), np.array([7, 1 << 32 | 2**32 - 1], np.uint64)],
                  [np.array([2**40, 3]), np.array([255, 256])])  # (counts and ids past the narrow types)
    for x, y in zip(tables.concat([tables.narrow(wide_table)]), wide_table):
        for a, b in zip(x, y):
            np.testing.assert_array_equal(a, b)
    keys, counts = tables.count(*laid[0][:2], 4, 4, wide=wide, first=(3, 7))
    keys[2][0] += np.uint64(keys[1].size) << np.uint64(32)  # a parent past the order below
    with pytest.raises(ValueError, match="inconsistent"):
        tables.merge((keys, counts))


def test_merge_update_and_vocabulary_growth(rng):
    a_seqs, b_seqs = corpus(rng), corpus(rng, V=25)
    for opts in ({"bos_id": 30, "eos_id": 31}, {}):
        a = ng.NgramLM(3, **opts).fit(a_seqs)
        b = ng.NgramLM(3, **opts).fit(b_seqs)
        both = ng.NgramLM(3, **opts).fit(a_seqs + b_seqs)
        r = ref.NgramLM(3, **opts).fit(a_seqs).merge(ref.NgramLM(3, **opts).fit(b_seqs))
        for k in (1, 2, 3):
            for x, y in zip(a.merge(b).counts(k), r.counts(k)):
                np.testing.assert_array_equal(x, y)
        for m in (a.merge(b), a + b, ng.NgramLM(3, **opts).fit(a_seqs).update(b_seqs)):
            assert m.vocab_size == both.vocab_size
            for k in (1, 2, 3):
                for x, y in zip(m.counts(k), both.counts(k)):
                    np.testing.assert_array_equal(x, y)
    small = ng.NgramLM(2).fit([[0, 1, 2, 1]])  # 2 bits per id
    small.update([[900, 1, 0]])  # needs 10: the counts are repacked
    r = ref.NgramLM(2).fit([[0, 1, 2, 1], [900, 1, 0]])
    for k in (1, 2):
        for x, y in zip(small.counts(k), r.counts(k)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="different order"):
        ng.NgramLM(2).fit([[1, 2]]).merge(ng.NgramLM(3).fit([[1, 2]]))


def test_empty_sequences_and_bad_input(rng):
    lm = ng.NgramLM(2, bos_id=5, eos_id=6).fit([[], [1, 2], []])
    assert lm.counts(1)[1].sum() == 5  # 1, 2 and three EOS
    assert lm.score([]) == pytest.approx(math.log(lm.prob([6], [[5]])[0]))
    with pytest.raises(ValueError, match=r"sequences\[1\]\[2\] = -1"):
        ng.NgramLM(2).fit([[1, 2], [3, 4, -1]])
    with pytest.raises(ValueError, match=r"sequences\[0\]\[1\] = 10 is not a token id in \[0, 10\)"):
        ng.NgramLM(2, vocab_size=10).fit([[1, 10]])
    with pytest.raises(TypeError, match="integer"):
        ng.NgramLM(2).fit([[1.5, 2.0]])
    with pytest.raises(ValueError, match="order"):
        ng.NgramLM(0)
    with pytest.raises(ValueError, match="alpha"):
        ng.NgramLM(2, alpha=0)
    with pytest.raises(ValueError, match="alpha"):
        ng.NgramLM(2, alpha=-1.0)
    with pytest.raises(ValueError, match=r"tokens\[0\] = 99"):
        lm.prob([99], [[1]])
    with pytest.raises(TypeError, match="iterable of sequences"):
        ng.NgramLM(2).fit(np.array([1, 2, 3]))


def test_save_load_round_trip_and_damage(tmp_path, rng):
    lm = ng.NgramLM(3, alpha=0.25, bos_id=20, eos_id=21).fit(corpus(rng))
    lm.metadata = {"unit": "words", "words": ["a", "b"]}
    path = tmp_path / "m.bin"
    lm.save(path)
    back = ng.NgramLM.load(path)
    assert (back.order, back.alpha, back.bos_id, back.eos_id, back.vocab_size) == (3, 0.25, 20, 21, lm.vocab_size)
    assert back.metadata == lm.metadata
    for k in (1, 2, 3):
        for x, y in zip(back.counts(k), lm.counts(k)):
            np.testing.assert_array_equal(x, y)
    data = path.read_bytes()
    bad = tmp_path / "bad.bin"
    for cut in (0, 5, 16, 40, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            ng.NgramLM.load(bad)
    for pos in (20, len(data) // 2, len(data) - 8):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="corrupted|malformed"):
            ng.NgramLM.load(bad)
    bad.write_bytes(b"PK\x03\x04" + os.urandom(100))
    with pytest.raises(ValueError, match="not a fastlm n-gram model"):
        ng.NgramLM.load(bad)
    wrong = bytearray(data)
    wrong[15] = 9
    bad.write_bytes(bytes(wrong))
    with pytest.raises(ValueError, match="version 9"):
        ng.NgramLM.load(bad)


def test_generate(rng):
    lm = ng.NgramLM(3, alpha=0.01, bos_id=20, eos_id=21).fit(corpus(rng, n=200))
    a = lm.generate([1, 2], 30, seed=5)
    assert np.array_equal(a, lm.generate([1, 2], 30, seed=5))
    assert a.size <= 30 and 20 not in a.tolist()
    if a.size < 30:
        assert a[-1] == 21
    assert lm.generate([1], 10, seed=1, top_k=1).tolist() == lm.generate([1], 10, seed=2, top_k=1).tolist()


def test_text_helpers():
    assert ng.byte_tokens("aé").tolist() == [97, 195, 169]
    v = ng.WordVocab.build(["a b a c", "b a"], min_count=2)
    assert v.words[:3] == ["<unk>", "<s>", "</s>"] and v.words[3:] == ["a", "b"]
    assert v.encode("a c b").tolist() == [3, 0, 4]
    assert v.decode([3, 4]) == "a b"


def test_cli_round_trip(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    model = tmp_path / "m.bin"
    assert cli.main(["ngram", "fit", str(text), "--order", "3", "--smoothing", "add-alpha", "--alpha", "0.1",
                     "--unit", "bytes", "-o", str(model)]) == 0
    assert cli.main(["ngram", "eval", str(model), str(text)]) == 0
    out = capsys.readouterr().out
    lm = ng.NgramLM.load(model)
    lines = [ng.byte_tokens(s) for s in text.read_text().splitlines()]
    ppl = lm.perplexity(lines)
    assert f"perplexity      {ppl:.6f}" in out
    bpb = -lm.score_batch(lines).logprob.sum() / (text.stat().st_size * math.log(2))
    assert f"bits per byte   {bpb:.6f}" in out
    assert cli.main(["ngram", "generate", str(model), "--prompt", "the ", "-n", "20", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    words = tmp_path / "w.bin"
    assert cli.main(["ngram", "fit", str(text), "--order", "2", "--smoothing", "add-alpha", "--unit", "words",
                     "-o", str(words)]) == 0
    assert cli.main(["ngram", "generate", str(words), "--prompt", "the", "-n", "5", "--seed", "3"]) == 0
    assert capsys.readouterr().out.split("\n")[-2].startswith("the")


def test_against_nltk_lidstone(rng):
    lm_mod = pytest.importorskip("nltk.lm")
    from nltk.lm.preprocessing import padded_everygram_pipeline

    sents = [[f"w{t}" for t in s] for s in corpus(rng, n=50, V=12, max_len=10) if len(s)]
    order, gamma = 3, 0.2
    train, vocab = padded_everygram_pipeline(order, sents)
    nl = lm_mod.Lidstone(gamma, order)
    nl.fit(train, vocab)
    words = sorted(nl.vocab)  # includes <s>, </s> and <UNK>
    ids = {w: i for i, w in enumerate(words)}
    ours = ng.NgramLM(order, alpha=gamma, vocab_size=len(words), bos_id=ids["<s>"], eos_id=ids["</s>"])
    ours.fit([[ids[w] for w in s] for s in sents])
    plain = [w for w in words if w not in ("<s>", "</s>", "<UNK>")]
    for _ in range(200):  # contexts free of end padding
        h = [str(rng.choice(plain + ["<s>"])) for _ in range(2)]
        if h[1] == "<s>" and h[0] != "<s>":
            continue
        w = str(rng.choice(plain + ["</s>"]))
        want = nl.score(w, h)
        got = ours.prob([ids[w]], [[ids[t] for t in h]])[0]
        assert got == pytest.approx(want, rel=1e-12)


def test_model_query_bad_input(rng):
    lm = ng.NgramLM(3, bos_id=20, eos_id=21).fit(corpus(rng))
    with pytest.raises(ValueError, match="k must be in"):
        lm.counts(4)
    with pytest.raises(ValueError, match=r"contexts\[1\] = 99"):
        lm.next_token_distribution([1, 99])
    with pytest.raises(TypeError, match="integer"):
        lm.next_token_distribution([1.5])
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate([1], -1)
    with pytest.raises(ValueError, match=r"context\[0\] = 50"):
        lm.generate([50], 3)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate([1], 3, temperature=-1.0)
    with pytest.raises(ValueError, match="ngram must have 1 to 3 ids"):
        lm.count([1, 2, 3, 4])
    with pytest.raises(ValueError, match="min_count"):
        ng.WordVocab.build(["a b"], min_count=0)
