"""fastlm.diagnostics: each check silent on a correct batch and catching each planted bug at the right
positions; the measurements against NumPy references; the C row pass on every SIMD level; the CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import fastlm
import fastlm.diagnostics as dg
import fastlm.reference as ref
from fastlm import _kernels


@pytest.fixture
def rng():
    return np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_row_stats_against_reference(simd, rng, dtype):
    x = (rng.normal(size=(9, 37)) * 20).astype(dtype)
    x[1, 3], x[2, :] = np.nan, -np.inf
    x[3, 5], x[3, 6], x[4, 0] = np.inf, -np.inf, np.nan
    x[5, :] = np.inf
    got = _kernels.row_stats(np.ascontiguousarray(x.astype(np.float32) if dtype == np.float16 else x))
    want = ref.row_stats(x)
    for k in ("nan", "posinf", "neginf"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    for k in ("min", "max", "sum"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


def test_check_distribution_silent_on_distributions(rng):
    x = rng.normal(size=(3, 5, 40)) * 3
    t = rng.integers(0, 40, (3, 5))
    assert dg.check_distribution(x, targets=t).ok
    assert dg.check_distribution(fastlm.log_softmax(x), kind="log_probs", targets=t).ok
    assert dg.check_distribution(fastlm.softmax(x).astype(np.float32), kind="probs", targets=t).ok
    masked = x.copy()
    masked[..., 7] = -np.inf  # a masked token that no target needs is fine
    assert dg.check_distribution(masked, targets=np.where(t == 7, 8, t)).ok


def test_check_distribution_catches_each_bug(rng):
    x = rng.normal(size=(4, 6, 30))
    x[1, 2, 3] = np.nan
    x[2, 4, :] = -np.inf
    x[3, 0, 9] = np.inf
    t = rng.integers(0, 30, (4, 6))
    x[0, 5, t[0, 5]] = -np.inf  # the reference token masked out
    r = dg.check_distribution(x, targets=np.where((np.arange(4)[:, None] == 2) & (np.arange(6) == 4), -100, t))
    found = {f.name: f for f in r.findings}
    assert set(found) == {"nan", "posinf", "empty", "zero_probability_target"}
    assert found["nan"].positions.tolist() == [[1, 2]] and found["empty"].positions.tolist() == [[2, 4]]
    assert found["posinf"].positions.tolist() == [[3, 0]]
    assert found["zero_probability_target"].positions.tolist() == [[0, 5]]
    assert "[nan]" in str(r) and "(1, 2)" in str(r)
    p = fastlm.softmax(rng.normal(size=(5, 20)))
    p[1] *= 1.1
    p[3, 2] = -0.01
    r = dg.check_distribution(p, kind="probs")
    assert [f.positions.tolist() for f in r.findings] == [[[3]], [[1], [3]]]
    assert [f.name for f in r.findings] == ["out_of_range", "not_normalized"]
    lp = fastlm.log_softmax(rng.normal(size=(4, 20)))
    lp[0] += 0.5
    lp[2, 1] = 0.7
    r = dg.check_distribution(lp, kind="log_probs")
    assert {f.name: f.positions.ravel().tolist() for f in r.findings} == {"positive": [2], "not_normalized": [0, 2]}


def test_check_distribution_bad_input(rng):
    with pytest.raises(ValueError, match="kind"):
        dg.check_distribution(np.zeros((2, 3)), kind="logit")
    with pytest.raises(ValueError, match=r"targets\[1\] is 3"):
        dg.check_distribution(np.zeros((2, 3)), targets=[0, 3])
    with pytest.raises(ValueError, match="targets has shape"):
        dg.check_distribution(np.zeros((2, 3)), targets=[0])
    with pytest.raises(TypeError, match="x must be"):
        dg.check_distribution(np.zeros((2, 3), int))


def batch(rng, B=4, T=10, V=50, pad=0, eos=1):
    """A correct right-padded batch: ids with EOS at each row's end, mask, targets shifted once."""
    lengths = [10, 7, 9, 5][:B]
    ids = np.full((B, T), pad)
    for b, n in enumerate(lengths):
        ids[b, :n - 1] = rng.integers(2, V, n - 1)
        ids[b, n - 1] = eos
    mask = (np.arange(T) < np.array(lengths)[:, None]).astype(int)
    return ids, mask, fastlm.causal_targets(ids, mask), rng.normal(size=(B, T, V)) * 0.05


def test_check_training_batch_silent_on_a_correct_batch(rng):
    ids, mask, t, logits = batch(rng)
    ce = fastlm.cross_entropy(logits, t)
    r = dg.check_training_batch(logits, ids, t, mask, pad_id=0, eos_id=1, at_init=True, loss=ce)
    assert r.ok, str(r)
    assert r.stats["loss"] == pytest.approx(ce) and r.stats["agreement at shift 1"] == 1.0
    assert r.stats["counted positions"] == int((t != -100).sum())


