"""Corpus-scale n-gram work on Dask (``pip install fastlm[dask]``): vocabulary, counting, Kneser-Ney
estimation and document scoring over a ``dask.bag.Bag``, exact against one process.

- Counting (csrc/README.md, "N-gram tables", "First-id ranges"): every partition is laid out for
  counting where it is (ids with the padding, kept on the workers) and the windows each first id starts
  are summed; the first ids are cut into ranges of near-equal windows, one per worker thread by default.
  Each range is counted in C on a worker of its own over all the partitions (the ids cross the network,
  2 bytes per token when they fit in uint16, else 4, not count tables), one sort per order; a corpus
  larger than group_tokens is counted in groups of partitions whose tables of a range are merged on that
  range's worker (k-way merges in C, a tree). The client receives the ranges in their narrowest arrays
  (tables.narrow: uint32 parents, uint16 ids, small counts; about half the bytes) and joins them in
  order. Kneser-Ney's statistics (adjusted counts, counts of counts, discounts) are computed from the
  result when the model is first used, so the model, its discounts and its ARPA file equal those of
  ``NgramLM.for_words`` / ``NgramLM.fit`` on the concatenated corpus in one process, bit for bit.
- Word models first build the vocabulary the same way (word counts per partition, merged, then
  ``min_count``), so every worker encodes with the ids one process would give.
- Scoring ships the model once per worker (``client.scatter(..., broadcast=True)``) and scores each
  partition in one C call.

``client``: a ``distributed.Client`` to run on; None uses the current Dask scheduler (the default client
when one exists, else Dask's local one). Tables and models move between processes as their NumPy arrays
(pickle protocol 5, out of band). A worker lost mid-computation has its tasks recomputed by Dask (they
are pure), or the computation raises: a partial model is never returned.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from . import _kernels
from . import _ngram_tables as tables
from .ngram import NgramLM, WordVocab, _joined

__all__ = ["build_vocab_distributed", "compute", "fit_distributed", "merge_models", "read_corpus", "score_distributed"]


def read_corpus(corpus: Any, blocksize: int | str | None = "64MiB") -> Any:
    """corpus as a dask Bag: a Bag is returned as is; a path, glob or list of them is read with
    ``dask.bag.read_text`` (one item per line, ``blocksize`` bytes per partition)."""
    import dask.bag as db

    if isinstance(corpus, db.Bag):
        return corpus
    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else corpus
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError(f"corpus must be a dask.bag.Bag, a path or glob, or a list of them; got "
                        f"{type(corpus).__name__}")
    names: list[str] = [str(os.fspath(p)) for p in paths]
    for p in names:
        if not glob.has_magic(p) and not os.path.exists(p):
            raise FileNotFoundError(f"corpus file {p!r} does not exist")
        if glob.has_magic(p) and not glob.glob(p):
            raise FileNotFoundError(f"corpus glob {p!r} matches no file")
    return db.read_text(names, blocksize=blocksize, encoding="utf-8")


def compute(collection: Any, client: Any = None, progress: bool = False) -> Any:
    """The value of a Dask collection (or the list of values of a list of them), on client (with Dask's
    progress bar on stderr when progress) or on the current scheduler."""
    if client is None:
        from dask.base import compute as dask_compute

        return list(dask_compute(*collection)) if isinstance(collection, list) else collection.compute()
    futures = client.compute(collection)
    if progress:
        import distributed

        distributed.progress(futures)
    return client.gather(futures)


def _ship(obj: Any, client: Any) -> Any:
    """obj once per worker (a future the tasks resolve), or obj itself without a client or when it is
    already a future."""
    if client is None or type(obj).__name__ == "Future":
        return obj
    return client.scatter(obj, broadcast=True, hash=False)


# ------------------------------------------------------------------------------------------ vocabulary
class WordCounts:
    """Distinct words (UTF-8, one buffer with n + 1 offsets) and their counts: a partition's, or merged."""

    __slots__ = ("data", "off", "counts")

    def __init__(self, data: bytes, off: np.ndarray, counts: np.ndarray) -> None:
        self.data, self.off, self.counts = data, off, counts

    def __reduce__(self) -> Any:
        return (WordCounts, (self.data, self.off, self.counts))

    @classmethod
    def of_texts(cls, texts: list[Any]) -> WordCounts:
        table = _kernels.words_new()
        buf, off = _joined(texts)
        _kernels.words_encode(table, buf, off, True, -1)
        return cls(*_kernels.words_export(table))

    @classmethod
    def merge(cls, parts: list[WordCounts]) -> WordCounts:
        """The union, counts added: the words of all parts through one word table (first-seen order)."""
        parts = [p for p in parts if p.counts.size] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        table = _kernels.words_new()
        base = np.cumsum([0] + [len(p.data) for p in parts])
        items = np.concatenate([p.off[:-1] + b for p, b in zip(parts, base)] + [base[-1:]])  # one word an item
        ids, _ = _kernels.words_encode(table, b"".join(p.data for p in parts), items, True, -1)
        data, off, _ = _kernels.words_export(table)
        counts = np.bincount(ids, np.concatenate([p.counts for p in parts]).astype(np.float64),
                             minlength=off.size - 1).astype(np.int64)
        return cls(data, off, counts)


