"""Decoding: filters, sampler, greedy, penalties, bias, masks, CFG and beam search against
fastlm.reference (full sorts and cumulative sums), on every SIMD level."""

import math

import numpy as np
import pytest
from conftest import logits_like

import fastlm
from fastlm import reference as ref

DTYPES = [np.float32, np.float64]
FILTERS = {
    "top_p": (fastlm.top_p_filter, ref.top_p_filter),
    "min_p": (fastlm.min_p_filter, ref.min_p_filter),
    "typical": (fastlm.typical_filter, ref.typical_filter),
}


def safe_param(kind, row, rng):
    """A parameter at least 1e-4 (relative) away from every decision boundary of this row, so that
    float32 and float64 probabilities make the same decisions."""
    p = ref._probs(np.asarray(row, np.float64))
    if kind == "min_p":
        ratios = np.unique(p / p.max())
        cands = (ratios[:-1] + ratios[1:]) / 2
        cands = cands[np.diff(ratios) > 2e-4 * ratios[1:]]
    else:
        if kind == "top_p":
            cum = np.cumsum(np.sort(p)[::-1])
        else:
            with np.errstate(divide="ignore"):
                nl = -np.log(p)
            ent = np.sum(p[p > 0] * nl[p > 0])
            cum = np.cumsum(p[np.argsort(np.abs(nl - ent), kind="stable")])
        cum = np.concatenate([[0.0], cum[cum < 1 - 1e-6]])
        cands = (cum[:-1] + cum[1:]) / 2
        cands = cands[np.diff(cum) > 2e-4]
    if cands.size == 0:
        return 1.0 if kind != "min_p" else 0.0
    return float(rng.choice(cands))


def rows_with_params(rng, kind, n, V, dtype, scale=3.0):
    x = logits_like(rng, (n, V), dtype, scale)
    params = np.array([safe_param(kind, row, rng) for row in x])
    return x, params


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [1, 2, 33, 2049, 50257])
@pytest.mark.parametrize("kind", list(FILTERS))
def test_filters_match_reference(simd, rng, kind, V, dtype):
    fast, slow = FILTERS[kind]
    x, params = rows_with_params(rng, kind, 3, V, dtype)
    for keep in (1, 3):
        want = slow(x, params, min_tokens_to_keep=keep)
        np.testing.assert_array_equal(fast(x, params, min_tokens_to_keep=keep), want.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [1, 2, 33, 2049, 50257, 128256])