def test_check_training_batch_catches_each_planted_bug(rng):
    ids, mask, t, logits = batch(rng)

    def names(*args, **kw):
        return {f.name for f in dg.check_training_batch(logits, ids, *args, **kw).findings}

    assert names(np.where(mask == 1, ids, -100), mask) == {"not_shifted"}
    twice = np.full_like(t, -100)
    twice[:, :-2] = np.where(mask[:, 2:] == 1, ids[:, 2:], -100)
    assert names(twice, mask) == {"shifted_twice"}
    unmasked = ids.copy()
    unmasked[:, :-1] = ids[:, 1:]
    unmasked[:, -1] = -100
    got = dg.check_training_batch(logits, ids, unmasked, mask)
    assert {f.name for f in got.findings} == {"padding_in_loss"}
    pad_positions = np.argwhere((unmasked != -100) & (mask == 0)).tolist()
    assert got.findings[0].positions.tolist() == pad_positions[:10]
    assert names(np.where(t == -100, -1, t), mask) == {"ignore_index_mismatch"}
    assert "pass ignore_index=-1" in str(dg.check_training_batch(logits, ids, np.where(t == -100, -1, t), mask))
    gpt2_style = np.where(t == 1, -100, t)  # labels[ids == pad] = -100 with pad == eos masks the EOS targets
    r = dg.check_training_batch(logits, np.where(mask == 1, ids, 1), gpt2_style, mask, pad_id=1, eos_id=1)
    assert {f.name for f in r.findings} == {"eos_masked"}
    assert names(gpt2_style, mask, eos_id=1) == {"no_eos_target"}
    r = dg.check_training_batch(logits * 200, ids, t, mask, at_init=True)
    assert {f.name for f in r.findings} == {"initial_loss"} and "too large" in str(r)


def test_check_training_batch_names_the_loss_convention(rng):
    ids, mask, t, logits = batch(rng)
    logits = logits * 40

    def finding(loss, **kw):
        r = dg.check_training_batch(logits, ids, t, mask, loss=loss, **kw)
        return [f.message for f in r.findings if f.name == "loss_mismatch"]

    assert finding(fastlm.cross_entropy(logits, t)) == []
    assert "label_smoothing=0.1" in finding(fastlm.cross_entropy(logits, t, label_smoothing=0.1))[0]
    assert "label_smoothing=0.0" in finding(fastlm.cross_entropy(logits, t), label_smoothing=0.2)[0]
    assert "sum over positions" in finding(fastlm.cross_entropy(logits, t, reduction="sum"))[0]
    assert "mean over all 40 positions" in finding(fastlm.cross_entropy(logits, t, reduction="sum") / 40)[0]
    assert "matches none" in finding(123.0)[0]


def test_check_training_batch_bad_input(rng):
    ids, mask, t, logits = batch(rng)
    with pytest.raises(ValueError, match="logits must be"):
        dg.check_training_batch(logits[0], ids, t)
    with pytest.raises(ValueError, match="input_ids"):
        dg.check_training_batch(logits, ids[:, :3], t)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        dg.check_training_batch(logits, ids, t, mask[:2])
    with pytest.raises(ValueError, match="label_smoothing"):
        dg.check_training_batch(logits, ids, t, label_smoothing=2.0)


