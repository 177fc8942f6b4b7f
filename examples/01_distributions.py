# %% [markdown]
# # Language models as probability distributions
#
# A toy bigram model over five words plus BOS and EOS: the chain rule, why an end-of-sequence token (EOS)
# makes the probabilities of all finite sequences add up to 1, sequence log-probabilities by hand and
# with `fastlm.sequence_logprob`, and scoring only the answer that follows a prompt.

# %%
import itertools
import os
import pathlib
import tempfile

import numpy as np
from matplotlib.figure import Figure

import fastlm

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A bigram model
#
# P[a, b] = p(next = b | previous = a). Row `<s>` (BOS) gives the first word; BOS is never predicted
# (column 0 is zero) and nothing follows `</s>` (EOS), so its row is unused. Every used row sums to 1.

# %%
vocab = ["<s>", "</s>", "the", "cat", "dog", "sat", "ran"]
BOS, EOS = 0, 1
WORDS = list(range(2, len(vocab)))  # the ids a sentence is made of
ID = {w: i for i, w in enumerate(vocab)}
V = len(vocab)

P = np.zeros((V, V))
#            <s>  </s>  the   cat   dog   sat   ran
P[BOS] = [0.0, 0.0, 0.70, 0.10, 0.10, 0.05, 0.05]
P[ID["the"]] = [0.0, 0.05, 0.05, 0.40, 0.40, 0.05, 0.05]
P[ID["cat"]] = [0.0, 0.30, 0.10, 0.00, 0.00, 0.35, 0.25]
P[ID["dog"]] = [0.0, 0.30, 0.10, 0.00, 0.00, 0.20, 0.40]
P[ID["sat"]] = [0.0, 0.60, 0.30, 0.00, 0.00, 0.05, 0.05]
P[ID["ran"]] = [0.0, 0.60, 0.30, 0.00, 0.00, 0.05, 0.05]
used = [BOS] + WORDS
np.testing.assert_allclose(P[used].sum(axis=1), 1.0)

# %% [markdown]
# ## The chain rule
#
# p(w_1 .. w_n) = p(w_1 | <s>) p(w_2 | w_1) ... p(w_n | w_{n-1}) p(</s> | w_n): a bigram model keeps only
# the previous token of the history; the final factor says "the sentence ends here".

# %%
def sentence_prob(words, with_eos=True):
    ids = [BOS] + [ID[w] for w in words] + ([EOS] if with_eos else [])
    return float(np.prod([P[a, b] for a, b in itertools.pairwise(ids)]))


for s in ("the cat sat", "the dog ran", "the cat sat the dog ran"):
    print(f"p({s!r} </s>) = {sentence_prob(s.split()):.6f}")

# %% [markdown]
# ## Why EOS is needed
#
# With EOS, the sentences of length n have total probability
# S_n = sum over w_1..w_n of p(w_1 .. w_n, </s>), and sum_n S_n = 1: each step either stops or continues,
# so the mass not yet assigned after length L is exactly the probability of the unfinished prefixes of
# length L, which shrinks geometrically. We enumerate every sequence of the 5 words up to length 8 (488,280 of them).

# %%
def length_totals(T, start, stop, max_len):
    """For n = 1..max_len: (sum of the prefix probabilities of all w_1..w_n, sum of those times stop[w_n]),
    enumerating the |W|^n sequences explicitly."""
    prefix, ended = [], []
    for n in range(1, max_len + 1):
        pre = end = 0.0
        for seq in itertools.product(range(len(start)), repeat=n):
            p = start[seq[0]] * np.prod([T[a, b] for a, b in itertools.pairwise(seq)])
            pre += p
            end += p * stop[seq[-1]]
        prefix.append(pre)
        ended.append(end)
    return np.array(prefix), np.array(ended)


W = np.array(WORDS)
start, T, stop = P[BOS, W], P[np.ix_(W, W)], P[W, EOS]  # first word, word -> word, word -> EOS
L = 8
prefix_mass, S = length_totals(T, start, stop, L)
cum = np.cumsum(S)
for n in range(L):
    print(f"  length {n + 1}: S_n = {S[n]:.5f}, sum up to n = {cum[n]:.5f}, unfinished = {prefix_mass[n] - S[n]:.5f}")

# mass conservation: what has ended plus the unfinished prefixes of length n (prefix mass without EOS)
np.testing.assert_allclose(cum + (prefix_mass - S), 1.0, rtol=1e-12)
assert np.all(np.diff(cum) > 0) and cum[-1] < 1.0

# the limit, in closed form: sum_n start T^(n-1) stop = start (I - T)^-1 stop = 1
total = start @ np.linalg.solve(np.eye(len(W)) - T, stop)
np.testing.assert_allclose(total, 1.0, rtol=1e-12)
assert 1 - cum[-1] < 0.05  # already within 5 % after length 8

# %% [markdown]
# Without EOS, a model that always continues (the word -> word rows renormalized) gives a distribution
# over sequences *of each fixed length*: every S_n is 1, so summed over lengths the total is L, not 1.
# It does not say how long a sentence is, so it is not a distribution over all finite sequences.