def test_top_k_matches_reference(simd, rng, dtype, V):
    x = np.round(logits_like(rng, (3, V), dtype), 1)  # many ties
    for k in (-1, 0, 1, 2, 50, V - 1, V, V + 5):
        ks = np.array([k, max(k, 0) // 2, k])
        for keep in (1, 4):
            np.testing.assert_array_equal(fastlm.top_k_filter(x, ks, min_tokens_to_keep=keep),
                                          ref.top_k_filter(x, ks, min_tokens_to_keep=keep).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [2, 33, 2049, 128256])
def test_top_k_top_p_matches_the_three_filters(simd, rng, dtype, V):
    """The fused temperature -> top-k -> top-p equals the reference's three steps (the kept set exactly;
    kept values x / T in the logits' precision); ties at both cuts, k beyond V and k <= 0 included."""
    for rounded in (False, True):
        x = logits_like(rng, (4, V), dtype)
        x = np.round(x, 1).astype(dtype) if rounded else x
        for k in (1, 2, 50, V - 1, V, 0):
            for p, t, keep in ((0.9, 0.7, 1), (0.0, 1.0, 1), (0.5, 2.0, 3), (1.0, 1.3, 1), (0.99, 0.05, 2)):
                got = fastlm.top_k_top_p_filter(x, np.array([k, k, max(k // 2, 1), k]), p, temperature=t,
                                                min_tokens_to_keep=keep)
                want = ref.top_k_top_p_filter(x, np.array([k, k, max(k // 2, 1), k]), p, temperature=t,
                                              min_tokens_to_keep=keep)
                np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
                np.testing.assert_array_equal(got[np.isfinite(got)], (x / np.asarray(t, dtype))[np.isfinite(got)])
    y = x.copy()
    assert fastlm.top_k_top_p_filter(y, 3, 0.5, out=y) is y
    with pytest.raises(ValueError, match="temperature"):
        fastlm.top_k_top_p_filter(x, 3, 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="p"):
        fastlm.top_k_top_p_filter(x, 3, 1.5)


@pytest.mark.parametrize("V", [128256, 262144])
def test_large_vocabularies(rng, V):
    for kind, (fast, slow) in FILTERS.items():
        x, params = rows_with_params(rng, kind, 1, V, np.float32, scale=2.0)
        np.testing.assert_array_equal(fast(x, params), slow(x, params).astype(np.float32))


def _uniform(seed, row):
    """The sampler's u for (seed, row): splitmix64's finalizer, as documented in fastlm.sample."""
    M = (1 << 64) - 1

    def mix(z):
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & M
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    h = mix(mix((seed + 0x9E3779B97F4A7C15) & M) ^ ((row * 0xD1B54A32D192ED03) & M))
    return (h >> 11) * 2.0 ** -53


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_p_over_many_candidates(simd, rng, dtype):
    """Thousands of candidates (flat rows, rows of many ties, one huge tie): the selection is narrowed to a
    band before the exact cut; filter and sampler against the reference."""
    V = 50257
    rows = [logits_like(rng, (V,), dtype, s) for s in (1.0, 2.0, 3.0)]
    rows.append(np.round(logits_like(rng, (V,), dtype, 3.0) * 4) / 4)  # many ties
    rows.append(np.where(np.arange(V) % 3 == 0, 1.0, 0.0).astype(dtype))  # two values only
    probs = np.sort(ref._probs(rows[-1].astype(np.float64)))[::-1]
    inside_tie = [probs[:k].sum() + probs[k] / 2 for k in (20000, 20001)]  # the cut inside the zeros' tie
    for row, p in [(row, safe_param("top_p", row, rng)) for row in rows[:-1]] + [(rows[-1], p) for p in inside_tie]:
        np.testing.assert_array_equal(fastlm.top_p_filter(row, p), ref.top_p_filter(row, p).astype(dtype))
        mp = safe_param("min_p", row, rng)
        for kw in ({"top_p": p}, {"temperature": 0.7, "top_p": p}, {"temperature": 0.7}, {"min_p": mp},
                   {"top_p": p, "min_p": mp}):
            cum = np.cumsum(ref.sample_distribution(row[None], **kw)[0])
            for seed in range(40):
                u = _uniform(seed, 0)
                if np.abs(cum - u).min() < 1e-6:
                    continue  # too close to a boundary for float32 weights
                assert fastlm.sample(row, seed=seed, **kw) == np.searchsorted(cum, u, side="right"), kw


def _check_sampler(row, kws, seeds=20):
    """fastlm.sample's exact token against the reference distribution and the documented generator."""
    for kw in kws:
        cum = np.cumsum(ref.sample_distribution(row[None], **kw)[0])
        for seed in range(seeds):
            u = _uniform(seed, 0)
            if np.abs(cum - u).min() < 1e-6:
                continue  # too close to a boundary for float32 weights
            assert fastlm.sample(row, seed=seed, **kw) == np.searchsorted(cum, u, side="right"), kw


def _between_tokens(row, q):
    """A top-p parameter near q halfway between two tokens' cumulative masses (on flat rows no parameter
    is 1e-4 from every boundary; half a token's mass still is far above float32 rounding)."""
    cum = np.cumsum(np.sort(ref._probs(np.asarray(row, np.float64)))[::-1])
    k = int(np.searchsorted(cum, q))
    return float((cum[k - 1] + cum[k]) / 2 if k > 0 else cum[0] / 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_p_flat_rows(simd, rng, dtype):
    """Flat rows (the weight spread over most of the vocabulary) take one pass with a band of logits
    guessed from a sample of the row; rows whose sample misleads fall back to the candidate tiers. The
    filter (out of place and in place) and the sampler against the reference."""
    V = 128256
    rows = [logits_like(rng, (V,), dtype, s) for s in (0.5, 1.0, 2.0)]
    rows.append(logits_like(rng, (V,), dtype, 3.0))  # a heavy head: the tiers, the second from the sample
    masked = logits_like(rng, (V,), dtype, 1.0)
    masked[rng.random(V) < 0.3] = -np.inf  # masked tokens are never in the band
    rows.append(masked)
    rows.append(np.round(logits_like(rng, (V,), dtype, 1.0) * 8) / 8)  # the cut falls inside a tie
    # heavy tokens where the sample does not read (runs of 16 logits at 16 (32 r + 7 r mod 32)): the
    # band guessed from the sample misses the cut, which the pass finds out
    r = np.arange(V // 512)
    sampled = np.zeros(V, bool)
    for k in range(16):
        sampled[16 * (32 * r + (7 * r) % 32) + k] = True
    fooled = logits_like(rng, (V,), dtype, 0.5)
    fooled[rng.choice(np.flatnonzero(~sampled), 300, replace=False)] = 5
    rows.append(fooled)
    # two heavy tokens unsampled over a flat half of the weight: the cut lies above the first band, and
    # a second band is guessed from the exact weight above it
    heads = logits_like(rng, (V,), dtype, 1.0)
    heads[rng.choice(np.flatnonzero(~sampled), 2, replace=False)] = [12, 11]
    rows.append(heads)
    # heavy tokens the sample reads, counted 32 times over: the cut lies below the first band
    counted = logits_like(rng, (V,), dtype, 1.0)
    counted[rng.choice(np.flatnonzero(sampled), 40, replace=False)] = 4
    rows.append(counted)
    for row in rows:
        for p in (_between_tokens(row, q) for q in (0.05, 0.5, 0.9, 0.995)):
            expected = ref.top_p_filter(row, p).astype(dtype)
            np.testing.assert_array_equal(fastlm.top_p_filter(row, p), expected)
            inplace = row.copy()
            fastlm.top_p_filter(inplace, p, out=inplace)
            np.testing.assert_array_equal(inplace, expected)
        p = _between_tokens(row, 0.9)
        # a min-p that keeps the whole band, and one safe_param picks (which may cut into it: the tiers)
        _check_sampler(row, ({"top_p": p}, {"temperature": 0.8, "top_p": p}, {"top_p": p, "min_p": 1e-6},
                                {"top_p": p, "min_p": safe_param("min_p", row, rng)}))
    batch = np.stack(rows[:3])
    np.testing.assert_array_equal(fastlm.top_p_filter(batch, 0.9), ref.top_p_filter(batch, 0.9).astype(dtype))


def test_top_p_flat_rows_odd_maxima(simd):
    """Long rows whose max the sample cannot handle: +inf where the sample does not read, a max so large
    that max - 20 T rounds to it, a temperature near 0; against the reference (the sanitizer build checks
    that no float-to-int conversion overflows on the way)."""
    rng = np.random.default_rng(5)
    inf_row = rng.standard_normal(20000).astype(np.float32)
    inf_row[20] = np.inf
    huge = np.full(20000, 1e9, np.float32)
    two = np.where(rng.random(20000) < 0.5, 10, 0).astype(np.float32)
    tens = int((two == 10).sum())
    p_two = (round(0.3 * tens) + 0.5) / tens  # halfway between two of the tied tokens at 10
    for row, p in ((inf_row, 0.5), (huge, 0.50002), (two, p_two)):
        np.testing.assert_array_equal(fastlm.top_p_filter(row, p), ref.top_p_filter(row, p).astype(np.float32))
    _check_sampler(inf_row, ({"top_p": 0.5},))
    _check_sampler(two, ({"top_p": p_two, "temperature": 1e-8},))


def test_documented_examples(simd):
    x = np.log(np.array([0.5, 0.3, 0.1, 0.1], np.float32))
    kept = lambda y: int(np.isfinite(y).sum())  # noqa: E731
    assert kept(fastlm.top_p_filter(x, 0.79)) == 2
    assert kept(fastlm.top_p_filter(x, 0.81)) == 3
    four = np.zeros(4, np.float32)
    out = fastlm.top_p_filter(four, 0.5)
    np.testing.assert_array_equal(np.isfinite(out), [True, True, False, False])  # strict <, lower index first
    assert kept(fastlm.top_p_filter(x, 0.0)) == 1
    assert kept(fastlm.top_p_filter(x, 0.0, min_tokens_to_keep=3)) == 3
    assert kept(fastlm.top_p_filter(x, 1.0)) == 4
    # min_tokens_to_keep larger than the finite tokens: every finite one, the -inf ones stay -inf
    y = np.array([1.0, -np.inf, 0.5, -np.inf], np.float32)
    out = fastlm.top_p_filter(y, 0.1, min_tokens_to_keep=4)
    np.testing.assert_array_equal(out, y)
    # top-k ties with the k-th value are kept
    np.testing.assert_array_equal(np.isfinite(fastlm.top_k_filter(x, 3)), [True, True, True, True])
    # filter_value and in place
    z = x.copy()
    assert fastlm.top_k_filter(z, 1, filter_value=-1e9, out=z) is z
    np.testing.assert_array_equal(z, [x[0], -1e9, -1e9, -1e9])


def test_boundary_ties_keep_the_lower_index(simd):
    x = np.array([[2.0, 1.0, 1.0, 1.0, 0.0]])
    p = ref._probs(x[0])
    budget = p[0] + p[1] + 1e-9  # the mass above the third token (index 2) is just over the budget
    np.testing.assert_array_equal(np.isfinite(fastlm.top_p_filter(x, budget)), [[True, True, True, False, False]])
    budget = p[0] + p[1] - 1e-9
    np.testing.assert_array_equal(np.isfinite(fastlm.top_p_filter(x, budget)), [[True, True, False, False, False]])


def test_per_row_parameters_and_leading_dims(simd, rng):
    x = logits_like(rng, (2, 3, 40), np.float32)
    ks = np.array([[0, 1, 5], [40, 2, -3]])
    np.testing.assert_array_equal(fastlm.top_k_filter(x, ks), ref.top_k_filter(x, ks).astype(np.float32))
    ps = np.array([[safe_param("top_p", x[i, j], rng) for j in range(3)] for i in range(2)])
    ps[0, 0], ps[1, 1] = 0.0, 1.0
    np.testing.assert_array_equal(fastlm.top_p_filter(x, ps), ref.top_p_filter(x, ps).astype(np.float32))
    f16 = x.astype(np.float16)
    out = fastlm.top_k_filter(f16, 3)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, ref.top_k_filter(f16, 3).astype(np.float16))
    strided = logits_like(rng, (4, 80), np.float64)[:, ::2]
    np.testing.assert_array_equal(fastlm.top_k_filter(strided, 7), ref.top_k_filter(strided, 7))


def test_special_values(simd):
    inf = np.inf
    x = np.array([[0.0, inf, 1.0, inf], [-inf, 3.0, -inf, 2.0]])
    np.testing.assert_array_equal(np.isfinite(fastlm.top_p_filter(x, 0.4)) | np.isposinf(fastlm.top_p_filter(x, 0.4)),
                                  [[False, True, False, False], [False, True, False, False]])
    np.testing.assert_array_equal(fastlm.top_p_filter(x, 0.6), ref.top_p_filter(x, 0.6))
    np.testing.assert_array_equal(fastlm.min_p_filter(x, 0.5), ref.min_p_filter(x, 0.5))
    np.testing.assert_array_equal(fastlm.typical_filter(x, 0.9), ref.typical_filter(x, 0.9))
    assert fastlm.greedy(x).tolist() == [1, 1]
    draws = fastlm.sample(np.tile(x[:1], (200, 1)), seed=np.arange(200))
    assert set(draws.tolist()) == {1, 3}  # the +inf tokens share the mass
    with pytest.raises(ValueError, match=r"logits\[1\] \(a row of V logits\) contains NaN"):
        fastlm.top_p_filter(np.array([[0.0, 1.0], [np.nan, 0.0]]), 0.5)
    with pytest.raises(ValueError, match=r"logits\[0, 1\] .* has no logit above -inf"):
        fastlm.sample(np.array([[[0.0, 1.0], [-inf, -inf]]]), seed=0)
    for f in (fastlm.greedy, lambda z: fastlm.top_k_filter(z, 1), lambda z: fastlm.min_p_filter(z, 0.1)):
        with pytest.raises(ValueError, match="contains NaN"):
            f(np.array([1.0, np.nan]))


def test_bad_parameters_raise_before_writing():
    x = np.zeros((2, 5), np.float32)
    out = np.full_like(x, 7.0)
    cases = [
        (lambda: fastlm.top_p_filter(x, 1.5, out=out), ValueError, r"p = 1.5 must be in \[0, 1\]"),
        (lambda: fastlm.top_p_filter(x, [0.5, -0.1], out=out), ValueError, r"p\[1\] = -0.1"),
        (lambda: fastlm.min_p_filter(x, 2.0, out=out), ValueError, "min_p"),
        (lambda: fastlm.typical_filter(x, 0.0, out=out), ValueError, r"mass = 0.0 must be in \(0, 1\]"),
        (lambda: fastlm.top_p_filter(x, [0.5, 0.5, 0.5], out=out), ValueError, r"p has shape \(3,\)"),
        (lambda: fastlm.top_k_filter(x, 2.5, out=out), TypeError, "k must be an integer"),
        (lambda: fastlm.top_k_filter(x, 2, min_tokens_to_keep=0, out=out), ValueError, "min_tokens_to_keep"),
        (lambda: fastlm.top_k_filter(np.zeros((2, 5), np.int32), 2), TypeError, "logits must be a float"),
        (lambda: fastlm.sample(x, temperature=-1), ValueError, "temperature"),
        (lambda: fastlm.sample(x, top_p=1.1), ValueError, "top_p"),
        (lambda: fastlm.sample(x, min_p=-0.5), ValueError, "min_p"),
        (lambda: fastlm.sample(x, seed=-3), ValueError, "seed"),
        (lambda: fastlm.sample(x, seed=1.5), TypeError, "seed"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn()
    np.testing.assert_array_equal(out, 7.0)


def wilson_hilferty_bound(df, z=3.719):
    """The chi-square quantile at about 1 - 1e-4."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("params", [
    {},
    {"temperature": 0.7},
    {"top_k": 5},
    {"top_p": 0.8},
    {"min_p": 0.2},
    {"temperature": 1.3, "top_k": 12, "top_p": 0.9, "min_p": 0.05},
])
def test_sample_frequencies_chi_square(simd, rng, params):
    """Draws with seeds 0..N-1 follow the reference's filtered distribution (chi-square, p ~ 1e-4)."""
    V, N = 24, 40000
    row = logits_like(rng, (V,), np.float32, 1.5)
    draws = fastlm.sample(np.broadcast_to(row, (N, V)), seed=np.arange(N), **params)
    want = ref.sample_distribution(row[None], **params)[0]
    assert want[draws].min() > 0  # never a token of filtered probability 0
    counts = np.bincount(draws, minlength=V)
    live = want > 0
    expected = want[live] * N
    stat = np.sum((counts[live] - expected) ** 2 / expected)
    df = max(int(live.sum()) - 1, 1)
    assert stat < wilson_hilferty_bound(df), (stat, df)


def test_sample_reproducible_across_threads_and_batches(rng):
    x = logits_like(rng, (64, 5000), np.float32)
    one = fastlm.sample(x, seed=7, top_p=0.9, num_threads=1)
    for n in (2, 3, 8):
        np.testing.assert_array_equal(fastlm.sample(x, seed=7, top_p=0.9, num_threads=n), one)
    np.testing.assert_array_equal(fastlm.sample(x[:10], seed=7, top_p=0.9), one[:10])
    other = x.copy()
    other[10:] = logits_like(rng, (54, 5000), np.float32)
    np.testing.assert_array_equal(fastlm.sample(other, seed=7, top_p=0.9)[:10], one[:10])
    seeds = np.arange(64) * 1000003
    np.testing.assert_array_equal(fastlm.sample(x, seed=seeds)[:5], fastlm.sample(x[:5], seed=seeds[:5]))
    assert not np.array_equal(fastlm.sample(x, seed=8, top_p=0.9), one)


def test_sample_greedy_rows_and_mixed_parameters(simd, rng):
    x = logits_like(rng, (6, 300), np.float64)
    T = np.array([0.0, 1.0, 0.5, 1.0, 2.0, 0.0])
    K = np.array([0, 1, 0, 3, 50, 7])
    P = np.array([1.0, 1.0, 0.0, 0.9, 0.5, 0.3])
    ids = fastlm.sample(x, temperature=T, top_k=K, top_p=P, seed=3)
    argmax = np.argmax(x, axis=-1)
    assert ids[0] == argmax[0] and ids[1] == argmax[1] and ids[5] == argmax[5]
    assert ids[2] == argmax[2]  # top_p = 0 keeps one token
    dist = ref.sample_distribution(x, temperature=T, top_k=K, top_p=P)
    assert (dist[np.arange(6), ids] > 0).all()
    assert np.ndim(fastlm.sample(x[0], seed=1)) == 0


def test_greedy(simd, rng):
    x = np.round(logits_like(rng, (5, 7, 33), np.float32), 0)
    np.testing.assert_array_equal(fastlm.greedy(x), np.argmax(x, axis=-1))
    assert fastlm.greedy(np.array([1.0, 3.0, 3.0])) == 1


def test_penalties_bias_mask_cfg(rng):
    x = logits_like(rng, (3, 4, 50), np.float32)
    hist = rng.integers(-1, 50, (3, 4, 12))
    kw = {"repetition_penalty": 1.3, "presence_penalty": 0.5, "frequency_penalty": 0.25}
    np.testing.assert_allclose(fastlm.apply_penalties(x, hist, **kw), ref.apply_penalties(x, hist, **kw), rtol=1e-6)
    y = x.copy()
    assert fastlm.apply_penalties(y, hist, repetition_penalty=2.0, out=y) is y
    np.testing.assert_allclose(y, ref.apply_penalties(x, hist, repetition_penalty=2.0), rtol=1e-6)
    bias = {3: 1.5, 7: -100.0, 49: 2.0}
    np.testing.assert_allclose(fastlm.apply_logit_bias(x, bias), ref.apply_logit_bias(x, bias), rtol=1e-6)
    pair = ([3, 3, 10], [1.0, 2.0, -1.0])
    np.testing.assert_allclose(fastlm.apply_logit_bias(x, pair), ref.apply_logit_bias(x, pair), rtol=1e-6)
    np.testing.assert_array_equal(fastlm.mask_tokens(x, allowed=[1, 5, 9], banned=[5]),
                                  ref.mask_tokens(x, allowed=[1, 5, 9], banned=[5]).astype(np.float32))
    np.testing.assert_array_equal(fastlm.mask_tokens(x, banned=[0]), ref.mask_tokens(x, banned=[0]).astype(np.float32))
    u = logits_like(rng, (3, 4, 50), np.float32)
    np.testing.assert_allclose(fastlm.cfg_mix(x, u, 1.5), ref.cfg_mix(x, u, 1.5), rtol=1e-5, atol=1e-5)
    # g (lc - lu) overflows float32 here, the mix itself (1.5e38) does not
    c2, u2 = np.float32([0.0126, -0.0132]), np.float32([3.0, 3e38])
    np.testing.assert_allclose(fastlm.cfg_mix(c2, u2, 1.5), ref.cfg_mix(c2.astype(float), u2.astype(float), 1.5),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"token_history\[0, 0, 0\] = 50"):
        fastlm.apply_penalties(x, np.full((3, 4, 2), 50))
    with pytest.raises(ValueError, match="token_history has shape"):
        fastlm.apply_penalties(x, np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="repetition_penalty"):
        fastlm.apply_penalties(x, hist, repetition_penalty=0.0)
    with pytest.raises(ValueError, match="outside"):
        fastlm.apply_logit_bias(x, {50: 1.0})
    with pytest.raises(ValueError, match="outside"):
        fastlm.mask_tokens(x, banned=[-1])
    with pytest.raises(ValueError, match="shape"):
        fastlm.cfg_mix(x, u[:2], 1.0)


def toy_model(V, seed):
    """A deterministic step function: logits from a hash of each sequence."""
    def step(seqs):
        out = np.empty((len(seqs), V))
        for i, s in enumerate(seqs):
            out[i] = np.random.default_rng(abs(hash(tuple(int(t) for t in s))) % 2**32 + seed).normal(0, 2, V)
        return out
    return step


@pytest.mark.parametrize("case", [
    {"length_penalty": 0.0, "early_stopping": False},
    {"length_penalty": 1.0, "early_stopping": "never"},
    {"length_penalty": 2.0, "early_stopping": "never"},
    {"length_penalty": 1.0, "early_stopping": True, "num_beams": 1000},
])
def test_beam_search_equals_brute_force(simd, case):
    V, L, eos = 4, 4, 3
    step = toy_model(V, 11)
    case = dict(case)
    nb = case.pop("num_beams", V ** L)
    got = fastlm.beam_search(step, [1, 2], num_beams=nb, max_new_tokens=L, eos_id=eos, **case)
    want = ref.beam_search_bruteforce(step, [1, 2], max_new_tokens=L, eos_id=eos, length_penalty=case["length_penalty"])
    n = min(len(want), nb) if case.get("early_stopping") is not True else len(got)
    assert len(got) == n
    for (gs, gscore), (ws, wscore) in zip(got, want[:n]):
        assert gscore == pytest.approx(wscore, rel=1e-9)
        np.testing.assert_array_equal(gs, ws)


def test_beam_search_without_eos_and_small_beams(simd):
    V = 6
    step = toy_model(V, 5)
    got = fastlm.beam_search(step, [0], num_beams=3, max_new_tokens=3, length_penalty=1.0)
    want = ref.beam_search_bruteforce(step, [0], max_new_tokens=3, length_penalty=1.0)
    assert len(got) == 3
    assert got[0][1] == pytest.approx(want[0][1], rel=1e-9)  # 3 beams find the best path here
    assert all(len(s) == 4 for s, _ in got)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="num_beams"):
        fastlm.beam_search(step, [0], num_beams=0, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"step_fn\(seqs\) returned shape"):
        fastlm.beam_search(lambda s: np.zeros((1, 3, 2)), [0], num_beams=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="eos_id"):
        fastlm.beam_search(step, [0], num_beams=2, max_new_tokens=2, eos_id=V)


def hf_warpers_torch(torch, scores, kind, value, min_tokens_to_keep=1):
    """Hugging Face's warpers (TopK / TopP / MinP / Typical), re-implemented in torch as they are written."""
    F = torch.nn.functional
    if kind == "top_k":
        top_k = min(max(value, min_tokens_to_keep), scores.size(-1))
        remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
        return scores.masked_fill(remove, -float("inf"))
    if kind == "top_p":
        sorted_logits, sorted_indices = torch.sort(scores, descending=False, stable=True)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative_probs <= (1 - value)
        sorted_remove[..., -min_tokens_to_keep:] = 0
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        return scores.masked_fill(remove, -float("inf"))
    if kind == "min_p":
        probs = torch.softmax(scores, dim=-1)
        remove = probs < value * probs.amax(dim=-1, keepdim=True)
        sorted_indices = torch.argsort(scores, descending=True, dim=-1, stable=True)
        sorted_remove = torch.gather(remove, dim=-1, index=sorted_indices)
        sorted_remove[..., :min_tokens_to_keep] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        return scores.masked_fill(remove, -float("inf"))
    normalized = F.log_softmax(scores, dim=-1)
    p = torch.exp(normalized)
    ent = -(normalized * p).nansum(-1, keepdim=True)
    shifted = torch.abs((-normalized) - ent)
    sorted_scores, sorted_indices = torch.sort(shifted, descending=False, stable=True)
    cumulative_probs = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
    last_ind = (cumulative_probs < value).sum(dim=1).clamp_(max=sorted_scores.shape[-1] - 1)
    sorted_remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
    sorted_remove[..., :min_tokens_to_keep] = 0
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, -float("inf"))


def test_against_hugging_face_semantics_in_torch(rng):
    torch = pytest.importorskip("torch")
    V = 1000
    for kind in ("top_k", "top_p", "min_p", "typical"):
        for _ in range(4):
            x = logits_like(rng, (1, V), np.float64)
            value = 40 if kind == "top_k" else safe_param(kind, x[0], rng)
            want = hf_warpers_torch(torch, torch.from_numpy(x), kind, value).numpy()
            fast = {"top_k": fastlm.top_k_filter, "top_p": fastlm.top_p_filter, "min_p": fastlm.min_p_filter,
                    "typical": fastlm.typical_filter}[kind]
            np.testing.assert_array_equal(fast(x, value), want)


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("num_beams", [1, 2, 3, 5])
def test_beam_search_matches_reference(simd, num_beams, early_stopping):
    V = 7
    step = toy_model(V, 23)
    for lp in (1.0, 0.5):
        kw = {"num_beams": num_beams, "max_new_tokens": 5, "eos_id": 2, "length_penalty": lp,
              "early_stopping": early_stopping}
        got = fastlm.beam_search(step, [4, 1], **kw)
        want = ref.beam_search(step, [4, 1], **kw)
        assert len(got) == len(want)
        for (gs, gscore), (ws, wscore) in zip(got, want):
            np.testing.assert_array_equal(gs, ws)
            assert gscore == pytest.approx(wscore, rel=1e-9)


class CachedToy:
    """toy_model as a CachedStep: it rebuilds each row's sequence from start()'s padded prompts and each
    step's (tokens, beam_idx), as a KV cache would be reordered, and scores it with toy_model."""

    def __init__(self, V, seed):
        self.step_fn, self.calls = toy_model(V, seed), []

    def start(self, input_ids, attention_mask):
        assert input_ids.dtype == attention_mask.dtype == np.int64 and input_ids.shape == attention_mask.shape
        assert (input_ids[attention_mask == 0] == 0).all()
        assert (np.diff(attention_mask, axis=1) >= 0).all()  # left padding
        self.seqs = [row[m == 1] for row, m in zip(input_ids, attention_mask)]
        self.calls.append(len(self.seqs))
        return self._logits()

    def step(self, tokens, beam_idx):
        assert tokens.shape == beam_idx.shape and beam_idx.max() < len(self.seqs)
        self.seqs = [np.append(self.seqs[b], t) for b, t in zip(beam_idx, tokens)]
        self.calls.append(len(self.seqs))
        return self._logits()

    def _logits(self):
        return np.concatenate([self.step_fn(s[None]) for s in self.seqs]) if self.seqs else np.zeros((0, 1))


BATCH = [[4, 1], [3], [4, 1], [0, 5, 6, 2], [6, 6]]


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("num_beams", [1, 2, 4])
def test_batched_beam_search_matches_reference_per_prompt(simd, num_beams, early_stopping):
    """A batch (a list of ragged prompts, a 2-D array with left or right padding) gives per prompt what
    the reference gives for that prompt alone, through the whole-sequence step and the cached step."""
    V, seed = 7, 31
    for lp in (1.0, -1.0, 2.0):
        kw = {"num_beams": num_beams, "max_new_tokens": 5, "eos_id": 2, "length_penalty": lp,
              "early_stopping": early_stopping}
        want = [ref.beam_search(toy_model(V, seed), p, **kw) for p in BATCH]
        L = max(map(len, BATCH))
        right = np.array([p + [9] * (L - len(p)) for p in BATCH])
        left = np.array([[9] * (L - len(p)) + p for p in BATCH])
        mask_r = np.array([[1] * len(p) + [0] * (L - len(p)) for p in BATCH])
        cached = CachedToy(V, seed)
        got = {"list": fastlm.beam_search(toy_model(V, seed), BATCH, **kw),
               "right": fastlm.beam_search(toy_model(V, seed), right, attention_mask=mask_r, **kw),
               "left": fastlm.beam_search(toy_model(V, seed), left, attention_mask=mask_r[:, ::-1], **kw),
               "cached": fastlm.beam_search(cached, BATCH, **kw)}
        assert cached.calls[0] == len(BATCH) and max(cached.calls) <= len(BATCH) * num_beams
        for form, results in got.items():
            assert len(results) == len(BATCH), form
            for res, w in zip(results, want):
                assert len(res) == len(w), form
                for (gs, gscore), (ws, wscore) in zip(res, w):
                    np.testing.assert_array_equal(gs, ws, err_msg=form)
                    assert gscore == pytest.approx(wscore, rel=1e-9), form


def test_beam_search_batch_shapes_and_bad_input():
    """A 2-D prompt array is a batch (one result per row), never one flattened prompt; bad masks, shapes and
    models raise naming the argument."""
    step = toy_model(5, 3)
    one = fastlm.beam_search(step, [1, 2], num_beams=2, max_new_tokens=3)
    two = fastlm.beam_search(step, np.array([[1, 2]]), num_beams=2, max_new_tokens=3)
    assert len(two) == 1 and all((a[0] == b[0]).all() and a[1] == b[1] for a, b in zip(one, two[0]))
    assert all(len(s) == 5 for s, _ in two[0])  # the prompt [1, 2], not [1, 2] flattened with others
    batch = fastlm.beam_search(step, np.array([[1, 2], [3, 4]]), num_beams=2, max_new_tokens=3)
    assert [r[0][0][:2].tolist() for r in batch] == [[1, 2], [3, 4]]
    bad = {"attention_mask": dict(prompt_ids=np.ones((2, 3), int), attention_mask=[[1, 0, 1], [1, 1, 1]]),
           "attention_mask ": dict(prompt_ids=np.ones((2, 3), int), attention_mask=[[1, 2, 1], [1, 1, 1]]),
           "has shape": dict(prompt_ids=np.ones((2, 3), int), attention_mask=np.ones((2, 2), int)),
           "prompt_ids must be": dict(prompt_ids=np.ones((2, 2, 2), int)),
           "goes with a 2-D": dict(prompt_ids=[1, 2], attention_mask=[1, 1])}
    for match, kw in bad.items():
        with pytest.raises(ValueError, match=match.strip()):
            fastlm.beam_search(step, num_beams=2, max_new_tokens=2, **kw)
    with pytest.raises(TypeError, match="step_fn must be"):
        fastlm.beam_search(42, [1], num_beams=2, max_new_tokens=2)

    class Wrong(CachedToy):
        def step(self, tokens, beam_idx):
            return np.zeros((len(tokens) + 1, 7))

    with pytest.raises(ValueError, match=r"step_fn.step\(tokens, beam_idx\) returned shape"):
        fastlm.beam_search(Wrong(7, 0), [[1], [2]], num_beams=2, max_new_tokens=3)


def test_subnormal_ranges_and_rounded_draws(simd):
    """A float64 candidate range below 1e-305 (its histogram scale would be infinite) selects exactly;
    a draw whose target rounding leaves unreached returns a kept token, never one min_p removed."""
    x = np.where((np.arange(6400) >= 64) & (np.arange(6400) % 3 == 0), 1e-310, 0.0)
    np.testing.assert_array_equal(fastlm.top_k_filter(x, 100), ref.top_k_filter(x, 100))
    small = np.array([1e-310, 0.0, 0.0, -1.0])
    ids = fastlm.sample(np.tile(small, (64, 1)), top_k=2, top_p=0.5, seed=np.arange(64))
    assert (ref.sample_distribution(small[None], top_k=2, top_p=0.5)[0][ids] > 0).all()
    if simd == "scalar":  # 2^24 weights of 0.6 ulp(1) each: their float64 sum rounds up past the target
        big = np.full(1 << 24, np.log(1.2 * 2.0 ** -53), np.float32)
        big[1] = 0.0
        big[0] = np.float32(np.log(1e-16) - 0.0005)  # a candidate min_p removes
        assert fastlm.sample(big, min_p=1e-16, seed=310206511) != 0


def test_probability_zero_tokens_tie(simd):
    """Tokens whose float64 probability is 0 tie with one another (the lower index first) when
    min_tokens_to_keep reaches them: as the reference ranks them."""
    rows = [np.float32([3.0, 1e30]),
            np.float32([-np.inf, 2.8e-3, 5.5e-2, -7.4e-2, -1.6e-2, -4.8e-2, 6.0e-2, 1e30, -2.9e-2])]
    for row in rows:
        for keep in (1, 2, 3):
            for fast, slow, param in ((fastlm.top_p_filter, ref.top_p_filter, 0.0),
                                      (fastlm.typical_filter, ref.typical_filter, 0.1),
                                      (fastlm.min_p_filter, ref.min_p_filter, 0.5)):
                np.testing.assert_array_equal(fast(row, param, min_tokens_to_keep=keep),
                                              slow(row.astype(np.float64), param, min_tokens_to_keep=keep)
                                              .astype(np.float32))


def test_review_regressions(simd):
    """Signed zeros are one value; padded lanes are never candidates; typical keeps ties with
    min_tokens_to_keep; tiny temperatures are refused; probability ties go to the lower index."""
    z = np.float32([-0.0, 1.0, 0.0])
    np.testing.assert_array_equal(fastlm.top_p_filter(z, 0.0, min_tokens_to_keep=2),
                                  ref.top_p_filter(z, 0.0, min_tokens_to_keep=2).astype(np.float32))
    np.testing.assert_array_equal(fastlm.min_p_filter(z, 0.9, min_tokens_to_keep=2),
                                  ref.min_p_filter(z, 0.9, min_tokens_to_keep=2).astype(np.float32))
    alt = np.tile(np.float32([-0.0, 0.0]), 100)  # p = 1/200 each: 0.0099 keeps exactly 2
    np.testing.assert_array_equal(fastlm.top_p_filter(alt, 0.0099), ref.top_p_filter(alt, 0.0099).astype(np.float32))
    assert set(fastlm.sample(np.tile(alt, (50, 1)), top_p=0.0099, seed=np.arange(50)).tolist()) == {0, 1}
    for _ in range(3):
        got = fastlm.beam_search(lambda s: np.tile(z, (len(s), 1)), [0], num_beams=1, max_new_tokens=3)
        assert got[0][0].tolist() == [0, 1, 1, 1]
    masked = np.full(50257, -np.inf, np.float32)
    masked[[5, 9, 77, 300, 50000]] = [1.0, 2.0, 0.5, 3.0, 1.5]
    draws = fastlm.sample(np.tile(masked, (64, 1)), top_k=50, seed=np.arange(64))
    assert set(draws.tolist()) <= {5, 9, 77, 300, 50000}
    assert fastlm.sample(np.array([1.0, -np.inf, -np.inf]), top_k=2, seed=3) == 0
    t = np.array([0.0, 0.0, 0.0, -3.0, -3.0])
    np.testing.assert_array_equal(fastlm.typical_filter(t, 0.1, min_tokens_to_keep=2),
                                  ref.typical_filter(t, 0.1, min_tokens_to_keep=2))
    with pytest.raises(ValueError, match="temperature"):
        fastlm.sample(np.float32([-0.5, 1, 1, -2]), temperature=1e-39)
    for row in ([1.0, np.inf, 2.0], [0.0, -2000.0, -1000.0]):
        for f in (fastlm.top_p_filter, fastlm.min_p_filter):
            np.testing.assert_array_equal(f(np.array(row), 0.5, min_tokens_to_keep=2),
                                          getattr(ref, f.__name__)(np.array(row), 0.5, min_tokens_to_keep=2))
    with pytest.raises(ValueError, match="2\\^63"):
        fastlm.top_k_filter(np.zeros(4), np.uint64(2**63 + 5))


def test_cfg_mix_float16_mixes_in_float32():
    c = np.array([3, 1], np.float16)
    u = np.array([2, -4], np.float16)
    want = ref.cfg_mix(c.astype(np.float64), u.astype(np.float64), 1.5)
    got = fastlm.cfg_mix(c, u, 1.5)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-3)  # one float16 rounding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_sparse_hot_tokens_across_blocks(simd, rng, dtype):
    """A few hot tokens (some tied, some at block edges) in a cold row: the filter skips the blocks whose
    largest weight is below the cut, for collecting candidates and for writing the output."""
    V = 5000
    x = np.full((3, V), -4.0, dtype)
    x[:, ::7] += rng.standard_normal(x[:, ::7].shape).astype(dtype)  # a cold background, not all tied
    hot = [0, 255, 256, 511, 512, 1000, 2047, 2048, 4095, 4999]
    x[0, hot] = [9, 9, 8, 12, 12, 7, 9, 3, 6, 12]
    x[1, hot[::3]] = 10.0  # four equal hot tokens
    x[2, -1] = 15.0  # one dominant token in the row's last, partial block
    y = np.empty_like(x)
    for p in (0.05, 0.3, 0.5, 0.75, 0.9, 0.99) + ((0.999999,) if dtype == np.float64 else ()):
        want = ref.top_p_filter(x, p)
        got = fastlm.top_p_filter(x, p, out=y)
        np.testing.assert_array_equal(got, want.astype(dtype), err_msg=f"p={p}")
        np.testing.assert_array_equal(fastlm.top_p_filter(x, p, min_tokens_to_keep=3),
                                      ref.top_p_filter(x, p, min_tokens_to_keep=3).astype(dtype))
    inplace = x.copy()
    fastlm.top_p_filter(inplace, 0.5, out=inplace)
    np.testing.assert_array_equal(inplace, ref.top_p_filter(x, 0.5).astype(dtype))


def test_top_p_of_one_keeps_all_whatever_the_scratch_held():
    """p >= 1 keeps every token without computing weights: it must not read the previous call's scratch."""
    z = np.full((1, 5000), -np.inf)
    z[0, :10] = 1.0
    fastlm.top_k_filter(z, 2500, num_threads=1)  # leaves float64 -inf in the thread's scratch
    x = np.zeros((1, 63), np.float32)
    np.testing.assert_array_equal(fastlm.top_p_filter(x, 1.0, num_threads=1), x)


def test_sample_huge_temperature_is_uniform_over_finite_tokens():
    x = np.zeros((200, 40), np.float32)
    x[:, 30:] = -np.inf
    ids = fastlm.sample(x, temperature=1e50, top_p=0.9, seed=np.arange(200))
    assert ids.max() < 30
    assert len(np.unique(ids)) > 20  # top-p 0.9 of 30 equal tokens keeps 27 of them
