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


FILL = 12345.0  # a filter value no test row holds


def _kept(filtered):
    return np.asarray(filtered) != FILL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_ties_ranked_by_logit(simd, dtype):
    """Top-p (and min_tokens_to_keep) rank by logit: the C kernels did, the reference ranked by float64
    probability, where exp(-1e-17) == exp(0) tie and went to the lower index. Tokens of probability 0
    (more than 745 below the max, or finite in a row holding +inf) still tie with one another."""
    row = np.array([-1e-17, 0.0], dtype)
    np.testing.assert_array_equal(_kept(ref.top_p_filter(row.astype(np.float64), 0.3, filter_value=FILL)),
                                  [False, True])  # the documented rule: the larger logit first
    rows = [[-1e-17, 0.0], [-1e-17, 0.0, -2e-17, 0.0, -1e-17], [0.0, -800.0, -900.0, -760.0],
            [0.0, -745.0, -746.0, -745.5], [np.inf, 1.0, 3.0, np.inf, -np.inf], [2.0, -np.inf, 2.0 - 1e-15, 1.0]]
    for r in rows:
        r = np.array(r, dtype)
        r64 = r.astype(np.float64)
        for keep in range(1, r.size + 1):
            for p in (0.0, 0.2, 0.3, 0.45, 0.6, 0.9):
                np.testing.assert_array_equal(
                    _kept(fastlm.top_p_filter(r, p, min_tokens_to_keep=keep, filter_value=FILL)),
                    _kept(ref.top_p_filter(r64, p, min_tokens_to_keep=keep, filter_value=FILL)), (r, keep, p))
            for mp in (0.5, 1.0):
                np.testing.assert_array_equal(
                    _kept(fastlm.min_p_filter(r, mp, min_tokens_to_keep=keep, filter_value=FILL)),
                    _kept(ref.min_p_filter(r64, mp, min_tokens_to_keep=keep, filter_value=FILL)), (r, keep, mp))


