"""Top-p on logits shaped like a trained LM's and on the bench's Gaussian rows: the measurement behind
the flat-row path (csrc/decode_topp_flat.c). `python bench/lm_rows.py` prints, per distribution, the
nucleus of p = 0.9 and the time of softmax, top_p_filter(p=0.9) and sample(top_p=0.9) on 32 x 128256
float32 rows, one thread; compare a build whose flat_topp returns 0 to see what the path buys.

LM-shaped rows: log p_r = -a log r + N(0, 0.3^2) over ranks r (a ~ U(0.9, 1.4): Zipf-like heavy tails),
every fourth row with its top token raised by 2-6 nats (a confident head), positions shuffled, divided
by the temperature T."""

import time

import numpy as np

import fastlm

V, R = 128256, 32


def lm_rows(rng, T):
    rows = []
    for i in range(R):
        logp = -rng.uniform(0.9, 1.4) * np.log(np.arange(1, V + 1)) + rng.normal(0, 0.3, V)
        if i % 4 == 0:
            logp[0] += rng.uniform(2, 6)
        rows.append(rng.permutation(logp))
    return (np.array(rows) / T).astype(np.float32)


def nucleus(x, p=0.9):
    q = np.exp(x - x.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    s = -np.sort(-q, 1)
    return int(np.median((np.cumsum(s, 1) < p).sum(1) + 1))


def best(f, n=5, k=25):
    """The best mean of k calls over n tries, in ms (sub-millisecond calls need the loop)."""
    t = []
    for _ in range(n):
        a = time.perf_counter()
        for _ in range(k):
            f()
        t.append((time.perf_counter() - a) / k)
    return min(t) * 1e3


def main():
    fastlm.set_num_threads(1)
    rng = np.random.default_rng(0)
    cases = [(f"N(0,{s}^2)", (rng.standard_normal((R, V)) * s).astype(np.float32)) for s in (1, 2, 3, 5)]
    cases += [(f"LM-shaped T={T:g}", lm_rows(rng, T)) for T in (0.7, 1.0, 1.5)]
    out = np.empty_like(cases[0][1])
    print("| rows | nucleus | softmax ms | top_p_filter ms | sample(top_p=0.9) ms |\n|---|---|---|---|---|")
    for name, x in cases:
        sm = best(lambda: fastlm.softmax(x, out=out))
        tp = best(lambda: fastlm.top_p_filter(x, 0.9, out=out))
        sa = best(lambda: fastlm.sample(x, top_p=0.9, seed=1))
        print(f"| {name} | {nucleus(x)} | {sm:.2f} | {tp:.2f} | {sa:.2f} |")


if __name__ == "__main__":
    main()
