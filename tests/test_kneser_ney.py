"""Modified Kneser-Ney, ARPA files, wide keys and batch scoring: against the dict-based reference, and
against KenLM's lmplz and kenlm module on the King James Bible (anchors.py)."""

from __future__ import annotations

import math
import re
import subprocess
import warnings

import numpy as np
import pytest

import fastlm
import fastlm.ngram as ng
from fastlm import _ngram_tables as tables
from fastlm import reference as ref

import anchors

pytestmark = pytest.mark.filterwarnings("ignore:.*fallback discounts:UserWarning")


def corpus(rng, n=60, V=10, max_len=12, a=1.3):
    """Zipf-ish sentences over ids 3..V+2 (0 <unk>, 1 <s>, 2 </s> as WordVocab; vocab_size 15)."""
    return [list(np.minimum(rng.zipf(a, rng.integers(0, max_len)), V) + 2) for _ in range(n)]


def kn_model(seqs, order, **kw):
    opts = dict(vocab_size=15, bos_id=1, eos_id=2, unk_id=0)
    opts.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ng.NgramLM(order, smoothing="kneser-ney", discount_fallback=True, **opts).fit(seqs)


def as_dict(bm):
    """{n-gram: (log10 p, log10 backoff)} of an ArpaLM (context-only entries left out)."""
    out = {}
    for k in range(1, bm.order + 1):
        ids = bm.ngrams(k)
        b = bm.backoff[k - 1] if k < bm.order else np.zeros(ids.shape[0])
        for row, p, bo in zip(ids.tolist(), bm.prob[k - 1].tolist(), b.tolist()):
            if p == p:
                out[tuple(row)] = (p, bo)
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("special", ["all", "no-unk", "no-bos", "none", "pruned"])
def test_estimate_matches_reference(order, special):
    rng = np.random.default_rng(order * 10 + len(special))
    seqs = corpus(rng, n=80)
    kw = {"all": {}, "no-unk": {"unk_id": None}, "no-bos": {"bos_id": None},
          "none": {"bos_id": None, "eos_id": None, "unk_id": None},
          "pruned": {"prune": [0, 1, 1, 2, 2][:order]}}[special]
    lm = kn_model(seqs, order, **kw)
    opts = dict(vocab_size=15, bos_id=1, eos_id=2, unk_id=0)
    opts.update(kw)
    if "prune" in opts:
        opts["prune"] = lm.prune
    want, disc, unseen = ref.kneser_ney(seqs, order, discount_fallback=True, **opts)
    got = as_dict(lm.backoff_model())
    assert got.keys() == want.keys()
    for g in want:
        np.testing.assert_allclose(got[g], want[g], rtol=0, atol=1e-12, err_msg=str(g))
    np.testing.assert_allclose(lm.discounts, disc, rtol=1e-15)
    # scores: every prefix of every sentence against the reference's backoff rule
    bm = lm.backoff_model()
    assert bm._unseen == pytest.approx(unseen, abs=1e-12)
    test = corpus(np.random.default_rng(99), n=20, V=12)  # ids 13 and 14 never seen
    ts = lm.full_scores(test, log10=True)
    opts.pop("prune", None)
    pad = [opts["bos_id"]] if opts["bos_id"] is not None else []
    eos = [opts["eos_id"]] if opts["eos_id"] is not None else []
    j = 0
    for s in test:
        full = pad + s + eos
        for i in range(len(pad), len(full)):
            ctx = full[max(0, i - order + 1):i]
            w = ref.backoff_logprob10(want, ctx, full[i], unk_id=opts["unk_id"], unseen=unseen)
            assert ts.logprob[j] == pytest.approx(w, abs=1e-12), (s, i)
            j += 1
    assert j == ts.logprob.size


def test_distributions_sum_to_one():
    rng = np.random.default_rng(3)
    lm = kn_model(corpus(rng, n=200), 4)
    for ctx in ([], [5], [3, 4], [1, 3, 4], [14, 14, 14], [1]):
        p = lm.next_token_distribution(ctx)
        assert p[1] == 0.0  # BOS is never predicted
        assert p.sum() == pytest.approx(1.0, abs=1e-12), ctx