def test_distribution_shift_against_reference(rng):
    a, b = rng.normal(size=(3, 4, 25)) * 2, rng.normal(size=(3, 4, 25)) * 2
    b[..., 3] = -np.inf
    keep = rng.random((3, 4)) < 0.7
    r = dg.distribution_shift(a, b, mask=keep)
    np.testing.assert_allclose(r.arrays["kl_ab"], ref.kl_divergence(a, b), rtol=1e-9)
    np.testing.assert_allclose(r.arrays["kl_ba"], ref.kl_divergence(b, a), rtol=1e-9)
    np.testing.assert_allclose(r.arrays["js"], ref.js_divergence(a, b), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(r.arrays["entropy_b"], ref.entropy(b), rtol=1e-9)
    assert r.stats["mean js"] == pytest.approx(ref.js_divergence(a, b)[keep].mean())
    assert np.all(ref.js_divergence(a, b) <= math.log(2) + 1e-12)
    assert dg.distribution_shift(a, a).stats["mean js"] == pytest.approx(0, abs=1e-15)


def test_compare_eval_sets(rng):
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = rng.normal(size=(2, 3000, 30)), rng.integers(0, 30, (2, 3000))
    same = dg.compare_eval_sets(x[0], y[0], x[1], y[1])
    assert same.ok, str(same)
    sharp = x[1] * 4  # a model far more confident on set b
    r = dg.compare_eval_sets(x[0], y[0], sharp, y[1], names=("dev", "test"))
    assert "nll_shift" in r
    nll_a = ref.cross_entropy(x[0], y[0], reduction="none")
    nll_b = ref.cross_entropy(sharp, y[1], reduction="none")
    assert r.stats["KS statistic"] == pytest.approx(scipy_stats.ks_2samp(nll_a, nll_b).statistic)
    assert r.stats["test mean NLL"] == pytest.approx(nll_b.mean())
    assert r.stats["dev perplexity"] == pytest.approx(np.exp(nll_a.mean()))


def test_generation_vs_evaluation(rng):
    gen, held = rng.normal(size=(2, 3, 8, 20))
    gen_tok = np.argmax(gen, -1)  # the model's own (greedy) tokens: low NLL
    held_tok = rng.integers(0, 20, (3, 8))
    held_tok[0, -2:] = -100
    r = dg.generation_vs_evaluation(gen, gen_tok, held, held_tok)
    live = held_tok != -100
    want_held = ref.cross_entropy(held[live], held_tok[live], reduction="none").mean()
    assert r.stats["held-out mean NLL"] == pytest.approx(want_held)
    assert r.stats["gap (held-out - generated)"] > 0
    nll = ref.cross_entropy(held.reshape(-1, 20), np.where(live, held_tok, 0).ravel(), reduction="none").reshape(3, 8)
    np.testing.assert_allclose(r.arrays["held-out NLL by position"], np.where(live, nll, 0).sum(0) / live.sum(0))


def test_decoding_effect_against_reference(rng):
    x = rng.normal(size=(4, 60)) * 2
    r = dg.decoding_effect(x, temperature=0.7, top_k=20, top_p=0.8, min_p=0.05)
    assert list(r.stats) == ["model", "temperature 0.7", "top-k 20", "top-p 0.8", "min-p 0.05"]
    p = ref.softmax(x)
    z = x / 0.7
    for stage, f in (("temperature 0.7", lambda v: v), ("top-k 20", lambda v: ref.top_k_filter(v, 20)),
                     ("top-p 0.8", lambda v: ref.top_p_filter(v, 0.8)), ("min-p 0.05", lambda v: ref.min_p_filter(v, 0.05))):
        z = f(z)
        kept = z > -np.inf
        q = ref.softmax(z)
        got = r.stats[stage]
        assert got["kept"] == pytest.approx(kept.sum(-1).mean())
        assert got["mass_removed"] == pytest.approx((1 - (p * kept).sum(-1)).mean(), abs=1e-12)
        assert got["entropy"] == pytest.approx(ref.entropy(z).mean())
        kl = np.sum(np.where(kept, q * (np.log(np.where(kept, q, 1)) - np.log(p)), 0), -1)
        assert got["kl_from_model"] == pytest.approx(kl.mean(), rel=1e-9, abs=1e-12)
    assert r.stats["temperature 0.7"]["mass_removed"] == pytest.approx(0, abs=1e-12)  # temperature moves mass
    hist = rng.integers(0, 60, (4, 5))
    r = dg.decoding_effect(x, token_history=hist, repetition_penalty=1.5)
    assert list(r.stats) == ["model", "penalties"] and r.stats["penalties"]["kl_from_model"] > 0
    with pytest.raises(ValueError, match="token_history"):
        dg.decoding_effect(x, repetition_penalty=1.3)


def test_plots(rng):
    pytest.importorskip("matplotlib")
    fig = dg.plot_nll_histogram({"a": rng.exponential(size=200), "b": rng.exponential(2, size=100)})
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("NLL") and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a (n = 200)", "b (n = 100)"]
    x = rng.normal(size=(3, 7, 10))
    fig = dg.plot_entropy_by_position({"model": x}, mask=np.ones((3, 7)))
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), ref.entropy(x).mean(0))


def test_cli_diagnose(tmp_path, rng):
    ids, mask, t, logits = batch(rng)
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, logits=logits, input_ids=ids, targets=t, attention_mask=mask)
    np.savez(bad, logits=logits, input_ids=ids, targets=np.where(mask == 1, ids, -100), attention_mask=mask)
    run = [sys.executable, "-m", "fastlm.cli", "diagnose"]
    ok = subprocess.run(run + [str(good), "--eos-id", "1", "--pad-id", "0"], capture_output=True, text=True)
    assert ok.returncode == 0 and "no problem found" in ok.stdout, ok.stdout + ok.stderr
    found = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert found.returncode == 1 and "[not_shifted]" in found.stdout
    np.savez(bad, input_ids=ids)
    err = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert err.returncode == 2 and "needs logits" in err.stderr
