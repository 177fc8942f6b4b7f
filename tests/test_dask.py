"""fastlm.dask against one process, on a real two-process dask.distributed cluster started here: counts,
vocabularies, Kneser-Ney discounts and ARPA bytes, scores; partitionings with empty and one-token
partitions; workers lost mid-computation; the command line's --workers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastlm.ngram as ng

import anchors

dask_bag = anchors.module("dask.bag", "pip install fastlm[dask]")
distributed = anchors.module("distributed", "pip install fastlm[dask]")
import fastlm.dask as fdask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as cl:
        yield cl


@pytest.fixture(scope="module")
def verses():
    return anchors.kjv_verses()[:4000]


def bag_of(parts: list[list]) -> object:
    """A bag whose partitions are exactly `parts` (empty ones included)."""
    import dask

    return dask_bag.from_delayed([dask.delayed(list)(p) for p in parts])


def assert_same_counts(a: ng.NgramLM, b: ng.NgramLM) -> None:
    assert a.order == b.order and a.max_id == b.max_id and a.vocab_size == b.vocab_size
    for k in range(a.order):
        np.testing.assert_array_equal(a._keys[k], b._keys[k])
        np.testing.assert_array_equal(a._counts[k], b._counts[k])


def arpa_bytes(lm, path) -> bytes:
    lm.to_arpa(path)
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("tasks, group_tokens", [(None, 2**27), (1, 2**27), (5, 2**27), (2, 3000), (5, 4000)])
@pytest.mark.parametrize("layout", ["one", "three", "ragged"])
def test_fit_equals_one_process(client, verses, layout, tasks, group_tokens, tmp_path):
    """Every order's n-grams and counts, the vocabulary, the Kneser-Ney discounts and the ARPA file equal
    the one-process fit, for several partitionings (empty, one-token and one-item partitions included),
    numbers of first-id ranges, and groups of partitions (a group per partition or several, their tables
    merged in a tree)."""
    texts = verses[:1500] + ["", "   ", "lonely", "word"]
    if layout == "one":
        parts = [texts]
    elif layout == "three":
        parts = [texts[:500], texts[500:1000], texts[1000:]]
    else:
        parts = [[], texts[:1], texts[-1:], [], texts[1:700], texts[700:701], texts[701:-1], []]
    got = fdask.fit_distributed(bag_of(parts), 4, client=client, split_every=3, tasks=tasks, group_tokens=group_tokens)
    want = ng.NgramLM.for_words(texts, 4, smoothing="kneser-ney")
    assert got.vocab.words == want.vocab.words
    assert_same_counts(got, want)
    assert got.backoff_model().discounts == want.backoff_model().discounts
    assert arpa_bytes(got, tmp_path / "a.arpa") == arpa_bytes(want, tmp_path / "b.arpa")


def test_fit_options_min_count_prune_and_add_alpha(client, verses, tmp_path):
    texts = verses[:1200]
    got = fdask.fit_distributed(bag_of([texts[:300], [], texts[300:]]), 3, client=client, min_count=2,
                                prune=(0, 1))
    want = ng.NgramLM.for_words(texts, 3, smoothing="kneser-ney", min_count=2, prune=(0, 1))
    assert got.vocab.words == want.vocab.words
    assert arpa_bytes(got, tmp_path / "a.arpa") == arpa_bytes(want, tmp_path / "b.arpa")
    got = fdask.fit_distributed(bag_of([texts[:10], texts[10:]]), 3, client=client, smoothing="add-alpha", alpha=0.5)
    want = ng.NgramLM.for_words(texts, 3, alpha=0.5)
    assert_same_counts(got, want)
    np.testing.assert_array_equal(got.score_batch(texts[:50]).logprob, want.score_batch(texts[:50]).logprob)


def test_fit_token_arrays(client):
    """A bag of id arrays gives the model NgramLM(...).fit gives on the same arrays (ids up to 2^32 - 1)."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 40, rng.integers(0, 30)) for _ in range(300)]
    seqs = [np.where(s % 5 == 0, 2**32 - 1 - s, s) for s in seqs] + [np.array([7])]
    for opts in ({"smoothing": "add-alpha"}, {"smoothing": "kneser-ney", "bos_id": 2**32 - 2, "eos_id": 2**32 - 3,
                                              "discount_fallback": True}):
        want = ng.NgramLM(3, **opts).fit(seqs)
        for group_tokens in (2**27, 500):
            got = fdask.fit_distributed(bag_of([seqs[:1], [], seqs[1:120], seqs[120:]]), 3, client=client,
                                        group_tokens=group_tokens, **opts)
            assert_same_counts(got, want)


