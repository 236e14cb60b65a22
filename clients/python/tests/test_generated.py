"""The committed models are what the pinned generator writes from the repo's schemas now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
COMMITTED = PACKAGE / "src" / "airflow_eventstream" / "_generated"


def _generate():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate", PACKAGE / "scripts" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = module
    spec.loader.exec_module(module)
    return module.generate


def test_committed_module_equals_a_fresh_generation(tmp_path: Path) -> None:
    written = _generate()(tmp_path)
    fresh = {p.name: p.read_text() for p in written}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.py")}
    assert sorted(committed) == sorted(fresh), "files differ: run `python clients/python/scripts/generate.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from schemas/*.schema.json: run `python clients/python/scripts/generate.py` and commit"