def test_discounts_degenerate_data_errors_or_falls_back():
    seqs = [[3, 4, 5], [3, 4]]
    with pytest.raises(ValueError, match="adjusted count 3.*discount_fallback=True"):
        ng.NgramLM(2, smoothing="kneser-ney", vocab_size=6, bos_id=1, eos_id=2, unk_id=0).fit(seqs).backoff_model()
    with pytest.warns(UserWarning, match="fallback discounts"):
        lm = ng.NgramLM(2, smoothing="kneser-ney", vocab_size=6, bos_id=1, eos_id=2, unk_id=0,
                        discount_fallback=True).fit(seqs)
        assert lm.discounts == [(0.5, 1.0, 1.5)] * 2
    with pytest.raises(ValueError, match="add-alpha is not a backoff model"):
        ng.NgramLM(2).fit(seqs).to_arpa("x.arpa")
    with pytest.raises(ValueError, match="smoothing must be one of"):
        ng.NgramLM(2, smoothing="kn")
    with pytest.raises(ValueError, match="non-decreasing"):
        ng.NgramLM(3, smoothing="kneser-ney", prune=[1, 0])
    with pytest.raises(ValueError, match="1 to 2 thresholds"):
        ng.NgramLM(2, smoothing="kneser-ney", prune=[0, 0, 1])
    with pytest.raises(ValueError, match=r"prune\[0\] must be >= 0"):
        ng.NgramLM(2, smoothing="kneser-ney", prune=[-1])
    assert ng.NgramLM(4, prune=[0, 1]).prune == [0, 1, 1, 1] and ng.NgramLM(2, prune=0).prune is None


@pytest.mark.parametrize("order", [2, 5, 10])
def test_wide_keys_match_packed_and_reference(order):
    """Counting by ranks (any width) gives the tables the packed path gives, and the reference's counts,
    for ids up to 2^32 - 1 and orders whose packed keys would need up to 320 bits."""
    rng = np.random.default_rng(order)
    t = (np.minimum(rng.zipf(1.4, 3000), 50) - 1).astype(np.int64)
    starts = np.array([0, 1000, 1000, 2999, 3000], np.int64)
    u32 = t.astype(np.uint32)
    packed = tables.count(u32, starts, order, 6, wide=False)
    wide = tables.count(u32, starts, order, 6, wide=True)
    for k in range(order):
        np.testing.assert_array_equal(packed[0][k], wide[0][k])
        np.testing.assert_array_equal(packed[1][k], wide[1][k])
    big = np.where(t % 3 == 0, 2**32 - 1 - t, t)  # ids spread over the whole uint32 range
    g, c = ng.count_ngrams(big, order)
    rg, rc = ref.count_ngrams(big, order)
    np.testing.assert_array_equal(g.astype(np.int64), rg)
    np.testing.assert_array_equal(c, rc)
    lm = ng.NgramLM(order, alpha=0.5, bos_id=2**32 - 2, eos_id=2**32 - 3).fit([big[:500], big[500:520], []])
    want = ref.NgramLM(order, alpha=0.5, bos_id=2**32 - 2, eos_id=2**32 - 3).fit([big[:500], big[500:520], []])
    for k in range(1, order + 1):
        for x, y in zip(lm.counts(k), want.counts(k)):
            np.testing.assert_array_equal(np.asarray(x, np.int64), y)
    assert lm.score(big[100:140]) == pytest.approx(want.score(big[100:140]), rel=1e-12)


