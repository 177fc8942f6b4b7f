# %% [markdown]
# # Exercises: probability, loss, decoding, calibration, scoring
#
# Ten short exercises, each a task then a solution: compute the quantity by hand in NumPy, then check it
# against fastlm with an assert. They cover the chain rule, cross-entropy with ignore_index and label
# smoothing, greedy / top-k / top-p / sampling / beam search, calibration, and lm-evaluation-harness style
# conditional scoring. Try each task before reading its solution cell.

# %%
import itertools
import math

import numpy as np

import fastlm
from fastlm import calibration as cal


def log_softmax(x):
    """Reference log-softmax along the last axis: x - max - log sum exp(x - max)."""
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# A toy bigram model shared by several exercises: P[a, b] = p(next = b | previous = a). BOS is never
# predicted (column 0 is zero, so its logit is -inf); nothing follows EOS (its row is unused).
words = ["<s>", "</s>", "the", "cat", "dog", "sat", "ran"]
BOS, EOS = 0, 1
Vw = len(words)
P = np.array([
    # <s>  </s>  the   cat   dog   sat   ran
    [0.0, 0.00, 0.60, 0.15, 0.15, 0.05, 0.05],  # <s>
    [0.0, 0.20, 0.20, 0.20, 0.20, 0.10, 0.10],  # </s> (unused)
    [0.0, 0.03, 0.05, 0.50, 0.30, 0.08, 0.04],  # the
    [0.0, 0.20, 0.10, 0.05, 0.05, 0.40, 0.20],  # cat
    [0.0, 0.50, 0.10, 0.05, 0.05, 0.10, 0.20],  # dog
    [0.0, 0.60, 0.20, 0.05, 0.05, 0.05, 0.05],  # sat
    [0.0, 0.50, 0.20, 0.05, 0.05, 0.10, 0.10],  # ran
])
assert np.allclose(P.sum(axis=1), 1)
with np.errstate(divide="ignore"):
    LOGP = np.log(P)  # the logits of the bigram model: log probabilities
ids = {w: i for i, w in enumerate(words)}
rng = np.random.default_rng(0)


def enc(text):
    return [ids[w] for w in text.split()]


# %% [markdown]
# ## Exercise 1: the chain rule
#
# With the bigram table P, compute log p("the cat sat </s>" | <s>) = sum_t log P[w_{t-1}, w_t] by hand.
# Then get it from `fastlm.sequence_logprob` by building the (1, T, V) logits a causal model would output
# (row t = the log-probabilities after token t) and the aligned targets, and get the per-token average
# with normalize="tokens". What is the perplexity of the sentence?

# %%
seq = [BOS] + enc("the cat sat </s>")
by_hand = sum(math.log(P[a, b]) for a, b in itertools.pairwise(seq))

logits = LOGP[seq[:-1]][None]               # (1, T, V): row t predicts seq[t + 1]
targets = np.array(seq[1:])[None]            # (1, T)
lp = fastlm.sequence_logprob(logits, targets)
lp_mean = fastlm.sequence_logprob(logits, targets, normalize="tokens")
assert np.isclose(lp[0], by_hand, rtol=1e-12)
assert np.isclose(lp_mean[0], by_hand / 4, rtol=1e-12)
ppl = math.exp(-by_hand / 4)
assert np.isclose(fastlm.perplexity(logits[0], targets[0]), ppl)
print(f"1. log p = {by_hand:.4f}, perplexity {ppl:.3f}")

# %% [markdown]
# ## Exercise 2: cross-entropy with ignore_index
#
# For the logits and targets below (-100 marks padding), compute by hand the mean cross-entropy over the
# non-ignored positions, the sum, and the per-position losses (0 where ignored). Check all three against
# `fastlm.cross_entropy` with reduction "mean", "sum" and "none".

# %%
x = rng.normal(size=(6, 5))
y = np.array([3, -100, 0, 4, -100, 2])
keep = y != -100
nll = np.zeros(6)
nll[keep] = -log_softmax(x[keep])[np.arange(keep.sum()), y[keep]]

assert np.isclose(fastlm.cross_entropy(x, y), nll[keep].mean())   # mean over 4 tokens, not 6
assert np.isclose(fastlm.cross_entropy(x, y, reduction="sum"), nll.sum())
assert np.allclose(fastlm.cross_entropy(x, y, reduction="none"), nll)
assert not np.isclose(nll.sum() / 6, nll[keep].mean())  # dividing by all positions would be wrong
print(f"2. mean NLL over {keep.sum()} tokens = {nll[keep].mean():.4f}")