def _word_counts(texts: Any) -> list[WordCounts]:
    return [WordCounts.of_texts(list(texts))]


def _merge_word_counts(parts: Any) -> WordCounts:
    return WordCounts.merge(list(parts))


def build_vocab_distributed(corpus: Any, *, min_count: int = 1, client: Any = None, split_every: int = 8,
                            blocksize: int | str | None = "64MiB", progress: bool = False) -> WordVocab:
    """The WordVocab of a text corpus (see read_corpus) that ``WordVocab.build`` gives on all of it: word
    counts per partition, merged in a tree on the workers, then min_count."""
    bag = read_corpus(corpus, blocksize)
    merged = bag.map_partitions(_word_counts).reduction(_merge_word_counts, _merge_word_counts,
                                                       split_every=split_every)
    wc = compute(merged, client, progress)
    words = [wc.data[wc.off[i]:wc.off[i + 1]].decode("utf-8", errors="replace") for i in range(wc.counts.size)]
    return WordVocab.from_counts(words, wc.counts, min_count)


# ------------------------------------------------------------------------------------------ counting
def _lay_out(template: NgramLM, part: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """A partition's items as counting reads them (NgramLM._lay_out): ids with the padding (uint16 when
    they fit: they travel to every range's worker), the sequence starts, the largest id."""
    tokens, starts, max_id = template._lay_out(*template._gather(list(part)))
    return (tokens.astype(np.uint16) if max_id < 1 << 16 else tokens), starts, max_id


def _weights(laid: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, int, list[int]]:
    """(the first ids of a layout's windows, how many windows each starts, the largest id, [its tokens])."""
    tokens = laid[0]
    if laid[2] < 1 << 22:  # (the largest id bounds the padding ids too)
        c = np.bincount(tokens)
        ids = np.flatnonzero(c)
        return ids, c[ids], laid[2], [tokens.size]
    ids, counts = np.unique(tokens, return_counts=True)
    return ids, counts, laid[2], [tokens.size]


def _sum_weights(*ws: tuple[np.ndarray, np.ndarray, int, list[int]]) -> tuple[np.ndarray, np.ndarray, int, list[int]]:
    """_weights of several layouts together (the sizes in order)."""
    ids, inv = np.unique(np.concatenate([w[0] for w in ws]).astype(np.int64), return_inverse=True)
    counts = np.bincount(inv, np.concatenate([w[1] for w in ws]).astype(np.float64), ids.size).astype(np.int64)
    return ids, counts, max(w[2] for w in ws), [n for w in ws for n in w[3]]


def _cuts(ranges: int, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ranges + 1 first-id bounds (0 and 2^32 at the ends) splitting the windows into near-equal ranges
    (a range holds whole first ids, so one heavy id can leave a range larger or others empty)."""
    cum = np.cumsum(counts)
    inner = np.searchsorted(cum, cum[-1] * np.arange(1, ranges) / ranges) + 1 if ids.size else np.zeros(ranges - 1, int)
    bounds = np.append(ids, ids[-1] + 1 if ids.size else 0)[np.minimum(inner, ids.size)]
    return np.concatenate([[0], bounds, [2**32]]).astype(np.int64)


def _count_range(template: NgramLM, lo: int, hi: int, *laid: tuple[np.ndarray, np.ndarray, int]
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The count tables of the k-grams whose first id is in [lo, hi) over several layouts, counted in one
    go (one sort per order): a piece of the whole table (parents counting from 0)."""
    tokens = np.concatenate([t for t, _, _ in laid], dtype=np.uint32)
    off = np.cumsum([0] + [t.size for t, _, _ in laid])
    starts = np.concatenate([s[:-1] + o for (_, s, _), o in zip(laid, off)] + [off[-1:]]).astype(np.int64)
    return template._count_laid_out(tokens, starts, max(m for _, _, m in laid), (lo, hi))


def _persist(objs: list[Any], client: Any) -> list[Any]:
    from dask.base import persist

    return client.persist(objs) if client is not None else list(persist(*objs))


def _slots(client: Any) -> list[str]:
    """The workers' addresses, one per thread, interleaved (worker 1, worker 2, ..., worker 1, ...)."""
    nthreads = client.nthreads() if client is not None else {}
    return [w for t in range(max(nthreads.values(), default=0)) for w in sorted(nthreads) if nthreads[w] > t]


def count_shards(bag: Any, template: NgramLM, ranges: int, *, group_tokens: int = 2**27, split_every: int = 8,
                 client: Any = None, progress: bool = False) -> tuple[list[Any], int]:
    """Counting in two steps. First every partition is laid out for counting on the workers (kept there)
    and the windows per first id are summed; the first ids are cut into `ranges` ranges of near-equal
    windows. Then the counting graph (dask.delayed): each range counts its k-grams over consecutive
    layouts of at most group_tokens tokens (a group) in one go, task (group g, range r) on worker thread
    g * ranges + r (modulo the threads: with a range per thread, all of a range's groups on one worker),
    and a range's groups are merged on range r's thread (a tree of split_every-way merges). Returns (one
    delayed per range: a table whose order k-1 ranks count from 0; the largest id); tables.concat of the
    ranges in order (narrowed) is the count table of the whole bag."""
    from dask.base import annotate
    from dask.delayed import delayed

    laid = _persist([delayed(_lay_out)(template, p) for p in bag.to_delayed()], client)
    level = [delayed(_weights)(x) for x in laid]
    while len(level) > 1:
        level = [delayed(_sum_weights)(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    ids, counts, max_id, sizes = compute(level[0], client, progress)
    groups: list[list[Any]] = [[]]
    total = 0
    for x, n in zip(laid, sizes):
        if groups[-1] and total + n > group_tokens:
            groups.append([])
            total = 0
        groups[-1].append(x)
        total += n
    cuts = np.unique(_cuts(ranges, ids, counts))  # (an empty range would repeat another's tasks)
    ranges = cuts.size - 1
    slots = _slots(client)
    shards = []

    def on(slot: int) -> Any:
        return annotate(**{"workers": [slots[slot % len(slots)]], "allow_other_workers": True} if slots else {})

    for r in range(ranges):
        level = []
        for g, parts in enumerate(groups):
            with on(g * ranges + r):
                level.append(delayed(_count_range)(template, int(cuts[r]), int(cuts[r + 1]), *parts))
        with on(r):
            while len(level) > 1:
                level = [delayed(tables.merge)(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
        shards.append(level[0])
    return shards, max_id


def merge_models(models: Any) -> NgramLM:
    """One count model with the counts of all (same order, options and vocabulary), in one k-way merge."""
    models = list(models)
    if len(models) == 1:
        return models[0]
    first = models[0]
    for m in models[1:]:
        first._check_mergeable(m)
    out = first._like()
    out.max_id = max(m.max_id for m in models)
    out._keys, out._counts = tables.merge(*[(m._keys, m._counts) for m in models])
    return out


def _first_item(bag: Any) -> Any:
    """The first item of the bag (None when it is empty), computing as few partitions as it can."""
    got = bag.take(1, npartitions=1, warn=False)
    if not got and bag.npartitions > 1:
        got = bag.take(1, npartitions=-1, warn=False)
    return got[0] if got else None


def _client(client: Any) -> Any:
    """client, else the default client when there is one, else None (Dask's local scheduler)."""
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def fit_distributed(corpus: Any, order: int, *, smoothing: str = "kneser-ney", min_count: int = 1,
                    vocab: WordVocab | None = None, client: Any = None, tasks: int | None = None,
                    group_tokens: int = 2**27, split_every: int = 8, blocksize: int | str | None = "64MiB",
                    progress: bool = False, **options: Any) -> NgramLM:
    """An NgramLM counted on Dask, equal to the one process fit (see the module docstring).

    corpus: a Bag of texts (one sentence or document per item) or of 1-D id arrays, or a path, glob or
    list of text files (one sentence per line). Texts make a word model exactly as ``NgramLM.for_words``
    (the vocabulary built over the corpus with min_count, unless `vocab` is given); id arrays make the
    model ``NgramLM(order, smoothing=..., **options).fit(items)`` makes. options: alpha,
    discount_fallback, prune (and for id arrays vocab_size, bos_id, eos_id, unk_id). tasks: first-id ranges,
    counted in parallel (default: the cluster's threads). Every range reads every token, 2 or 4 bytes each
    over the network; with fewer ranges than threads, the groups of a range are counted on several workers and
    their tables merged on one (about 16 bytes per table entry over the network instead), which costs less
    network past about 8 workers. group_tokens: the most tokens one counting task reads (more make groups of
    partitions whose tables are merged; a task holds about 8 bytes per token of its group, 32 per window of
    its range and 16 per entry of its table). split_every: tables per merge (2 to 64). progress: Dask's
    progress bar on stderr (with a client)."""
    if not isinstance(split_every, int) or isinstance(split_every, bool) or not 2 <= split_every <= 64:
        raise ValueError(f"split_every must be an integer in [2, 64], got {split_every!r}")
    if tasks is not None and (not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1):
        raise ValueError(f"tasks must be a positive integer or None, got {tasks!r}")
    if not isinstance(group_tokens, int) or isinstance(group_tokens, bool) or not 1 <= group_tokens < 2**32:
        raise ValueError(f"group_tokens must be an integer in [1, 2^32), got {group_tokens!r}")
    from dask.delayed import delayed

    bag = read_corpus(corpus, blocksize)
    client = _client(client)
    first = _first_item(bag) if vocab is None else ""
    if isinstance(first, (str, bytes)):
        if vocab is None:
            vocab = build_vocab_distributed(bag, min_count=min_count, client=client, split_every=split_every,
                                            progress=progress)
        template = NgramLM(order, smoothing=smoothing, vocab_size=len(vocab), bos_id=vocab.BOS, eos_id=vocab.EOS,
                           unk_id=vocab.UNK, vocab=vocab, **options)
    else:
        template = NgramLM(order, smoothing=smoothing, **options)
    ranges = tasks or (max(1, sum(client.nthreads().values())) if client is not None else os.cpu_count() or 1)
    shards, max_id = count_shards(bag, _ship(template, client), ranges, group_tokens=group_tokens,
                                  split_every=split_every, client=client, progress=progress)
    got = compute([delayed(tables.narrow)(s) for s in shards], client, progress)  # (about half the bytes)
    out = template._like()
    out._keys, out._counts = tables.concat(got)
    out.max_id = max_id
    return out


# ------------------------------------------------------------------------------------------- scoring
def _score_partition(items: Any, lm: Any, log10: bool) -> list[dict[str, Any]]:
    items = list(items)
    if not items:
        return []
    s = lm.score_batch(items, log10=log10)
    n = s.tokens
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ppl = np.exp(-(s.logprob * np.log(10) if log10 else s.logprob) / n)
    return [{"text": t, "logprob": float(a), "tokens": int(b), "oov": int(c), "perplexity": float(d)}
            for t, a, b, c, d in zip(items, s.logprob, n, s.oov, ppl)]


def score_distributed(lm: Any, corpus: Any, *, client: Any = None, log10: bool = False,
                      blocksize: int | str | None = "64MiB") -> Any:
    """Per document scores of an n-gram model (NgramLM or ArpaLM) over a corpus (see read_corpus): a lazy
    ``dask.bag.Bag`` of dicts {text, logprob, tokens, oov, perplexity}, one per item in order, equal to
    ``lm.score_batch`` on all items in one process. logprob is the natural log (log10=True: KenLM's unit);
    tokens counts the predicted tokens (EOS included); perplexity is exp(-ln p / tokens). The model is sent
    once per worker (or give the future of one already scattered). Keep documents under a perplexity
    threshold:
    ``score_distributed(lm, "crawl/*.txt").filter(lambda r: r["perplexity"] < 1000).pluck("text")``."""
    if not hasattr(lm, "score_batch") and type(lm).__name__ != "Future":
        raise TypeError(f"lm must be an NgramLM or ArpaLM, got {type(lm).__name__}")
    bag = read_corpus(corpus, blocksize)
    return bag.map_partitions(_score_partition, _ship(lm, client), bool(log10))