def test_batch_scoring_forms_agree():
    rng = np.random.default_rng(5)
    seqs = corpus(rng, n=100)
    for lm in (kn_model(seqs, 3), ng.NgramLM(3, alpha=0.2, vocab_size=15, bos_id=1, eos_id=2).fit(seqs)):
        test = corpus(np.random.default_rng(6), n=30, V=12)
        a = lm.score_batch(test)
        flat = np.concatenate([np.asarray(s, np.int64) for s in test])
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in test])])
        b = lm.score_batch(flat, offsets)
        np.testing.assert_array_equal(a.logprob, b.logprob)
        np.testing.assert_array_equal(a.oov, b.oov)
        np.testing.assert_array_equal(a.tokens, [len(s) + 1 for s in test])
        for i, s in enumerate(test[:5]):
            assert lm.score(s) == pytest.approx(a.logprob[i], abs=1e-12)
        fs = lm.full_scores(test)
        assert fs.logprob.size == fs.offsets[-1] == a.tokens.sum()
        np.testing.assert_allclose(np.add.reduceat(fs.logprob, fs.offsets[:-1]), a.logprob, atol=1e-12)
        np.testing.assert_array_equal(np.add.reduceat(fs.oov.astype(int), fs.offsets[:-1]), a.oov)
        assert lm.perplexity(test) == pytest.approx(math.exp(-a.logprob.sum() / a.tokens.sum()))
        assert lm.score(test[0], log10=True) == pytest.approx(a.logprob[0] / math.log(10))
    with pytest.raises(ValueError, match="offsets must run from 0"):
        lm.score_batch(flat, [0, 3])
    with pytest.raises(ValueError, match=r"sequences\[1\]\[0\] = 15"):
        lm.score_batch([[3], [15]])
    with pytest.raises(TypeError, match="has no vocab"):
        lm.score("a b")


def test_arpa_round_trip_and_strings(tmp_path):
    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log"] * 5
    texts += ["the cat ate the fish", "a dog ate a bone", "a bird sat"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = ng.NgramLM.for_words(texts, 3, smoothing="kneser-ney", discount_fallback=True)
    path = tmp_path / "m.arpa"
    lm.to_arpa(path)
    back = ng.NgramLM.from_arpa(path)
    assert isinstance(back, ng.ArpaLM) and back.counts() == lm.backoff_model().counts()
    held = ["the cat sat on the log", "a zebra sat on the mat", "the the the"]
    a = lm.full_scores(held, log10=True)
    b = back.full_scores(held, log10=True)
    np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-7)  # 8 significant digits in the file
    np.testing.assert_array_equal(a.ngram_length, b.ngram_length)
    np.testing.assert_array_equal(a.oov, b.oov)
    assert a.oov.sum() == 1  # zebra
    assert lm.score("the cat sat") == pytest.approx(lm.score(lm.vocab.encode("the cat sat")))
    out = lm.generate("the cat", 20, seed=4)
    assert isinstance(out, str) and out.startswith("the cat")
    assert lm.generate("the cat", 20, seed=4) == out
    # save / load keeps smoothing and vocabulary
    lm.save(tmp_path / "m.bin")
    again = ng.NgramLM.load(tmp_path / "m.bin")
    assert again.smoothing == "kneser-ney" and again.vocab.words == lm.vocab.words
    np.testing.assert_array_equal(again.score_batch(held).logprob, lm.score_batch(held).logprob)