# %%
T_no_eos = T / T.sum(axis=1, keepdims=True)
_, S_no_eos = length_totals(T_no_eos, start / start.sum(), np.ones(len(W)), L)
np.testing.assert_allclose(S_no_eos, 1.0, rtol=1e-12)
print(f"without EOS, per-length sums {np.round(S_no_eos, 6)}: total {S_no_eos.sum():.1f} over lengths 1..{L}")

fig = Figure(figsize=(6, 3.5))
ax = fig.add_subplot()
n = np.arange(1, L + 1)
ax.plot(n, cum, "o-", label="with EOS: sum of p(seq) up to length n")
ax.plot(n, np.cumsum(S_no_eos), "s--", label="without EOS: grows by 1 per length")
ax.axhline(1.0, color="gray", ls=":")
ax.set(xlabel="maximum length n", ylabel="total probability", title="Sequence probabilities and EOS")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "01_eos_mass.png", dpi=100)

# %% [markdown]
# ## Sequence log-probability: by hand and with `fastlm.sequence_logprob`
#
# A neural LM outputs logits, not probabilities: row t holds z_t with p(. | history) = softmax(z_t). We
# turn the table into logits z = log P + c_t (any per-row shift c_t gives the same softmax), for a batch of
# sentences right-padded to one length. `causal_targets` shifts the inputs once: position t predicts
# token t + 1, and padding becomes ignore_index. Then log p(sentence) = sum_t log softmax(z_t)[target_t].

# %%
sentences = ["the cat sat", "the dog ran the cat sat", "dog ran"]
ids = [[BOS] + [ID[w] for w in s.split()] + [EOS] for s in sentences]
Tmax = max(map(len, ids))
input_ids = np.zeros((len(ids), Tmax), np.int64)
attention = np.zeros((len(ids), Tmax), np.int64)
for b, s in enumerate(ids):
    input_ids[b, :len(s)] = s
    attention[b, :len(s)] = 1

rng = np.random.default_rng(0)
with np.errstate(divide="ignore"):
    logits = np.log(P)[input_ids] + rng.normal(0, 5, size=(len(ids), Tmax, 1))  # -inf: impossible tokens
targets = fastlm.causal_targets(input_ids, attention)

lp = fastlm.sequence_logprob(logits, targets)
by_hand = np.array([np.log(sentence_prob(s.split())) for s in sentences])
for s, a, h in zip(sentences, lp, by_hand):
    print(f"log p({s!r} </s>): fastlm {a:.6f}, by hand {h:.6f}")
np.testing.assert_allclose(lp, by_hand, rtol=1e-12)

# mean log-probability per predicted token (words + EOS)
per_token = fastlm.sequence_logprob(logits, targets, normalize="tokens")
np.testing.assert_allclose(per_token, by_hand / np.array([len(s.split()) + 1 for s in sentences]), rtol=1e-12)

# %% [markdown]
# ## Prefix vs answer scoring
#
# For a prompt x and an answer y, the chain rule splits log p(x, y) = log p(x) + log p(y | x). Scoring a
# multiple-choice answer uses only log p(y | x): the positions that predict the answer tokens.
# `prompt_lengths[b]` = the number of target positions that predict prompt tokens (here the prompt words;
# BOS is never a target), or equivalently a mask that is true on the answer's positions.

# %%
prompt = "the cat"
answers = ["sat", "ran", "the"]
rows = [[BOS] + [ID[w] for w in f"{prompt} {a}".split()] + [EOS] for a in answers]
x_ids = np.array(rows)
with np.errstate(divide="ignore"):
    x_logits = np.log(P)[x_ids]
x_targets = fastlm.causal_targets(x_ids)
n_prompt = len(prompt.split())

answer_lp = fastlm.sequence_logprob(x_logits, x_targets, prompt_lengths=np.full(len(answers), n_prompt))
mask = np.arange(x_ids.shape[1])[None, :] >= n_prompt
answer_lp_mask = fastlm.sequence_logprob(x_logits, x_targets, mask=np.broadcast_to(mask, x_targets.shape))
full_lp = fastlm.sequence_logprob(x_logits, x_targets)

for a, s in zip(answers, answer_lp):
    print(f"log p({a!r} </s> | {prompt!r}) = {s:.4f}")
# by hand: p(answer | "cat") p(</s> | answer)
expect = np.log([P[ID["cat"], ID[a]] * P[ID[a], EOS] for a in answers])
np.testing.assert_allclose(answer_lp, expect, rtol=1e-12)
np.testing.assert_allclose(answer_lp_mask, answer_lp, rtol=1e-12)
# chain rule: full = prompt (no EOS after it) + answer
np.testing.assert_allclose(full_lp, np.log(sentence_prob(prompt.split(), with_eos=False)) + answer_lp, rtol=1e-12)
best = answers[int(np.argmax(answer_lp))]
assert best == "sat"  # 0.35 * 0.6 beats 0.25 * 0.6 and 0.10 * 0.05
print(f"best answer after {prompt!r}: {best!r}; figure: {OUT / '01_eos_mass.png'}")
