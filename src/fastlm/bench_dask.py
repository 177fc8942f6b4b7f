"""Benchmarks of fastlm.dask (the `fastlm bench` group "n-grams on Dask"): counting Zipf ids on a local
cluster of worker processes against one process, and scoring on the cluster against the one-process
kernel rate per core. The corpus is generated on the workers (each partition from its own seed) and held
in their memory before the timed runs, so that neither side pays for reading it."""

from __future__ import annotations

from typing import Any

import numpy as np

DOC = 1000  # tokens per sequence


def zipf_part(seed: int, n_tokens: int, vocab: int) -> list[np.ndarray]:
    """Partition `seed`: n_tokens Zipf ids (exponent 1.1) below vocab, as sequences of DOC tokens."""
    rng = np.random.default_rng(seed)
    ids = (np.minimum(rng.zipf(1.1, n_tokens), vocab) - 1).astype(np.int64)
    return np.array_split(ids, max(1, n_tokens // DOC))


def _task_seconds(stream: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds of compute per task function and of transfers, summed over a task stream."""
    from dask.utils import key_split

    out: dict[str, float] = {}
    for task in stream:
        name = key_split(task["key"])
        for ss in task["startstops"]:
            what = name if ss["action"] == "compute" else ss["action"]
            out[what] = out.get(what, 0.0) + ss["stop"] - ss["start"]
    return out


def run_distributed(n_tokens: int = 50_000_000, workers: int = 2, order: int = 5, vocab: int = 50_000,
                    partitions: int = 8, repeat: int = 1) -> dict[str, Any]:
    """Times (one process; the cluster) of counting and of scoring the same partitions: on the cluster
    the count tables made and held on the workers (by first-id range) and the whole fit (the ranges
    joined on the client), the compute seconds per task function and of transfers, the bytes the workers
    sent one another and the result's size."""
    import dask.bag as db
    import distributed
    from dask.base import persist
    from dask.delayed import delayed

    from . import _config, _ngram_tables as tables, dask as fdask, ngram
    from .bench import best_time

    part = n_tokens // partitions
    r: dict[str, Any] = {"tokens": part * partitions, "workers": workers, "order": order, "partitions": partitions}
    threads = _config.get_num_threads()
    _config.set_num_threads(1)
    try:
        corpus = [[s for i in range(partitions) for s in zipf_part(i, part, vocab)]]
        r["one process"] = best_time(lambda: ngram.NgramLM(order).fit(corpus[0]), repeat)
        corpus.clear()
        lm = ngram.NgramLM(order).fit(zipf_part(9_999, 2_000_000, vocab))  # (a model to score with)
        held = zipf_part(10_000, 8_000_000, vocab)
        r["score tokens"] = sum(s.size + 1 for s in held)
        r["score one process"] = best_time(lambda: lm.score_batch(held), repeat)
    finally:
        _config.set_num_threads(threads)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        bag = db.from_delayed([delayed(zipf_part)(i, part, vocab) for i in range(partitions)]).persist()
        distributed.wait(bag)
        template = client.scatter(ngram.NgramLM(order, smoothing="add-alpha"), broadcast=True)

        def on_workers() -> None:
            shards, _ = fdask.count_shards(bag, template, workers, client=client)
            got = persist(*shards)
            distributed.wait(list(got))
            del got

        def fit() -> None:
            r["result"] = fdask.fit_distributed(bag, order, smoothing="add-alpha", client=client)

        def sent() -> int:
            return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())

        calls = max(repeat, 1) + 1  # (best_time's warm-up included)
        sent0 = sent()
        r["on the workers"] = best_time(on_workers, calls - 1)
        r["shipped between workers"] = (sent() - sent0) / calls
        with distributed.get_task_stream(client) as ts:
            r["cluster"] = best_time(fit, calls - 1)
        r["task seconds"] = {k: v / calls for k, v in _task_seconds(ts.data).items()}
        fitted = r.pop("result")
        r["result bytes"] = sum(a.nbytes for order in tables.narrow((fitted._keys, fitted._counts)) for a in order
                                if a is not None)  # (as the ranges travel, give or take their count types)
        del fitted
        per = 2_000_000  # tokens per scoring partition (the per-task overhead of Dask is then negligible)
        held_bag = db.from_delayed([delayed(zipf_part)(10_000 + i, per, vocab) for i in range(4 * workers)])
        held_bag = held_bag.persist()
        distributed.wait(held_bag)
        r["score cluster tokens"] = sum(s.size + 1 for i in range(4 * workers) for s in zipf_part(10_000 + i, per, vocab))
        shipped = client.scatter(lm, broadcast=True, hash=False)
        r["score cluster"] = best_time(
            lambda: fdask.score_distributed(shipped, held_bag, client=client).count().compute(), repeat)
    return r


def format_distributed_table(r: dict[str, Any]) -> str:
    one, cl, mw = r["one process"], r["cluster"], r["on the workers"]
    n, w = r["tokens"], r["workers"]
    rows = [f"| counting {n / 1e6:.0f} M Zipf ids, order {r['order']}, {r['partitions']} partitions | "
            "s | M tokens/s | speed-up |", "|---|---|---|---|",
            f"| one process, one thread | {one:.2f} | {n / one / 1e6:.2f} | 1.00x |",
            f"| {w} workers: the count tables, made and held on the workers (a first-id range each) | {mw:.2f} | "
            f"{n / mw / 1e6:.2f} | {one / mw:.2f}x |",
            f"| {w} workers: the whole fit (the ranges joined on the client) | {cl:.2f} | {n / cl / 1e6:.2f} | "
            f"{one / cl:.2f}x |"]
    ts = r["task seconds"]
    parts = ", ".join(f"{k.strip('_')} {v:.2f}" for k, v in sorted(ts.items(), key=lambda kv: -kv[1]) if v >= 0.01)
    rows.append(f"\nIn the whole fit, seconds summed over the workers: {parts}. Bytes shipped: "
                f"{r['shipped between workers'] / 1e6:.0f} MB between workers (the partitions laid out for "
                f"counting, to the ranges' workers), {r['result bytes'] / 1e6:.0f} MB of count tables to the client "
                "(narrowed: uint32 parents, uint16 ids, small counts).")
    s1 = r["score tokens"] / r["score one process"]
    s2 = r["score cluster tokens"] / r["score cluster"] / w
    rows.append(f"Scoring (add-alpha, a model of 2 M tokens, sent to the workers beforehand): one process {s1 / 1e6:.2f} M tokens/s; the cluster "
                f"{s2 / 1e6:.2f} M tokens/s per worker ({s2 / s1:.2f}x the one-process rate per core).")
    return "\n".join(rows)