MALFORMED = [
    ("", "no \\\\data\\\\ line"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\n\n\\end\\\n", None),  # valid
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n\n\\end\\\n", ":6: .*has 1 entries; the header declares 2"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nx\ta\n\n\\end\\\n", ":5: not a number"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\tb\tc\n\n\\end\\\n", ":5: expected log10p"),
    ("\\data\\\nngram 2=1\n", ":2: expected the count of order 1"),
    ("\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1\ta\n\n\\2-grams:\n-1\ta b\n\n\\end\\\n",
     ":9: word 'b' has no unigram"),
    ("\\data\\\nngram 1=1\n\n\\2-grams:\n-1\ta\n\n\\end\\\n", ":4: expected the \\\\1-grams: section"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\n", "expected \\\\end\\\\"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n0.5\ta\n\n\\end\\\n", ":5: log10 probability must be <= 0"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n-1\ta\n\n\\end\\\n", "repeats an n-gram"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nnan\ta\n\n\\end\\\n", ":5: log10 probability must be <= 0"),
    ("\\data\\\nngram x\n", ":2: expected 'ngram N=count'"),
]


@pytest.mark.parametrize("text,error", MALFORMED)
def test_malformed_arpa_names_the_line(tmp_path, text, error):
    path = tmp_path / "x.arpa"
    path.write_text(text)
    if error is None:
        assert ng.ArpaLM.from_arpa(path).counts() == [1]
    else:
        with pytest.raises(ValueError, match=error):
            ng.ArpaLM.from_arpa(path)
    path.write_bytes(b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1\t\xff\n\n\\end\\\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        ng.ArpaLM.from_arpa(path)


def test_arpa_missing_contexts_pass_through(tmp_path):
    """An ARPA whose trigram's context bigram is absent (pruned files): the context becomes an entry
    with no probability and no backoff, so that the trigram is still found (KenLM does the same); a
    suffix missing stops the search (KenLM's rule)."""
    path = tmp_path / "p.arpa"
    path.write_text("\\data\\\nngram 1=4\nngram 2=2\nngram 3=1\n\n\\1-grams:\n-1\t<unk>\n-0.5\t<s>\t-0.2\n"
                    "-0.4\ta\t-0.1\n-0.6\tb\t-0.3\n\n\\2-grams:\n-0.3\t<s> a\t-0.05\n-0.25\tb a\t-0.02\n\n"
                    "\\3-grams:\n-0.01\ta b a\n\n\\end\\\n")
    m = ng.ArpaLM.from_arpa(path)
    assert m.counts() == [4, 2, 1]
    model = {("<unk>",): (-1, 0), ("<s>",): (-0.5, -0.2), ("a",): (-0.4, -0.1), ("b",): (-0.6, -0.3),
             ("<s>", "a"): (-0.3, -0.05), ("b", "a"): (-0.25, -0.02), ("a", "b", "a"): (-0.01, 0)}
    ids = {w: i for i, w in enumerate(m.words)}
    model = {tuple(ids[w] for w in g): v for g, v in model.items()}
    full = [ids[w] for w in ("a", "b", "a", "b", "b", "a")]
    fs = m.full_scores([full], log10=True)
    want = [ref.backoff_logprob10(model, ([ids["<s>"]] + full)[max(0, i - 2):i], w, unk_id=ids["<unk>"])
            for i, w in enumerate(full, 1)]
    np.testing.assert_allclose(fs.logprob, want, atol=1e-12)  # (no </s> in the file: nothing appended)
    assert fs.ngram_length.tolist() == [2, 1, 3, 1, 1, 2]
    assert want[2] == pytest.approx(-0.01) and want[4] == pytest.approx(-0.6 - 0.3) and want[5] == -0.25


# ------------------------------------------------------------------------------------- KenLM's anchors

@pytest.fixture(scope="module")
def kjv_models(tmp_path_factory):
    verses = anchors.kjv_verses()
    exe = anchors.lmplz()
    d = tmp_path_factory.mktemp("kjv")
    text = d / "kjv.txt"
    text.write_text("\n".join(verses) + "\n", encoding="utf-8")
    out = {}
    for order in (3, 5):
        arpa = d / f"lmplz{order}.arpa"
        with open(text, "rb") as src, open(arpa, "wb") as dst:
            subprocess.run([exe, "-o", str(order), "-S", "1G", "-T", str(d)], stdin=src, stdout=dst,
                           stderr=subprocess.DEVNULL, check=True)
        out[order] = arpa
    return verses, out, d


def _read_arpa(path):
    d = {}
    for line in open(path, encoding="utf-8"):
        p = line.rstrip("\n").split("\t")
        if len(p) >= 2 and not line.startswith("ngram "):
            d[p[1]] = (float(p[0]), float(p[2]) if len(p) > 2 else 0.0)
    return d


@pytest.mark.parametrize("order,prune", [(3, None), (5, None), (3, [0, 0, 1]), (5, [0, 1, 1, 2])])
def test_kneser_ney_matches_lmplz_on_kjv(kjv_models, order, prune):
    verses, arpas, d = kjv_models
    lm = ng.NgramLM.for_words(verses, order, smoothing="kneser-ney", prune=prune)
    ours = d / f"fastlm{order}.arpa"
    lm.to_arpa(ours)
    theirs = arpas[order]
    if prune is not None:
        theirs = d / f"lmplz{order}-prune.arpa"
        with open(d / "kjv.txt", "rb") as src, open(theirs, "wb") as dst:
            subprocess.run([anchors.lmplz(), "-o", str(order), "-S", "1G", "-T", str(d), "--prune",
                            *map(str, prune)], stdin=src, stdout=dst, stderr=subprocess.DEVNULL, check=True)
    a, b = _read_arpa(ours), _read_arpa(theirs)
    assert a.keys() == b.keys()  # the same n-gram set, <s>, </s> and <unk> included
    dp = max(abs(a[g][0] - b[g][0]) for g in a)
    db = max(abs(a[g][1] - b[g][1]) for g in a)
    assert dp <= 1e-6 and db <= 1e-6, (dp, db)


def test_full_scores_match_kenlm(kjv_models):
    kenlm = anchors.kenlm()
    verses, arpas, d = kjv_models
    lm = ng.NgramLM.for_words(verses[:25000], 5, smoothing="kneser-ney")
    ours = d / "fastlm5-train.arpa"
    lm.to_arpa(ours)
    model = kenlm.Model(str(ours))
    held = verses[25000:26000] + ["And the zebra said unto Moses , Behold the quasar", "Xyzzy plugh"]
    fs = lm.full_scores(held, log10=True)
    for i, s in enumerate(held):
        want = list(model.full_scores(s))
        lo, hi = fs.offsets[i], fs.offsets[i + 1]
        assert hi - lo == len(want)
        np.testing.assert_allclose(fs.logprob[lo:hi], [w[0] for w in want], atol=1e-6, err_msg=s)
        assert fs.ngram_length[lo:hi].tolist() == [w[1] for w in want], s
        assert fs.oov[lo:hi].tolist() == [w[2] for w in want], s
    assert fs.oov.sum() >= 4
    # the ARPA read back scores the same as the model that wrote it
    back = ng.ArpaLM.from_arpa(ours)
    np.testing.assert_allclose(back.score_batch(held, log10=True).logprob, lm.score_batch(held, log10=True).logprob,
                               atol=1e-5)
    assert back.score(held[0], log10=True) == pytest.approx(model.score(held[0]), abs=1e-5)


def test_word_vocab_rules():
    """Words are runs of non-space bytes (ASCII spaces only, as KenLM); <s> </s> <unk> in text are
    separators; ids by descending count, ties in code point order; unknown words are UNK; building and
    encoding in one pass gives the ids encode_many gives."""
    texts = ["b a\tb a", "c\xa0d <s> a\r\n", "", "é b </s>", "<unk>"]
    v, ids, lengths = ng.WordVocab.build_and_encode(texts)
    assert v.words == ["<unk>", "<s>", "</s>", "a", "b", "c\xa0d", "é"]
    assert lengths.tolist() == [4, 2, 0, 2, 0]
    flat, lens = v.encode_many(texts)
    np.testing.assert_array_equal(flat, ids)
    np.testing.assert_array_equal(lens, lengths)
    assert v.encode("zebra a").tolist() == [0, 3] and v.encode(b"a b").tolist() == [3, 4]
    # pre / post frame each text (a model's padding), from one thread or several (a text long enough to split)
    many = texts * 20000
    default = fastlm.get_num_threads()
    for threads in (1, 2):
        fastlm.set_num_threads(threads)
        try:
            framed, flen = v.encode_many(many, pre=[1, 1], post=2)
        finally:
            fastlm.set_num_threads(default)
        want = []
        for t in many:
            words = [w for w in re.split("[ \t\n\r\v\f]+", t) if w and w not in ("<s>", "</s>", "<unk>")]
            want.append([1, 1] + [v.ids.get(w, 0) for w in words] + [2])
        assert flen.tolist() == [len(w) for w in want]
        assert framed.tolist() == [i for w in want for i in w]
    b_ids, b_len = ng.ByteVocab().encode_many(["ab", "", "é"], pre=[256], post=257)
    assert b_ids.tolist() == [256, 97, 98, 257, 256, 257, 256, 0xC3, 0xA9, 257] and b_len.tolist() == [4, 2, 4]
    assert ng.WordVocab.build(texts, min_count=2).words == ["<unk>", "<s>", "</s>", "a", "b"]
    with pytest.raises(ValueError, match="repeats a word"):
        ng.WordVocab(["<unk>", "<s>", "</s>", "x", "x"]).encode("x")


def test_arpa_numbers_are_printf_g8():
    """The ARPA writer's numbers are printf's %.8g byte for byte (lmplz's precision), rounding halves and
    the exponent form included."""
    from fastlm import _kernels

    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.exponential(2, 50000), -10 ** rng.uniform(-6, 9, 50000), rng.uniform(-1, 1, 1000),
                        [0.0, -0.0, -np.inf, np.nan, 1e-4, -1e-4, 99999999.5, -9.99999995, 0.30103, 1e8, -1e-5,
                         9.99999999e-5, -12.345678949999999, 0.5, -100.0]])
    out = _kernels.arpa_lines(np.zeros((x.size, 1), np.uint32), x, x[::-1].copy(), None, b"w",
                              np.array([0, 1], np.int64)).tobytes().decode().splitlines()
    assert out == ["%.8g\tw\t%.8g" % (a, b) for a, b in zip(x, x[::-1])]


