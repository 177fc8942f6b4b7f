# %% [markdown]
# # Diagnosing the probability bugs of training and evaluation code
# A toy causal LM and a correctly built training batch, then the common bugs planted one at a time:
# fastlm.diagnostics stays silent on the correct batch and names each bug with its evidence. Then the
# checks for evaluation: two eval sets, a model against itself, generations against held-out text.

# %%
import os
import pathlib
import tempfile

import numpy as np

import fastlm
from fastlm import diagnostics as dg

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
rng = np.random.default_rng(0)
V, B, T, PAD, EOS = 64, 6, 16, 0, 1

# A toy LM: logits[b, t] depend on input_ids[b, t] only (an embedding and an output layer), small at
# initialization so that its predictions start near uniform: loss ~ log V.
emb, out = rng.normal(0, 1, (V, 32)), rng.normal(0, 0.02, (V, 32))


def model(ids, out_scale=1.0):
    return emb[ids] @ (out * out_scale).T


# Right-padded sequences, each ending with EOS, and the attention mask.
lengths = rng.integers(6, T + 1, B)
ids = np.full((B, T), PAD)
for b, n in enumerate(lengths):
    ids[b, :n - 1], ids[b, n - 1] = rng.integers(2, V, n - 1), EOS
mask = (np.arange(T) < lengths[:, None]).astype(int)

# %% [markdown]
# ## The correct batch
# targets[b, t] = input_ids[b, t + 1] where both positions are real, else ignore_index (-100):
# fastlm.causal_targets does the shift once. The loss at initialization is close to log V.

# %%
targets = fastlm.causal_targets(ids, mask)
logits = model(ids)
report = dg.check_training_batch(logits, ids, targets, mask, pad_id=PAD, eos_id=EOS, at_init=True,
                                 loss=fastlm.cross_entropy(logits, targets))
print(report)
assert report.ok and abs(report.stats["loss"] - np.log(V)) < 0.1

# %% [markdown]
# ## Each bug, planted
# Every planted bug below is a line people write; the report names it (in brackets) with its evidence.


# %%
def plant(name, **kw):
    args = dict(logits=logits, input_ids=ids, targets=targets, attention_mask=mask, pad_id=PAD, eos_id=EOS)
    args.update(kw)
    r = dg.check_training_batch(args.pop("logits"), args.pop("input_ids"), args.pop("targets"), **args)
    print(f"--- {name}\n{r}\n")
    return {f.name for f in r.findings}


labels_unshifted = np.where(mask == 1, ids, -100)  # "labels = input_ids" fed to a loss that does not shift
assert "not_shifted" in plant("targets not shifted", targets=labels_unshifted)

twice = np.full_like(targets, -100)
twice[:, :-1] = targets[:, 1:]  # causal_targets(...) given to a model that shifts labels again
assert "shifted_twice" in plant("targets shifted twice", targets=twice)

unmasked = np.full_like(ids, -100)
unmasked[:, :-1] = ids[:, 1:]  # the shift done without the mask: padding becomes targets
assert "padding_in_loss" in plant("padding counted in the loss", targets=unmasked)

minus_one = np.where(targets == -100, -1, targets)  # the data marks ignored positions with -1
assert "ignore_index_mismatch" in plant("ignore_index mismatch", targets=minus_one)

# GPT-2's convention pad_id == eos_id, and "labels[input_ids == pad_id] = -100": every real EOS is masked.
ids_eos_pad = np.where(mask == 1, ids, EOS)
masked_eos = np.where(np.roll(ids_eos_pad, -1, axis=1) == EOS, -100, fastlm.causal_targets(ids_eos_pad, mask))
assert "eos_masked" in plant("EOS masked with the padding", input_ids=ids_eos_pad, targets=masked_eos, pad_id=EOS)

big = model(ids, out_scale=200.0)  # an output layer initialized 200x too large
assert "initial_loss" in plant("initial loss far from log V", logits=big, at_init=True)

smoothed = fastlm.cross_entropy(logits * 50, targets, label_smoothing=0.1)  # the trainer smooths, the config says 0
assert "loss_mismatch" in plant("label smoothing mismatch", logits=logits * 50, loss=smoothed)

# %% [markdown]
# ## Support problems and broken rows
# A filter or a vocabulary mismatch can give the reference token probability 0 (its NLL is infinite),
# and float16 logits overflow to inf: check_distribution reads every row once (in C) and says where.

# %%
x = logits.astype(np.float16)
x[2, 3, targets[2, 3]] = -np.inf  # the reference token masked out
x[4, 0, 5] = np.inf  # an overflowed logit
r = dg.check_distribution(x, targets=targets)
print(r)
assert {f.name for f in r.findings} == {"posinf", "zero_probability_target"}
assert r.findings[1].positions.tolist() == [[2, 3]]

# %% [markdown]
# ## Evaluation: two sets, two models, generations against held-out text
# compare_eval_sets tests whether one model's token NLLs on two sets come from the same distribution
# (mean gap in standard errors, KS); distribution_shift compares two models position by position (KL
# both ways, Jensen-Shannon); generation_vs_evaluation shows the exposure-bias gap: a model scores its
# own samples far better than real text.

# %%
held_ids = rng.integers(2, V, (200, T))
other_ids = rng.integers(2, V // 4, (200, T))  # a set drawn from a narrower vocabulary
trained = lambda ids: model(ids, out_scale=8.0)  # noqa: E731 (a more confident model)
same = dg.compare_eval_sets(trained(held_ids[:100]), fastlm.causal_targets(held_ids[:100]),
                            trained(held_ids[100:]), fastlm.causal_targets(held_ids[100:]))
shifted = dg.compare_eval_sets(trained(held_ids), fastlm.causal_targets(held_ids),
                               trained(other_ids), fastlm.causal_targets(other_ids), names=("held-out", "narrow"))
print(same, shifted, sep="\n")
assert same.ok and "nll_shift" in shifted

shift = dg.distribution_shift(trained(held_ids), model(held_ids))
print(shift)
assert shift.stats["mean js"] <= np.log(2) and shift.stats["mean kl_ab"] > shift.stats["mean js"]

gen = np.zeros((50, T), int)
gen[:, 0] = rng.integers(2, V, 50)
for t in range(1, T):  # the model's own samples
    gen[:, t] = fastlm.sample(trained(gen[:, t - 1]), seed=np.arange(50) + 1000 * t)
gap = dg.generation_vs_evaluation(trained(gen), fastlm.causal_targets(gen), trained(held_ids),
                                  fastlm.causal_targets(held_ids))
print(gap)
assert gap.stats["gap (held-out - generated)"] > 0.5

# %%
fig = dg.plot_nll_histogram(shifted.arrays)
fig.savefig(OUT / "07_nll_histogram.png")
fig = dg.plot_entropy_by_position({"initial": logits, "trained": trained(ids)}, mask=mask)
fig.savefig(OUT / "07_entropy_by_position.png")
print("figures:", OUT / "07_nll_histogram.png", OUT / "07_entropy_by_position.png")