# %% [markdown]
# ## Exercise 3: label smoothing
#
# With smoothing e, the target distribution is q = (1 - e) onehot(y) + e / V (torch's convention), so
# loss = (1 - e) (-log p_y) + e mean_v (-log p_v). Compute it by hand for e = 0.1 (with the same ignored
# positions) and check `fastlm.cross_entropy(..., label_smoothing=0.1)`. Then show that the smoothed loss
# is minimized by predicting q itself, where it equals the entropy H(q), and not by a one-hot prediction.

# %%
e = 0.1
lsm = log_softmax(x[keep])
smoothed = (1 - e) * -lsm[np.arange(keep.sum()), y[keep]] + e * -lsm.mean(axis=1)
assert np.isclose(fastlm.cross_entropy(x, y, label_smoothing=e), smoothed.mean())

V5 = 5
q = np.full(V5, e / V5)
q[2] += 1 - e
H_q = -(q * np.log(q)).sum()
loss_at_q = fastlm.cross_entropy(np.log(q)[None], [2], label_smoothing=e)
assert np.isclose(loss_at_q, H_q)                                   # CE(q, q) = H(q)
sharper = np.log(q ** 3 / (q ** 3).sum())                           # more confident than q
assert fastlm.cross_entropy(sharper[None], [2], label_smoothing=e) > loss_at_q
print(f"3. smoothed loss {smoothed.mean():.4f}; minimum H(q) = {H_q:.4f}")

# %% [markdown]
# ## Exercise 4: greedy and top-k
#
# For z = [2, 1, 3, 1, 0.5, 3]: which token does greedy decoding pick (ties go to the lowest index)?
# Which tokens does a top-k filter keep for k = 3 and k = 4? A token is kept iff z_i >= the k-th largest
# logit, so ties with the k-th value are kept. Check `fastlm.greedy` and `fastlm.top_k_filter`.

# %%
z = np.array([2.0, 1.0, 3.0, 1.0, 0.5, 3.0])
assert fastlm.greedy(z) == 2                          # 3.0 at indices 2 and 5: the lower index
for k, expected in ((3, [0, 2, 5]), (4, [0, 1, 2, 3, 5])):
    kth = np.sort(z)[::-1][k - 1]                       # the k-th largest value
    mine = np.flatnonzero(z >= kth)
    filtered = fastlm.top_k_filter(z, k)
    assert mine.tolist() == expected == np.flatnonzero(np.isfinite(filtered)).tolist()
    assert np.array_equal(filtered[mine], z[mine])      # kept logits are unchanged, the rest -inf
print("4. top-4 keeps", np.flatnonzero(np.isfinite(fastlm.top_k_filter(z, 4))).tolist(), "(ties kept)")

# %% [markdown]
# ## Exercise 5: top-p (nucleus)
#
# Sort tokens by probability, descending; keep a token iff the mass ranked strictly above it is < p. For
# four random rows of 10 logits and p = 0.8, compute the kept set by hand and compare with
# `fastlm.top_p_filter`. Check that the kept mass is >= p and that dropping the least likely kept token
# would bring it below p (the nucleus is minimal).

# %%
Z = rng.normal(0, 1.5, size=(4, 10))
p_nuc = 0.8
probs = np.exp(log_softmax(Z))
order = np.argsort(-probs, axis=1, kind="stable")
sorted_p = np.take_along_axis(probs, order, axis=1)
above = np.cumsum(sorted_p, axis=1) - sorted_p            # mass ranked strictly above each token
mine = np.zeros_like(Z, bool)
np.put_along_axis(mine, order, above < p_nuc, axis=1)
theirs = np.isfinite(fastlm.top_p_filter(Z, p_nuc))
assert np.array_equal(mine, theirs)
kept_mass = (probs * theirs).sum(axis=1)
smallest_kept = np.where(theirs, probs, np.inf).min(axis=1)
assert (kept_mass >= p_nuc).all() and (kept_mass - smallest_kept < p_nuc).all()
print("5. nucleus sizes", theirs.sum(axis=1).tolist())

# %% [markdown]
# ## Exercise 6: sampling with a seed
#
# `fastlm.sample` draws one token per row: temperature, then top-k, then top-p, then a draw. (a) With
# temperature 0 it is greedy. (b) The same seed gives the same draw. (c) Sampling the bigram row after
# "the" with top_k=3 20,000 times (one seed per row) gives frequencies close to the top-3 probabilities
# renormalized, and never a token outside the top 3. Compute that renormalized distribution by hand.

# %%
row = LOGP[ids["the"]]
assert fastlm.sample(row, temperature=0.0, seed=1) == fastlm.greedy(row)          # (a)
assert fastlm.sample(row, seed=123) == fastlm.sample(row, seed=123)               # (b)