def _fastlm(*args, stdin=None):
    """The installed `fastlm` command: (exit status, stdout, stderr)."""
    import sys

    p = subprocess.run([sys.executable, "-m", "fastlm.cli", *args], input=stdin, capture_output=True)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_cli_kenlm_workflow(tmp_path):
    """fit --smoothing kn writes a model and an ARPA file; eval reads either (stdin with -, CRLF lines)
    with OOV counts and per-sentence output; generate continues a prompt; --version; defaults in --help."""
    text = tmp_path / "t.txt"
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log",
             "the cat ate the fish", "a dog ate a bone", "a bird sat", "the bird ate"] * 3
    text.write_text("\n".join(lines) + "\n")
    rc, out, err = _fastlm("ngram", "fit", str(text), "--order", "3", "--discount-fallback", "--arpa",
                           str(tmp_path / "m.arpa"), "-o", str(tmp_path / "m.bin"))
    assert rc == 0, err
    assert "kneser-ney" in out and (tmp_path / "m.arpa").read_text().startswith("\\data\\")
    held = "the cat sat on the zebra\r\nthe dog ate\r\n"
    rc1, out1, _ = _fastlm("ngram", "eval", str(tmp_path / "m.bin"), "-", "--per-sentence", stdin=held.encode())
    rc2, out2, _ = _fastlm("ngram", "eval", str(tmp_path / "m.arpa"), "-", "--per-sentence", stdin=held.encode())
    assert rc1 == rc2 == 0
    assert "oov             1" in out1 and "sentences       2" in out1
    lm = ng.NgramLM.load(tmp_path / "m.bin")
    s = lm.score_batch(["the cat sat on the zebra", "the dog ate"], log10=True)
    rows = [line.split("\t") for line in out1.splitlines()[:2]]
    np.testing.assert_allclose([float(r[0]) for r in rows], s.logprob, atol=1e-6)
    assert [r[3] for r in rows] == ["the cat sat on the zebra", "the dog ate"]  # the \r is gone
    ppl = [line for line in out1.splitlines() if line.startswith("perplexity")]
    assert ppl == [line for line in out2.splitlines() if line.startswith("perplexity")]
    rc, out, _ = _fastlm("ngram", "generate", str(tmp_path / "m.bin"), "--prompt", "the cat", "-n", "8", "--seed", "1")
    assert rc == 0 and out.startswith("the cat")
    rc, out, _ = _fastlm("--version")
    assert rc == 0 and out.startswith("fastlm ")
    rc, out, _ = _fastlm("ngram", "fit", "--help")
    assert rc == 0 and "(default: 3)" in out and "(default: kn)" in out