@pytest.mark.parametrize("temperature", [1e30, 1e10, 1e4])
def test_sample_huge_temperature_ranks_by_logit(simd, temperature):
    """At a huge temperature every weight exp((x - max) / T) rounds to 1, yet the sampler's top-p ranks
    by logit: the tokens drawn are exactly those the reference's distribution gives probability > 0."""
    row = np.array([1.0, 2.0, 3.0, 2.5, -800.0, 0.5, 3.0])
    N = 600
    for kw in ({"top_p": 0.0}, {"top_p": 0.2}, {"top_p": 0.3}, {"top_p": 0.5}, {"top_p": 0.75},
               {"top_k": 5, "top_p": 0.5}, {"top_p": 0.5, "min_p": 0.5}):
        want = ref.sample_distribution(row[None], temperature=temperature, **kw)[0]
        for dtype in (np.float32, np.float64):
            ids = fastlm.sample(np.tile(row.astype(dtype), (N, 1)), temperature=temperature, seed=np.arange(N),
                                **kw)
            assert want[ids].min() > 0, (kw, dtype)  # never a token the reference drops
            # every token the reference keeps (each with probability >= 1/7 here) is drawn
            assert set(ids.tolist()) == set(np.flatnonzero(want).tolist()), (kw, dtype, want)
    # the weights are all 1: the reference keeps the top-ranked logits in equal shares
    want = ref.sample_distribution(row[None], temperature=1e30, top_p=0.25)[0]
    np.testing.assert_array_equal(want, [0, 0, 0.5, 0, 0, 0, 0.5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_gradient_over_zero_weight_sum_is_nan(simd, rng, dtype):
    """reduction="mean" whose target weights add up to 0 over the positions not ignored: the loss is
    0 / 0 = NaN and so is the gradient of every position not ignored (torch's autograd, the documented
    formula's 1 / sum w[y_i]); ignored positions keep a 0 gradient. The kernel wrote 0 everywhere."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    V = 6
    x = logits_like(rng, (2, 4, V), dtype)
    t = np.array([[1, 2, -100, 1], [2, -100, 1, 1]])
    w = np.array([1.0, 0.0, 0.0, 2.0, 0.5, 1.0])  # zero for every target class
    for kw in ({}, {"label_smoothing": 0.1}, {"z_loss": 1e-3}):
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        lt = F.cross_entropy(xt.reshape(-1, V), torch.tensor(t).reshape(-1), weight=torch.tensor(w),
                             label_smoothing=kw.get("label_smoothing", 0.0))
        lt.backward()
        want = xt.grad.numpy()
        assert np.isnan(want[t != -100]).all() and (want[t == -100] == 0).all()  # what torch gives
        if not kw.get("z_loss"):
            assert np.isnan(lt.item())
            want_loss, want_grad = ref.cross_entropy_with_grad(x, t, weight=w, **kw)
            np.testing.assert_allclose(want_grad, want)  # the reference agrees with torch (NaN where torch's is)
        want_loss, want_grad = ref.cross_entropy_with_grad(x, t, weight=w, **kw)
        assert np.isnan(want_loss)
        loss, grad = fastlm.cross_entropy_with_grad(x, t, weight=w, **kw)
        assert np.isnan(loss)
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(want_grad))
        np.testing.assert_array_equal(grad[t == -100], 0)
        out = np.full_like(x, 7)
        fastlm.cross_entropy_with_grad(x, t, weight=w, grad_out=out, **kw)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    # every position ignored: the sum over nothing is 0 too, and every gradient row is 0 (as torch's)
    ti = np.full((2, 4), -100)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    F.cross_entropy(xt.reshape(-1, V), torch.tensor(ti).reshape(-1), weight=torch.tensor(w)).backward()
    np.testing.assert_array_equal(ref.cross_entropy_with_grad(x, ti, weight=w)[1], xt.grad.numpy())
    np.testing.assert_array_equal(fastlm.cross_entropy_with_grad(x, ti, weight=w)[1], xt.grad.numpy())


_X = np.linspace(-1.0, 1.0, 12).reshape(2, 6)
_X3 = _X[None]
_BIG = 2**70


def _step(seqs):
    return np.zeros((len(seqs), 4))


def _lm():
    return fastlm.ngram.NgramLM(2, eos_id=2).fit([[0, 1, 3], [1, 1]])


_OUT_OF_RANGE = {
    "min_tokens_to_keep": lambda v: fastlm.top_p_filter(_X, 0.5, min_tokens_to_keep=v),
    "num_threads": lambda v: fastlm.softmax(_X, num_threads=v),
    "num_threads ": lambda v: fastlm.sample(_X, seed=0, num_threads=v),
    "n": lambda v: fastlm.set_num_threads(v),
    "top_k": lambda v: fastlm.sample(_X, seed=0, top_k=v),
    "k": lambda v: fastlm.top_k_filter(_X, v),
    "k[1]": lambda v: fastlm.top_k_filter(_X, [2, v]),
    "seed": lambda v: fastlm.sample(_X, seed=v),
    "seed[0]": lambda v: fastlm.sample(_X, seed=[v, 1]),
    "ignore_index": lambda v: fastlm.cross_entropy(_X, [0, 1], ignore_index=v),
    "ignore_index ": lambda v: fastlm.sequence_logprob(_X3, [[0, 1]], ignore_index=v),
    "targets[1]": lambda v: fastlm.cross_entropy(_X, [0, v]),
    "prompt_lengths[0]": lambda v: fastlm.sequence_logprob(_X3, [[0, 1]], prompt_lengths=[v]),
    "token_history[0, 0]": lambda v: fastlm.apply_penalties(_X, [[v], [0]]),
    "bias ids[0]": lambda v: fastlm.apply_logit_bias(_X, {v: 1.0}),
    "banned[0]": lambda v: fastlm.mask_tokens(_X, banned=[v]),
    "num_beams": lambda v: fastlm.beam_search(_step, [0], num_beams=v, max_new_tokens=2),
    "max_new_tokens": lambda v: fastlm.beam_search(_step, [0], num_beams=1, max_new_tokens=v, eos_id=0),
    "eos_id": lambda v: fastlm.beam_search(_step, [0], num_beams=1, max_new_tokens=2, eos_id=v),
    "prompt_ids[0]": lambda v: fastlm.beam_search(_step, [v], num_beams=1, max_new_tokens=2),
    "n_tokens": lambda v: fastlm.rolling_windows(v, 2**62),
    "max_length": lambda v: fastlm.rolling_windows(10, v),
    "n_bins": lambda v: fastlm.calibration.expected_calibration_error([0.5, 0.7], [1, 0], n_bins=v),
    "n_bins ": lambda v: fastlm.calibration.reliability_bins([0.5, 0.7], [1, 0], n_bins=v, strategy="quantile"),
    "labels[1]": lambda v: fastlm.calibration.calibration_from_logits(_X, [0, v]),
    "max_passes": lambda v: fastlm.calibration.fit_temperature(_X, [0, 1], max_passes=v),
    "order": lambda v: fastlm.ngram.count_ngrams([1, 2, 3], v),
    "tokens[1]": lambda v: fastlm.ngram.count_ngrams([1, v], 1),
    "order ": lambda v: fastlm.ngram.NgramLM(v),
    "vocab_size": lambda v: fastlm.ngram.NgramLM(2, vocab_size=v),
    "bos_id": lambda v: fastlm.ngram.NgramLM(2, bos_id=v),
    "eos_id ": lambda v: fastlm.ngram.NgramLM(2, eos_id=v),
    "sequences[0][1]": lambda v: fastlm.ngram.NgramLM(2).fit([[1, v]]),
    "max_new_tokens ": lambda v: _lm().generate([1], v, seed=0),
    "seed ": lambda v: _lm().generate([1], 3, seed=v),
    "min_count": lambda v: fastlm.ngram.WordVocab.build(["a b a"], min_count=v),
}

# values that overflowed the argument's C type: 2^70, and the first value past the narrower types
_VALUES = {"num_threads": [2**40, 2**31], "num_threads ": [2**31], "n": [2**40], "seed": [2**64, -_BIG],
           "seed[0]": [2**64], "seed ": [2**64, -1], "vocab_size": [2**32 + 1], "bos_id": [2**32],
           "eos_id ": [2**32, 2**40], "sequences[0][1]": [2**32, _BIG]}


@pytest.mark.parametrize("name, value", [(n, v) for n in _OUT_OF_RANGE for v in _VALUES.get(n, [_BIG, -_BIG])])
def test_out_of_range_integers_raise_value_error(name, value):
    """Integers beyond the C type an argument is passed as (int64, a C int for threads, uint64 seeds,
    uint32 n-gram ids) raised OverflowError (or TypeError, through an object array): ValueError naming
    the argument and the value, before anything runs."""
    previous = fastlm.get_num_threads()
    try:
        with pytest.raises(ValueError) as e:
            _OUT_OF_RANGE[name](value)
    finally:
        fastlm.set_num_threads(previous)
    msg = str(e.value)
    assert name.strip() in msg and str(value) in msg, msg


def test_integer_arguments_at_their_limits_still_work():
    """The largest values that fit are accepted, with the meaning the reference gives them."""
    np.testing.assert_array_equal(fastlm.top_p_filter(_X, 0.0, min_tokens_to_keep=2**63 - 1),
                                  ref.top_p_filter(_X, 0.0, min_tokens_to_keep=2**63 - 1))
    np.testing.assert_array_equal(fastlm.top_k_filter(_X, 2**63 - 1), ref.top_k_filter(_X, 2**63 - 1))
    np.testing.assert_array_equal(fastlm.sample(_X, seed=2**64 - 1), fastlm.sample(_X, seed=np.uint64(2**64 - 1)))
    lm = fastlm.ngram.NgramLM(1, vocab_size=2**32, eos_id=2**32 - 1).fit([[0, 5]])
    want = ref.NgramLM(1, vocab_size=2**32, eos_id=2**32 - 1).fit([[0, 5]])
    np.testing.assert_allclose(lm.prob([2**32 - 1, 5, 7], np.zeros((3, 0), np.int64)),
                               want.prob([2**32 - 1, 5, 7], np.zeros((3, 0), np.int64)))
    # ids past uint32 were wrapped silently when no vocab_size bounded them
    with pytest.raises(ValueError, match=r"sequences\[0\]\[1\] = 4294967297"):
        fastlm.ngram.NgramLM(1).fit([[1, 2**32 + 1]])


_HEAD = "<IIdqqqqq"  # order, smoothing, alpha, vocab_size, bos_id, eos_id, unk_id, max_id (NgramLM.save)
_FIELDS = ("order", "smoothing", "alpha", "vocab_size", "bos_id", "eos_id", "unk_id", "max_id")


def _saved(tmp_path, lm):
    path = tmp_path / "model.bin"
    lm.save(path)
    return path.read_bytes()


def _rewrite(data, header=None, tables=None):
    """The file with header fields replaced (dict) and/or the per-order (keys, counts) arrays replaced by
    tables(list of [keys, counts]) -> list, sizes written as they are; the CRC-32 of the payload (all
    after the 16-byte magic) is recomputed as the format does, so that only the validation can object."""
    import struct
    import zlib

    payload = data[16:-4]
    fields = dict(zip(_FIELDS, struct.unpack_from(_HEAD, payload, 0)))
    pos, parts = struct.calcsize(_HEAD), []
    for _ in range(fields["order"]):
        (m,) = struct.unpack_from("<q", payload, pos)
        keys = np.frombuffer(payload, "<u8", m, pos + 8).copy()
        counts = np.frombuffer(payload, "<i8", m, pos + 8 + 8 * m).copy()
        parts.append([keys, counts, m])
        pos += 8 + 16 * m
    rest = payload[pos:]
    fields.update(header or {})
    if tables is not None:
        parts = tables(parts)
    body = struct.pack(_HEAD, *(fields[f] for f in _FIELDS)) + b"".join(
        struct.pack("<q", m) + keys.astype("<u8").tobytes() + counts.astype("<i8").tobytes()
        for keys, counts, m in parts) + rest
    return data[:16] + body + struct.pack("<I", zlib.crc32(body))


def _set(parts, k, which, j, value):
    parts[k - 1][which][j] = value
    return parts


def test_ngram_load_validates_header_and_tables(tmp_path):
    """NgramLM.load checked the CRC and a few header fields only: a file whose CRC is right but whose
    header contradicts itself or its tables (negative max_id, a vocabulary below the ids counted, bos /
    eos beyond the vocabulary, tables holding ids above max_id, counts that overflow ...) was accepted.
    Each such file now raises ValueError naming the field."""
    lm = fastlm.ngram.NgramLM(2, alpha=0.5, vocab_size=10, bos_id=8, eos_id=9).fit([[1, 2, 3], [3, 4, 3]])
    data = _saved(tmp_path, lm)
    bad = tmp_path / "bad.bin"
    # the rewrite itself is faithful: the unchanged file loads, and scores as the reference model
    bad.write_bytes(_rewrite(data))
    back = fastlm.ngram.NgramLM.load(bad)
    want = ref.NgramLM(2, alpha=0.5, vocab_size=10, bos_id=8, eos_id=9).fit([[1, 2, 3], [3, 4, 3]])
    np.testing.assert_allclose(back.next_token_distribution([3]), want.next_token_distribution([3]))
    free = fastlm.ngram.NgramLM(3).fit([[1, 2, 7, 2], [5]])  # no vocab_size, bos or eos
    free_data = _saved(tmp_path, free)
    cases = [
        (data, {"order": 0}, None, "order"),
        (data, {"order": 65}, None, "order"),
        (data, {"order": 3}, None, "order"),  # a table more than the file holds
        (data, {"smoothing": 2}, None, "smoothing"),
        (data, {"alpha": 0.0}, None, "alpha"),
        (data, {"alpha": -1.0}, None, "alpha"),
        (data, {"alpha": float("nan")}, None, "alpha"),
        (data, {"alpha": float("inf")}, None, "alpha"),
        (data, {"vocab_size": -5}, None, "vocab_size"),
        (data, {"vocab_size": 0}, None, "vocab_size"),
        (data, {"vocab_size": 2**32 + 1}, None, "vocab_size"),
        (data, {"vocab_size": 9}, None, "eos_id"),  # bos 8 fits, eos 9 does not
        (data, {"vocab_size": 8}, None, "bos_id"),
        (data, {"vocab_size": 9, "eos_id": -1}, None, "max_id"),  # max_id 9 is not below 9
        (data, {"bos_id": -2}, None, "bos_id"),
        (data, {"bos_id": 10}, None, "bos_id"),
        (data, {"eos_id": 2**40}, None, "eos_id"),
        (data, {"unk_id": 10}, None, "unk_id"),
        (data, {"max_id": -2}, None, "max_id"),
        (data, {"max_id": 7}, None, "max_id"),  # below eos_id 9
        (data, {"max_id": 10}, None, "max_id"),
        (data, {"max_id": 2**40}, None, "max_id"),
        (free_data, {"max_id": 5}, None, "max_id"),  # the tables hold 7
        (free_data, {"max_id": 2**33}, None, "max_id"),
        (data, None, lambda p: _set(p, 1, 1, 0, 0), "counts[0]"),
        (data, None, lambda p: _set(p, 2, 1, 1, -3), "counts[1]"),
        (data, None, lambda p: _set(p, 1, 1, -2, 5), "counts"),  # the unigram BOS (a prefix) has count 0
        (data, None, lambda p: _set(_set(p, 1, 1, 0, 2**62), 1, 1, 1, 2**62), "counts"),  # the sum overflows
        (data, None, lambda p: _set(p, 1, 0, 1, p[0][0][0]), "keys"),  # not strictly increasing
        (data, None, lambda p: _set(p, 1, 0, 0, p[0][0][-1] + 1), "keys"),  # decreasing (uint64 diff wraps)
        (data, None, lambda p: _set(p, 1, 0, -1, 1 << 40), "prefix"),  # order 1 has no parent but 0
        (data, None, lambda p: _set(p, 2, 0, -1, (99 << 32) | 3), "prefix"),  # a parent beyond order 1
        (data, None, lambda p: [[k, c, m + 1000] for k, c, m in p], "size"),
        (data, None, lambda p: [[k, c, -1] for k, c, m in p], "size"),
    ]
    for src, header, tables, field in cases:
        bad.write_bytes(_rewrite(src, header, tables))
        with pytest.raises(ValueError, match="malformed") as e:
            fastlm.ngram.NgramLM.load(bad)
        assert field in str(e.value).split("malformed n-gram model")[1], (header, field, str(e.value))
    # what save writes always loads: a model never fitted, one fitted on nothing, a merge, the largest ids
    for model in (fastlm.ngram.NgramLM(2, bos_id=3), fastlm.ngram.NgramLM(1).fit([]),
                  fastlm.ngram.NgramLM(2, bos_id=0).fit([[1, 2]]).merge(fastlm.ngram.NgramLM(2, bos_id=0).fit([[40]])),
                  fastlm.ngram.NgramLM(2, vocab_size=2**32, eos_id=2**32 - 1).fit([[2**32 - 2, 0]]),
                  fastlm.ngram.NgramLM(8).fit([[1, 2, 3], [300, 2**31, 7, 7, 7, 7, 7, 7, 7]])):  # wide keys
        back = fastlm.ngram.NgramLM.load(tmp_path / "m.bin") if model.save(tmp_path / "m.bin") is None else None
        assert (back.vocab_size, back.max_id) == (model.vocab_size, model.max_id)
        for k in range(1, model.order + 1):
            for x, y in zip(back.counts(k), model.counts(k)):
                np.testing.assert_array_equal(x, y)
    # a rejected update leaves max_id (saved in the header) as it was, so that the model still saves and loads
    grow = fastlm.ngram.NgramLM(3, vocab_size=10).fit([[1, 2, 3]])
    with pytest.raises(ValueError, match="10"):
        grow.update([[12]])
    assert grow.max_id == 3
    grow.save(tmp_path / "g.bin")
    assert fastlm.ngram.NgramLM.load(tmp_path / "g.bin").max_id == 3