top3 = np.argsort(-P[ids["the"]])[:3]
target = np.zeros(Vw)
target[top3] = P[ids["the"], top3] / P[ids["the"], top3].sum()                    # renormalized top-3
n = 20000
draws = fastlm.sample(np.tile(row, (n, 1)), top_k=3, seed=np.arange(n))
freq = np.bincount(draws, minlength=Vw) / n
assert set(np.unique(draws)) <= set(top3.tolist())                                # (c)
assert np.abs(freq - target).max() < 0.02  # ~6 standard errors (sqrt(0.25 / n) = 0.0035)
print("6. top-3 target", np.round(target[top3], 3), "sampled", np.round(freq[top3], 3))

# %% [markdown]
# ## Exercise 7: beam search beats greedy
#
# Tokens: 0 = EOS, 1 = A, 2 = B, 3 = BOS. The toy model reads only the last token: after BOS, A (0.6) or
# B (0.4); after A the next token is spread out (EOS 0.35, A 0.33, B 0.32); after B it is EOS with 0.9.
# With 2 new tokens at most, enumerate every continuation and its log probability, find the best, and
# check that `fastlm.beam_search` with 2 beams (length_penalty=0: the score is the plain sum of log p)
# finds it, while greedy decoding does not.

# %%
T = np.array([[0.00, 0.60, 0.40, 0.0],   # after EOS (unused)
              [0.35, 0.33, 0.32, 0.0],   # after A
              [0.90, 0.05, 0.05, 0.0],   # after B
              [0.00, 0.60, 0.40, 0.0]])  # after BOS
with np.errstate(divide="ignore"):
    LT = np.log(T)


def step(seqs):
    return LT[seqs[:, -1]]                       # (R, V) next-token logits


# every continuation: EOS at once, or two tokens (cut at max_new_tokens)
cands = {(0,): LT[3, 0]}
cands.update({(a, b): LT[3, a] + LT[a, b] for a in (1, 2) for b in (0, 1, 2)})
best = max(cands, key=cands.get)
greedy_seq = (int(np.argmax(LT[3])), int(np.argmax(LT[np.argmax(LT[3])])))
assert best == (2, 0) and greedy_seq == (1, 0)   # B EOS (0.36) beats A EOS (0.21)

beams = fastlm.beam_search(step, np.array([3]), num_beams=2, max_new_tokens=2, eos_id=0, length_penalty=0.0)
top_ids, top_score = beams[0]
assert top_ids.tolist() == [3, *best] and np.isclose(top_score, cands[best])
print(f"7. beam: {top_ids.tolist()} p = {math.exp(top_score):.2f}; greedy: p = {math.exp(cands[greedy_seq]):.2f}")

# %% [markdown]
# ## Exercise 8: calibration and temperature scaling
#
# Labels are drawn from softmax(z), so softmax(z) is calibrated; the model outputs 2.5 z (overconfident).
# (a) Compute the ECE with 10 equal-width bins ((m-1)/10, m/10] by hand and check
# `fastlm.calibration.expected_calibration_error`. (b) Find the temperature T minimizing the mean NLL of
# softmax(logits / T) by a grid search and compare with `fastlm.calibration.fit_temperature` (it should
# be close to 2.5). (c) Check that dividing by the fitted T lowers the ECE.

# %%
N, C = 20000, 8
zc = rng.normal(0, 1.5, size=(N, C))
labels = (np.cumsum(np.exp(log_softmax(zc)), axis=1) > rng.random((N, 1))).argmax(axis=1)  # y ~ softmax(z)
model = 2.5 * zc


def ece_by_hand(logits, y, M=10):
    p = np.exp(log_softmax(logits))
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    b = np.clip(np.ceil(conf * M).astype(int) - 1, 0, M - 1)      # bin of ((m-1)/M, m/M]
    gap = np.abs(np.bincount(b, correct, M) - np.bincount(b, conf, M))  # = n_b |acc_b - conf_b|
    return gap.sum() / len(y), conf, correct                           # sum_b (n_b / n) |acc_b - conf_b|


ece_before, conf, correct = ece_by_hand(model, labels)
assert np.isclose(cal.expected_calibration_error(conf, correct, n_bins=10), ece_before)   # (a)