def test_files_and_globs(client, verses, tmp_path):
    """Text files (read in blocks: several partitions per file), a glob and a list give the model fitted
    on their lines."""
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text("\n".join(verses[i * 400:(i + 1) * 400]) + "\n", encoding="utf-8")
    want = ng.NgramLM.for_words(verses[:1200], 3, smoothing="kneser-ney")
    for corpus in (str(tmp_path / "part*.txt"), [tmp_path / f"part{i}.txt" for i in range(3)]):
        got = fdask.fit_distributed(corpus, 3, client=client, blocksize=20_000)
        assert got.vocab.words == want.vocab.words
        assert_same_counts(got, want)
    with pytest.raises(FileNotFoundError, match="nothing|no file"):
        fdask.fit_distributed(str(tmp_path / "missing*.txt"), 3, client=client)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fdask.fit_distributed(str(tmp_path / "missing.txt"), 3, client=client)
    with pytest.raises(TypeError, match="corpus must be"):
        fdask.fit_distributed(42, 3, client=client)
    with pytest.raises(ValueError, match="split_every"):
        fdask.fit_distributed([str(tmp_path / "part0.txt")], 3, client=client, split_every=1)
    with pytest.raises(ValueError, match="tasks must be"):
        fdask.fit_distributed([str(tmp_path / "part0.txt")], 3, client=client, tasks=0)
    for bad in (0, 2**32, 1.5, True):
        with pytest.raises(ValueError, match=r"group_tokens must be .* got " + repr(bad).replace(".", r"\.")):
            fdask.fit_distributed([str(tmp_path / "part0.txt")], 3, client=client, group_tokens=bad)


def test_vocab_equals_one_process(client, verses):
    texts = verses[:2000] + ["<s> x </s> <unk> é é"]
    for min_count in (1, 3):
        got = fdask.build_vocab_distributed(bag_of([texts[:7], [], texts[7:]]), min_count=min_count, client=client)
        assert got.words == ng.WordVocab.build(texts, min_count=min_count).words


def test_scores_equal_one_process(client, verses):
    """Per document log probability, tokens, OOVs and perplexity equal score_batch's, bit for bit, for a
    KN model, an add-alpha model and an ARPA model; documents come back in order."""
    lm = ng.NgramLM.for_words(verses[:2000], 4, smoothing="kneser-ney", min_count=2)
    docs = verses[2000:2600] + ["", "zebra unicorn", verses[0]]
    for model in (lm, lm.backoff_model(), ng.NgramLM.for_words(verses[:2000], 2, alpha=0.1)):
        want = model.score_batch(docs)
        for log10 in (False, True):
            rows = fdask.score_distributed(model, bag_of([docs[:1], [], docs[1:300], docs[300:]]), client=client,
                                           log10=log10).compute()
            assert [r["text"] for r in rows] == docs
            ref = model.score_batch(docs, log10=log10).logprob
            assert np.array_equal([r["logprob"] for r in rows], ref)
            assert [r["tokens"] for r in rows] == want.tokens.tolist()
            assert [r["oov"] for r in rows] == want.oov.tolist()
            np.testing.assert_allclose([r["perplexity"] for r in rows], np.exp(-want.logprob / want.tokens),
                                       rtol=1e-12)
    kept = fdask.score_distributed(lm, bag_of([docs]), client=client).filter(
        lambda r: r["perplexity"] < 200).pluck("text").compute()
    s = lm.score_batch(docs)
    assert kept == [d for d, p, n in zip(docs, s.logprob, s.tokens) if np.exp(-p / n) < 200]
    assert 0 < len(kept) < len(docs)
    with pytest.raises(TypeError, match="lm must be"):
        fdask.score_distributed("model", bag_of([docs]), client=client)