@pytest.mark.parametrize("args,needle", [
    (["ngram", "eval", "missing.bin", "x.txt"], "missing.bin: No such file"),
    (["ngram", "eval", "BAD", "x.txt"], "not an ARPA file"),
    (["ngram", "fit", "x.txt", "--order", "99", "-o", "m.bin"], "order = 99"),
    (["ngram", "fit", "x.txt"], "give -o/--output"),
    (["ngram", "fit", "x.txt", "--order", "2", "--smoothing", "add-alpha", "--arpa", "m.arpa"], "not a backoff model"),
    (["ngram", "fit", "x.txt", "--order", "2", "-o", "m.bin"], "discount_fallback"),
])
def test_cli_user_errors_are_one_line(tmp_path, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("a b c\na b\n")
    (tmp_path / "BAD").write_text("hello\n")
    rc, out, err = _fastlm(*args)
    assert rc == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("fastlm: error:") and needle in err, err
    rc, _, err = _fastlm("ngram", "fit", "--no-such-flag")
    assert rc == 2 and "Traceback" not in err


def test_scoring_threads_give_identical_results():
    """Threads take contiguous shares of the sequences: every output is bitwise the same for 1 and 2."""
    import fastlm

    rng = np.random.default_rng(11)
    seqs = corpus(rng, n=400)
    test = corpus(np.random.default_rng(12), n=6000, V=12)  # > 2^15 tokens: the parallel path
    for lm in (kn_model(seqs, 4), ng.NgramLM(3, alpha=0.5, vocab_size=15, bos_id=1, eos_id=2).fit(seqs)):
        out = []
        for nt in (1, 2):
            previous = fastlm.get_num_threads()
            fastlm.set_num_threads(nt)
            try:
                out.append((lm.score_batch(test), lm.full_scores(test)))
            finally:
                fastlm.set_num_threads(previous)
        for a, b in zip(out[0][0] + out[0][1], out[1][0] + out[1][1]):
            np.testing.assert_array_equal(a, b)


def unpickle_misaligned(obj):
    """obj through pickle protocol 5 with its buffers out of band, each received at an odd offset of one
    byte stream (as a transport that packs frames together can deliver them)."""
    import pickle

    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raw = [bytes(b.raw()) for b in buffers]
    stream = memoryview(b"x" + b"".join(raw))
    at = np.cumsum([1] + [len(r) for r in raw])
    return pickle.loads(data, buffers=[stream[a:a + len(r)] for a, r in zip(at, raw)])


def test_models_pickle_as_arrays():
    """Count models, Kneser-Ney models, ARPA models and vocabularies pickle (for process pools and Dask)
    as their arrays: the payload is about the arrays' size, and the copy scores as the original (also
    from buffers at odd offsets: the arrays are aligned again before the kernels read them)."""
    import pickle

    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20 + ["a bird"]
    for lm in (ng.NgramLM.for_words(texts, 3, smoothing="kneser-ney", discount_fallback=True),
               ng.NgramLM.for_words(texts, 3, alpha=0.5)):
        before = lm.score_batch(texts[:5])  # the hash indexes, the estimate and the C word table exist
        data = pickle.dumps(lm, protocol=5)
        assert len(data) < 4 * lm.nbytes() + 4096
        for back in (pickle.loads(data), unpickle_misaligned(lm)):
            np.testing.assert_array_equal(back.score_batch(texts[:5]).logprob, before.logprob)
            twice = back + unpickle_misaligned(lm)
            for k in (1, 2, 3):
                for x, y, z in zip(back.counts(k), lm.counts(k), twice.counts(k)):
                    np.testing.assert_array_equal(x, y)
                    np.testing.assert_array_equal(z, y * (1 if z.dtype.kind == "u" else 2))
    original = ng.NgramLM.for_words(texts, 3, smoothing="kneser-ney", discount_fallback=True).backoff_model()
    held = ["the cat sat", "a zebra and a dog"]
    want = original.full_scores(held)
    for back in (pickle.loads(pickle.dumps(original, protocol=5)), unpickle_misaligned(original)):
        for x, y in zip(back.full_scores(held), want):
            np.testing.assert_array_equal(x, y)
    v = pickle.loads(pickle.dumps(lm.vocab))
    np.testing.assert_array_equal(v.encode("the zebra sat"), lm.vocab.encode("the zebra sat"))
