"""Benchmarks of fastlm.dask (the `fastlm bench` group "n-grams on Dask"): counting Zipf ids on a local
cluster of worker processes against one process, and scoring on the cluster against the one-process
kernel rate per core. The corpus is generated on the workers (each partition from its own seed) and held
in their memory before the timed runs, so that neither side pays for reading it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

DOC = 1000  # tokens per sequence


def zipf_part(seed: int, n_tokens: int, vocab: int) -> list[np.ndarray]:
    """Partition `seed`: n_tokens Zipf ids (exponent 1.1) below vocab, as sequences of DOC tokens."""
    rng = np.random.default_rng(seed)
    ids = (np.minimum(rng.zipf(1.1, n_tokens), vocab) - 1).astype(np.int64)
    return np.array_split(ids, max(1, n_tokens // DOC))


def run_distributed(n_tokens: int = 50_000_000, workers: int = 2, order: int = 5, vocab: int = 50_000,
                    partitions: int = 8, repeat: int = 1) -> dict[str, Any]:
    """Times (one process; the cluster) of counting and of scoring the same partitions, the bytes the
    workers sent one another and the result's size, and the time one process spends merging the
    partitions' tables."""
    import dask.bag as db
    import distributed
    from dask.delayed import delayed

    from . import _config, dask as fdask, ngram
    from .bench import best_time

    part = n_tokens // partitions
    r: dict[str, Any] = {"tokens": part * partitions, "workers": workers, "order": order, "partitions": partitions}
    threads = _config.get_num_threads()
    _config.set_num_threads(1)
    try:
        corpus = [[s for i in range(partitions) for s in zipf_part(i, part, vocab)]]
        r["one process"] = best_time(lambda: ngram.NgramLM(order).fit(corpus[0]), repeat)
        corpus.clear()
        tables = [ngram.NgramLM(order).fit(zipf_part(i, part, vocab)) for i in range(partitions)]
        r["merge in one process"] = best_time(lambda: fdask.merge_models(tables), repeat)
        tables.clear()
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

        def fit() -> None:
            r["result"] = fdask.fit_distributed(bag, order, smoothing="add-alpha", client=client)

        sent0 = sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())
        r["cluster"] = best_time(fit, repeat)
        r["shipped between workers"] = (sum(client.run(
            lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values()) - sent0) / repeat
        r["result bytes"] = r.pop("result").nbytes()
        template = client.scatter(ngram.NgramLM(order), broadcast=True)
        t0 = time.perf_counter()  # (once: a persisted result would be reused)
        counted = bag.map_partitions(fdask._count_partition, template).persist()
        distributed.wait(counted)
        r["count phase"] = time.perf_counter() - t0
        del counted
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
    one, cl = r["one process"], r["cluster"]
    rows = [f"| counting {r['tokens'] / 1e6:.0f} M Zipf ids, order {r['order']}, {r['partitions']} partitions | "
            "s | M tokens/s | speed-up |", "|---|---|---|---|",
            f"| one process, one thread | {one:.2f} | {r['tokens'] / one / 1e6:.2f} | 1.00x |",
            f"| {r['workers']} worker processes, one thread each | {cl:.2f} | {r['tokens'] / cl / 1e6:.2f} | "
            f"{one / cl:.2f}x |",
            f"| of which: counting the partitions on the workers | {r['count phase']:.2f} | "
            f"{r['tokens'] / r['count phase'] / 1e6:.2f} | {one / r['count phase']:.2f}x |",
            f"| merging the {r['partitions']} tables (timed in one process) | {r['merge in one process']:.2f} | | |"]
    rows.append(f"\nBytes shipped: {r['shipped between workers'] / 1e6:.0f} MB between workers, "
                f"{r['result bytes'] / 1e6:.0f} MB of merged table to the client.")
    s1 = r["score tokens"] / r["score one process"]
    s2 = r["score cluster tokens"] / r["score cluster"] / r["workers"]
    rows.append(f"Scoring (add-alpha, a model of 2 M tokens, sent to the workers beforehand): one process {s1 / 1e6:.2f} M tokens/s; the cluster "
                f"{s2 / 1e6:.2f} M tokens/s per worker ({s2 / s1:.2f}x the one-process rate per core).")
    return "\n".join(rows)