grid = np.linspace(1.0, 4.0, 301)
nll_grid = [np.mean(-log_softmax(model / t)[np.arange(N), labels]) for t in grid]
T_grid = grid[int(np.argmin(nll_grid))]
T_fit = cal.fit_temperature(model, labels)
assert abs(T_fit - T_grid) <= 0.01 + 1e-9 and abs(T_fit - 2.5) < 0.15                   # (b)
ece_after, _, _ = ece_by_hand(model / T_fit, labels)
assert ece_after < ece_before / 3                                                         # (c)
print(f"8. T = {T_fit:.3f} (grid {T_grid:.2f}); ECE {ece_before:.3f} -> {ece_after:.3f}")

# %% [markdown]
# ## Exercise 9: shifted targets with padding
#
# A causal LM's logits at position t predict token t + 1. For the batch below (row 0 right-padded, row 1
# left-padded, pad id 0), build the targets by hand: targets[b, t] = ids[b, t + 1] where positions t and
# t + 1 are both real tokens, else -100. Check `fastlm.causal_targets`, then check that the mean
# cross-entropy of the bigram model's logits against them averages exactly the real next-token pairs.

# %%
batch = np.array([[BOS, *enc("the cat sat </s>"), 0, 0],
                  [0, 0, 0, BOS, *enc("the dog </s>")]])
mask = np.array([[1, 1, 1, 1, 1, 0, 0],
                 [0, 0, 0, 1, 1, 1, 1]])
mine = np.full(batch.shape, -100)
for b in range(2):
    for t in range(batch.shape[1] - 1):
        if mask[b, t] and mask[b, t + 1]:
            mine[b, t] = batch[b, t + 1]
assert np.array_equal(fastlm.causal_targets(batch, mask), mine)

pairs = [(a, c) for b in range(2) for a, c, m0, m1 in zip(batch[b], batch[b, 1:], mask[b], mask[b, 1:]) if m0 and m1]
mean_nll = -np.mean([math.log(P[a, c]) for a, c in pairs])      # 4 + 3 real pairs
assert len(pairs) == 7 and np.isclose(fastlm.cross_entropy(LOGP[batch], mine), mean_nll)
print(f"9. {len(pairs)} scored pairs, mean NLL {mean_nll:.4f}")

# %% [markdown]
# ## Exercise 10: multiple choice, lm-evaluation-harness style
#
# Context "<s> the" and three continuations: "cat sat </s>", "dog </s>", "dog ran </s>". Each row
# holds the context then the continuation (right-padded), and the model's logits are the bigram
# log-probabilities of each token. By hand: the log-likelihood of each continuation (the sum of
# log P[prev, tok] over its tokens only) and is_greedy (each of its tokens is the argmax after its
# previous token). Check `fastlm.score_continuations` and `fastlm.loglikelihood`; then the choice by
# total log-likelihood (acc) and per character (acc_norm) with `fastlm.choose`. Note that the greedy
# continuation is not the most likely one, and that normalizing by length changes the answer.

# %%
context = [BOS] + enc("the")
choices = ["cat sat </s>", "dog </s>", "dog ran </s>"]
rows = [context + enc(c) for c in choices]
L = max(map(len, rows))
input_ids = np.array([r + [0] * (L - len(r)) for r in rows])
attn = np.array([[1] * len(r) + [0] * (L - len(r)) for r in rows])
ctx_len = np.full(3, len(context))
logits = LOGP[input_ids]                                          # (3, L, V): row t predicts token t + 1

ll_hand, greedy_hand = [], []
for r in rows:
    prev, cont = r[len(context) - 1:-1], r[len(context):]
    ll_hand.append(sum(math.log(P[a, c]) for a, c in zip(prev, cont)))
    greedy_hand.append(all(np.argmax(P[a]) == c for a, c in zip(prev, cont)))

ll, is_greedy = fastlm.score_continuations(logits, input_ids, ctx_len, attention_mask=attn)
assert np.allclose(ll, ll_hand) and is_greedy.tolist() == greedy_hand
assert fastlm.loglikelihood(logits, input_ids, ctx_len, attention_mask=attn) == [
    (float(a), bool(g)) for a, g in zip(ll, is_greedy)]

chars = np.array([len(" " + c) for c in choices])                 # the continuation's text, leading space
acc_pick, norm_pick = fastlm.choose(ll), fastlm.choose(ll, lengths=chars, normalize="chars")
assert acc_pick == int(np.argmax(ll_hand)) and norm_pick == int(np.argmax(np.array(ll_hand) / chars))
assert greedy_hand == [True, False, False] and (acc_pick, norm_pick) == (1, 0)  # 0.15 > 0.12 in total, not per char
print(f"10. log-likelihoods {np.round(ll, 3).tolist()}, greedy {is_greedy.tolist()}; "
      f"acc picks {choices[acc_pick]!r}, acc_norm picks {choices[norm_pick]!r}")
