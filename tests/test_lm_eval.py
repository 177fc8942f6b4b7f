"""lm-evaluation-harness: its own metric functions and rolling windows on the inputs fastlm's take, and
fastlm's n-gram models evaluated by lm_eval.simple_evaluate through the "fastlm-ngram" adapter on tasks
defined here over local data (nothing is downloaded)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import fastlm
import fastlm.ngram as ng

import anchors

lm_eval = anchors.module("lm_eval", "pip install lm-eval")
from lm_eval.api import metrics as lm_metrics  # noqa: E402
from lm_eval.utils import get_rolling_token_windows  # noqa: E402


def test_metric_functions_agree():
    """perplexity, weighted_perplexity (word / byte perplexity), bits_per_byte, and acc / acc_norm (by
    characters) / acc_bytes as ConfigurableTask.process_results computes them, against fastlm's."""
    rng = np.random.default_rng(0)
    ll = -rng.exponential(30, 50)
    words = rng.integers(1, 40, 50)
    nbytes = words * 5 + rng.integers(0, 9, 50)
    assert lm_metrics.perplexity(list(ll)) == pytest.approx(fastlm.word_perplexity(ll.sum(), ll.size), rel=1e-12)
    assert lm_metrics.weighted_perplexity(list(zip(ll, words))) == pytest.approx(
        fastlm.word_perplexity(ll.sum(), int(words.sum())), rel=1e-12)
    assert lm_metrics.weighted_perplexity(list(zip(ll, nbytes))) == pytest.approx(
        fastlm.byte_perplexity(ll.sum(), int(nbytes.sum())), rel=1e-12)
    assert lm_metrics.bits_per_byte(list(zip(ll, nbytes))) == pytest.approx(
        fastlm.bits_per_byte(ll.sum(), int(nbytes.sum())), rel=1e-12)
    import datasets
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config={"task": "fastlm_choices", "output_type": "multiple_choice",
                                    "custom_dataset": lambda **_: {"test": datasets.Dataset.from_list(
                                        [{"q": "?", "choices": ["a", "b"], "gold": 0}])}, "test_split": "test",
                                    "doc_to_text": "{{q}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
                                    "metric_list": [{"metric": m} for m in ("acc", "acc_norm", "acc_bytes")]})
    for trial in range(30):
        choices = ["".join(rng.choice(list("abcé "), rng.integers(1, 12))) for _ in range(4)]
        lls = -rng.exponential(10, 4)
        gold = int(rng.integers(0, 4))
        got = task.process_results({"q": "?", "choices": choices, "gold": gold}, [(x, False) for x in lls])
        chars = [len(c) for c in choices]
        nb = [len(c.encode()) for c in choices]
        assert got["acc"] == float(fastlm.choose(lls) == gold)
        assert got["acc_norm"] == float(fastlm.choose(lls, lengths=chars, normalize="chars") == gold)
        assert got["acc_bytes"] == float(fastlm.choose(lls, lengths=nb, normalize="bytes") == gold)


