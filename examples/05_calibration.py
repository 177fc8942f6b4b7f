# %% [markdown]
# # Calibration and temperature scaling
#
# A model is calibrated when, among the predictions made with confidence ~c, a fraction ~c is correct.
# We measure this with reliability bins and the expected calibration error (ECE), draw reliability
# diagrams, and repair an overconfident model by temperature scaling (Guo et al., 2017).

# %%
import os
import pathlib
import tempfile

import numpy as np
from matplotlib.figure import Figure

import fastlm
from fastlm import calibration as cal

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Synthetic data: a calibrated model and an overconfident copy
#
# Draw "true" logits z for N examples over V classes and a label y ~ softmax(z) for each: by construction
# softmax(z) is the real class distribution, so it is calibrated. The model we evaluate outputs 3 z: the
# same ranking (same predictions, same accuracy) but sharper probabilities, so it is overconfident.
# Half the examples are a validation set (to fit T), half a test set (to measure the ECE).

# %%
rng = np.random.default_rng(0)
N, V, SCALE = 20000, 10, 3.0
z = rng.normal(0, 2.0, (N, V))
p_true = fastlm.softmax(z)
y = (p_true.cumsum(axis=1) > rng.random((N, 1))).argmax(axis=1)  # inverse-CDF sampling of y ~ p_true
model_logits = SCALE * z
val, test = slice(0, N // 2), slice(N // 2, N)

# %% [markdown]
# ## Confidence, accuracy, reliability bins and ECE
#
# Confidence = the largest softmax probability, correct = (argmax == label). Bin the confidences into M
# equal-width bins B_m = ((m-1)/M, m/M]; per bin, acc_m = mean correct and conf_m = mean confidence.
# ECE = sum_m (|B_m| / n) |acc_m - conf_m|, the average gap to the diagonal of the reliability diagram.

# %%
conf, correct = cal.calibration_from_logits(model_logits[test], y[test])
probs = fastlm.softmax(model_logits[test])
np.testing.assert_allclose(conf, probs.max(axis=1), rtol=1e-12)
np.testing.assert_array_equal(correct, probs.argmax(axis=1) == y[test])

M = 15
bins = cal.reliability_bins(conf, correct, n_bins=M)
ece_before = cal.expected_calibration_error(conf, correct, n_bins=M)

# ECE from scratch: bin index m = ceil(c M) - 1 (the first bin also holds 0)
m = np.clip(np.ceil(conf * M).astype(int) - 1, 0, M - 1)
n_m = np.bincount(m, minlength=M)
live = n_m > 0
acc_m = np.bincount(m, weights=correct, minlength=M)[live] / n_m[live]
conf_m = np.bincount(m, weights=conf, minlength=M)[live] / n_m[live]
ece_hand = np.sum(n_m[live] / conf.size * np.abs(acc_m - conf_m))
np.testing.assert_array_equal(bins["count"], n_m)
np.testing.assert_allclose(ece_before, ece_hand, rtol=1e-10)

print("bin          count  confidence  accuracy")
for lo, hi, n, c, a in zip(bins["lower"], bins["upper"], bins["count"], bins["confidence"], bins["accuracy"]):
    if n:
        print(f"({lo:.2f}, {hi:.2f}]  {n:6d}  {c:10.3f}  {a:8.3f}")
# overconfident: in every well-filled bin the accuracy is below the confidence
full = bins["count"] >= 100
assert (bins["accuracy"][full] < bins["confidence"][full]).all()

# the true logits are calibrated: their ECE is small (sampling noise only)
ece_true = cal.expected_calibration_error(*cal.calibration_from_logits(z[test], y[test]), n_bins=M)
assert ece_true < 0.02 and ece_before > 0.1

# %% [markdown]
# ## Temperature scaling
#
# Divide every logit by one T > 0 fitted on the validation set to minimize the NLL
# -mean log softmax(z_i / T)[y_i]. The argmax, so the accuracy, is unchanged; only the confidence moves.
# The NLL is convex in 1/T, and `fit_temperature` solves it by Newton's method. Here the model's logits
# are 3 z and the labels follow softmax(z), so the best T is near 3.

# %%
T = cal.fit_temperature(model_logits[val], y[val])


def nll(t):
    """Mean validation NLL of softmax(logits / t)."""
    return fastlm.cross_entropy(model_logits[val], y[val], temperature=t)


# a minimum: the NLL is higher a little to either side, and much lower than at T = 1
assert nll(T) < nll(T * 0.98) and nll(T) < nll(T * 1.02) and nll(T) < nll(1.0) - 0.5
assert abs(T - SCALE) < 0.15

conf_after, correct_after = cal.calibration_from_logits(model_logits[test] / T, y[test])
ece_after = cal.expected_calibration_error(conf_after, correct_after, n_bins=M)
np.testing.assert_array_equal(correct_after, correct)  # same predictions
print(f"fitted T = {T:.3f} (true scale {SCALE}); test accuracy {correct.mean():.3f}")
print(f"ECE: before {ece_before:.4f}, after {ece_after:.4f} (true logits {ece_true:.4f})")
print(f"mean confidence: before {conf.mean():.3f}, after {conf_after.mean():.3f}")
assert ece_after < ece_before / 5
assert abs(conf_after.mean() - correct.mean()) < 0.02

# %% [markdown]
# ## Reliability diagrams
#
# Bars: accuracy per confidence bin (hatched: the gap to the bin's mean confidence); the dashed diagonal
# is perfect calibration. Before scaling the bars sit below the diagonal (overconfident); after, on it.
# `plot_reliability_diagram` draws into the given axes, or into a new Figure, and returns the figure.

# %%
fig = Figure(figsize=(10, 4.5))
ax1, ax2 = fig.subplots(1, 2)
cal.plot_reliability_diagram(conf, correct, n_bins=M, ax=ax1)
cal.plot_reliability_diagram(conf_after, correct_after, n_bins=M, ax=ax2)
ax1.set_title(f"Logits 3z: ECE {ece_before:.3f}")
ax2.set_title(f"Logits 3z / T, T = {T:.2f}: ECE {ece_after:.3f}")
fig.tight_layout()
fig.savefig(OUT / "05_reliability.png", dpi=100)

single = cal.plot_reliability_diagram(conf, correct, n_bins=M)  # a new Figure of its own
single.savefig(OUT / "05_reliability_before.png", dpi=100)
print(f"figures: {OUT / '05_reliability.png'}, {OUT / '05_reliability_before.png'}")
