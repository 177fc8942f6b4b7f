# %% [markdown]
# # Stable softmax and cross-entropy
#
# Why exp(x) / sum(exp(x)) overflows in float32 and how subtracting the max fixes it (`fastlm.softmax`,
# `log_softmax`, `logsumexp`); the cross-entropy loss and its gradient p - onehot(y), checked against
# finite differences; and how a temperature T (logits / T) moves the entropy between 0 and log V.

# %%
import os
import pathlib
import tempfile

import numpy as np
from matplotlib.figure import Figure

import fastlm

OUT = pathlib.Path(os.environ.get("FASTLM_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="fastlm-example-"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Overflow and underflow of the naive softmax
#
# exp overflows float32 above x ~ 88.7, so exp(1000) = inf and inf / inf = NaN; for very negative logits
# every exp underflows to 0 and 0 / 0 = NaN. Softmax is shift invariant, softmax(x) = softmax(x - c), so
# with c = max(x) every exponent is <= 0 and the largest is exactly 1. Likewise
# logsumexp(x) = m + log sum exp(x - m) and log_softmax(x) = x - logsumexp(x).

# %%
def naive_softmax(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


x = np.array([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1010.0]], np.float32)
with np.errstate(over="ignore", invalid="ignore"):
    bad = naive_softmax(x)
print("naive softmax:", bad.tolist())
assert np.isnan(bad).all()  # inf / inf in row 0, 0 / 0 in row 1

p = fastlm.softmax(x)
# the same in float64 with the max subtracted by hand; both rows are the same shifted logits [0, -1, -10]
ref = naive_softmax(np.array([[0.0, -1.0, -10.0]]))
print("fastlm.softmax:", np.round(p, 6).tolist())
assert p.dtype == np.float32 and np.isfinite(p).all()
np.testing.assert_allclose(p, np.repeat(ref, 2, axis=0), rtol=1e-6)

lse = fastlm.logsumexp(x)
np.testing.assert_allclose(lse, [1000 + np.log1p(np.exp(-1) + np.exp(-10)), -1000 + np.log1p(np.exp(-1) + np.exp(-10))],
                           rtol=1e-6)
np.testing.assert_allclose(fastlm.log_softmax(x), x - lse[:, None], atol=1e-4)

# %% [markdown]
# log(softmax(x)) is not log_softmax(x): a probability below float32's smallest positive number (~1.4e-45)
# rounds to 0 and its log to -inf, while log_softmax keeps the exact value x_i - logsumexp(x). This matters
# for the loss: the cross-entropy of an unlikely target is finite and its gradient useful.

# %%
y = np.array([0.0, -200.0], np.float32)
with np.errstate(divide="ignore"):
    via_softmax = np.log(fastlm.softmax(y))
print(f"log(softmax([0, -200])) = {via_softmax.tolist()}, log_softmax = {fastlm.log_softmax(y).tolist()}")
assert np.isneginf(via_softmax[1])
np.testing.assert_allclose(fastlm.log_softmax(y), [0.0, -200.0], atol=1e-5)

# %% [markdown]
# ## Cross-entropy and its gradient
#
# For logits z and target y: loss = -log softmax(z)_y = logsumexp(z) - z_y. Since d logsumexp / dz = p,
# d loss / dz = p - onehot(y). With reduction="mean" over N rows every row's gradient is divided by N.
# `cross_entropy_with_grad` returns both from one fused pass; we check them against the formula and
# against central finite differences (f(z + h e_i) - f(z - h e_i)) / 2h, whose error is O(h^2).

# %%
rng = np.random.default_rng(0)
N, V = 4, 7
z = rng.normal(0, 3, (N, V))  # float64, so that finite differences are accurate
t = rng.integers(0, V, N)

loss, grad = fastlm.cross_entropy_with_grad(z, t)
m = z.max(axis=1, keepdims=True)
logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))  # log_softmax by hand
onehot = np.eye(V)[t]
np.testing.assert_allclose(loss, -logp[np.arange(N), t].mean(), rtol=1e-12)
np.testing.assert_allclose(grad, (np.exp(logp) - onehot) / N, atol=1e-15)
np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)  # probabilities and the one-hot both sum to 1

h = 1e-5
fd = np.zeros_like(z)
for i in np.ndindex(z.shape):
    zp, zm = z.copy(), z.copy()
    zp[i] += h
    zm[i] -= h
    fd[i] = (fastlm.cross_entropy(zp, t) - fastlm.cross_entropy(zm, t)) / (2 * h)
err = np.abs(fd - grad).max()
print(f"loss {loss:.6f}; max |finite difference - gradient| = {err:.2e}")
assert err < 1e-8

# the gradient pushes the target's logit up (p_y - 1 < 0) and every other logit down (p_j > 0)
assert (grad[np.arange(N), t] < 0).all() and (np.delete(grad, t + V * np.arange(N)) > 0).all()

# %% [markdown]
# ## Temperature
#
# Sampling at temperature T uses softmax(z / T). As T -> 0 the distribution concentrates on the argmax
# (entropy -> 0); as T -> inf it becomes uniform (entropy -> log V). In between the entropy
# H(T) = -sum p log p grows monotonically: dH / d(1/T) = -(1/T) Var_p(z) <= 0.

# %%
logits = np.array([4.0, 3.0, 2.5, 1.0, 0.0, -1.0, -3.0, -5.0])
temps = np.geomspace(0.05, 50, 40)
H = np.array([fastlm.entropy(logits / T) for T in temps])
np.testing.assert_allclose(fastlm.softmax(logits, temperature=0.7), fastlm.softmax(logits / 0.7), rtol=1e-12)

# entropy by hand at one temperature
q = fastlm.softmax(logits / 0.7)
np.testing.assert_allclose(fastlm.entropy(logits / 0.7), -(q * np.log(q)).sum(), rtol=1e-12)
assert np.all(np.diff(H) > 0)
assert H[0] < 1e-6 and np.log(len(logits)) - H[-1] < 0.02
print(f"entropy: T = {temps[0]:.2f}: {H[0]:.2e} nats; T = 1: {fastlm.entropy(logits):.3f}; "
      f"T = {temps[-1]:.0f}: {H[-1]:.3f} (log V = {np.log(len(logits)):.3f})")

fig = Figure(figsize=(10, 3.5))
ax1, ax2 = fig.subplots(1, 2)
ax1.semilogx(temps, H)
ax1.axhline(np.log(len(logits)), ls=":", c="gray", label="log V (uniform)")
ax1.set(xlabel="temperature T", ylabel="entropy (nats)", title="Entropy of softmax(z / T)")
ax1.legend()
for T in (0.3, 1.0, 3.0):
    ax2.plot(fastlm.softmax(logits, temperature=T), "o-", label=f"T = {T}")
ax2.set(xlabel="token", ylabel="probability", title="softmax(z / T)")
ax2.legend()
fig.tight_layout()
fig.savefig(OUT / "02_temperature.png", dpi=100)
print(f"figure: {OUT / '02_temperature.png'}")