def test_without_a_client_uses_the_local_scheduler(verses):
    texts = verses[:500]
    got = fdask.fit_distributed(bag_of([texts[:100], texts[100:]]), 3)
    assert_same_counts(got, ng.NgramLM.for_words(texts, 3, smoothing="kneser-ney"))


def test_lost_worker_gives_the_exact_model_or_an_error(client, verses):
    """A worker restarted while it runs a task of the fit: Dask recomputes its tasks (the model is exact)
    or the fit raises; a partial model is never returned."""
    texts = anchors.kjv_verses()
    want = ng.NgramLM.for_words(texts, 5, smoothing="kneser-ney")
    hit: list[str] = []

    def restart_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not hit:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                hit.append(busy[0])
                client.restart_workers(busy[:1], raise_for_error=False)
            time.sleep(0.005)

    killer = threading.Thread(target=restart_a_busy_worker)
    killer.start()
    try:
        got = fdask.fit_distributed(bag_of([texts[i::8] for i in range(8)]), 5, client=client, split_every=2)
    except Exception as e:  # a clear error is an allowed outcome
        assert type(e).__name__ in ("KilledWorker", "CancelledError", "FutureCancelledError", "CommClosedError")
    else:  # the partitions interleave the verses: the same sentences, so the same counts
        assert_same_counts(got, want)
    finally:
        killer.join()
    assert hit, "no task was running to interrupt"
    client.wait_for_workers(2, timeout=60)


def test_tables_pickle_compactly_and_truncation_errors(client, verses, tmp_path):
    """Count tables, word counts and models cross processes as their arrays; a model file cut short in
    transit is refused."""
    lm = fdask.fit_distributed(bag_of([verses[:300], verses[300:600]]), 3, client=client)
    data = pickle.dumps(lm, protocol=5)
    assert len(data) < 4 * lm.nbytes() + 64 * len(lm.vocab.words) + 4096
    assert_same_counts(pickle.loads(data), lm)
    wc = fdask.WordCounts.of_texts(verses[:300])
    back = pickle.loads(pickle.dumps(wc, protocol=5))
    assert back.data == wc.data and np.array_equal(back.counts, wc.counts)
    path = tmp_path / "m.bin"
    lm.save(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated|corrupted|malformed"):
        ng.NgramLM.load(path)


def test_cli_workers_and_scheduler(client, verses, tmp_path):
    """fastlm ngram fit/eval --workers 2 (a cluster of its own) and --scheduler ADDRESS (this one) give the
    ARPA file and the report of the one-process command."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(verses[:800]) + "\n", encoding="utf-8")
    run = [sys.executable, "-m", "fastlm.cli", "ngram"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ways = ([], ["--workers", "2"], ["--scheduler", client.scheduler.address])
    for i, extra in enumerate(ways):
        out = tmp_path / f"m{i}"
        subprocess.run(run + ["fit", str(corpus), "--order", "3", "--arpa", f"{out}.arpa", "-o", f"{out}.bin"] + extra,
                       check=True, capture_output=True, env=env)
        assert (tmp_path / f"m{i}.arpa").read_bytes() == (tmp_path / "m0.arpa").read_bytes()
    reports = [subprocess.run(run + ["eval", str(tmp_path / "m0.bin"), str(corpus), "--per-sentence"] + extra,
                              check=True, capture_output=True, text=True, env=env).stdout for extra in ways]
    assert reports[0] == reports[1] == reports[2] and reports[0].count("\n") > 800
    bad = subprocess.run(run + ["eval", str(tmp_path / "m0.bin"), "-", "--workers", "2"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "stdin" in bad.stderr and "Traceback" not in bad.stderr