@pytest.mark.parametrize("max_length", [1, 2, 5, 16])
def test_rolling_windows_are_lm_evals(max_length):
    """fastlm.rolling_windows(prefix_token=True, stride) gives the (input, predicted) pairs of lm-eval's
    get_rolling_token_windows(context_len = max_length - stride + 1)."""
    for n in (0, 1, 2, max_length, 3 * max_length + 2, 37):
        toks = list(range(100, 100 + n))
        for stride in sorted({1, max(1, max_length // 2), max_length}):
            want = [(list(a), list(b)) for a, b in get_rolling_token_windows(toks, 7, max_length,
                                                                             max_length - stride + 1)]
            got = [(([7] if i0 < 0 else []) + toks[max(i0, 0):i1], toks[t0:t1])
                   for i0, i1, l0, l1, t0, t1 in fastlm.rolling_windows(n, max_length, stride=stride, prefix_token=True)]
            assert got == want


@pytest.fixture(scope="module")
def corpus():
    return anchors.kjv_verses()


def write_tasks(path, corpus):
    """A multiple-choice task (the verse's true ending among three others) and a perplexity task."""
    rng = np.random.default_rng(1)
    mc, ppl = [], []
    for i in range(40):
        words = corpus[30000 + i].split()
        cut = max(1, len(words) // 2)
        others = [" " + " ".join(corpus[int(rng.integers(0, 30000))].split()[cut:]) or " amen" for _ in range(3)]
        gold = int(rng.integers(0, 4))
        choices = others[:gold] + [" " + " ".join(words[cut:])] + others[gold:]
        mc.append({"q": " ".join(words[:cut]), "choices": choices, "gold": gold})
        ppl.append({"text": corpus[30100 + i]})
    for name, rows in (("mc", mc), ("ppl", ppl)):
        with open(path / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "fastlm_mc.yaml").write_text(f"""task: fastlm_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path / 'mc.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
""")
    (path / "fastlm_ppl.yaml").write_text(f"""task: fastlm_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path / 'ppl.jsonl'}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""")
    return mc, ppl


def test_simple_evaluate_with_the_ngram_adapter(corpus, tmp_path, monkeypatch):
    """lm_eval.simple_evaluate(model="fastlm-ngram") on local tasks gives the accuracies and perplexities
    fastlm computes directly from the same model."""
    import fastlm.eval_harness  # noqa: F401  (registers "fastlm-ngram")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = ng.NgramLM.for_words(corpus[:30000], 3, smoothing="kneser-ney")
    model_file = tmp_path / "m.bin"
    lm.save(model_file)
    mc, ppl = write_tasks(tmp_path, corpus)
    out = simple_evaluate(model="fastlm-ngram", model_args=f"path={model_file}", tasks=["fastlm_mc", "fastlm_ppl"],
                          task_manager=TaskManager(include_path=str(tmp_path)), limit=None, bootstrap_iters=0,
                          log_samples=False)
    res = out["results"]
    # the same numbers from fastlm: each choice's continuation log p after its context
    ctx = [d["q"] for d in mc for _ in d["choices"]]
    cont = [c for d in mc for c in d["choices"]]
    seqs = [np.concatenate([lm.vocab.encode(a), lm.vocab.encode(b)]) for a, b in zip(ctx, cont)]
    fs = lm.full_scores(seqs)
    lls = np.array([fs.logprob[fs.offsets[i] + lm.vocab.encode(a).size:
                               fs.offsets[i] + lm.vocab.encode(a).size + lm.vocab.encode(b).size].sum()
                    for i, (a, b) in enumerate(zip(ctx, cont))]).reshape(len(mc), 4)
    gold = np.array([d["gold"] for d in mc])
    chars = np.array([[len(c) for c in d["choices"]] for d in mc], float)
    nb = np.array([[len(c.encode()) for c in d["choices"]] for d in mc], float)
    assert res["fastlm_mc"]["acc,none"] == pytest.approx(np.mean(fastlm.choose(lls) == gold))
    assert res["fastlm_mc"]["acc_norm,none"] == pytest.approx(
        np.mean(fastlm.choose(lls, lengths=chars, normalize="chars") == gold))
    assert res["fastlm_mc"]["acc_bytes,none"] == pytest.approx(
        np.mean(fastlm.choose(lls, lengths=nb, normalize="bytes") == gold))
    assert (np.ptp(lls, axis=1) > 0).all()  # (the choices' scores differ: the comparison can fail)
    texts = [d["text"] for d in ppl]
    total = float(lm.score_batch(texts).logprob.sum())
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    nbytes = sum(len(t.encode()) for t in texts)
    assert res["fastlm_ppl"]["word_perplexity,none"] == pytest.approx(fastlm.word_perplexity(total, words), rel=1e-9)
    assert res["fastlm_ppl"]["byte_perplexity,none"] == pytest.approx(fastlm.byte_perplexity(total, nbytes), rel=1e-9)
    assert res["fastlm_ppl"]["bits_per_byte,none"] == pytest.approx(fastlm.bits_per_byte(total, nbytes), rel=1e-9)
    assert math.isfinite(res["fastlm_ppl"]["word_perplexity,none"])


def test_adapter_is_greedy_and_generate(corpus):
    import fastlm.eval_harness as eh

    lm = ng.NgramLM.for_words(corpus[:3000], 2, smoothing="kneser-ney")
    h = eh.NgramHarnessLM(model=lm)

    class Req:
        def __init__(self, *args):
            self.args = args

    ctx = "In the beginning God"
    p = lm.next_token_distribution(np.concatenate([[lm.bos_id], lm.vocab.encode(ctx)])[-1:])
    best = lm.vocab.words[int(np.argmax(p))]
    other = lm.vocab.words[int(np.argsort(p)[-2])]
    (lp1, g1), (lp2, g2) = h.loglikelihood([Req(ctx, " " + best), Req(ctx, " " + other)])
    assert g1 and not g2 and lp1 > lp2
    assert lp1 == pytest.approx(math.log(p[int(np.argmax(p))]), rel=1e-9)
    text = h.generate_until([Req(ctx, {"until": ["."], "max_gen_toks": 30})])[0]
    assert "." not in text and len(text.split()) <= 30
    with pytest.raises(ValueError, match="one of path"):
        eh.NgramHarnessLM()
