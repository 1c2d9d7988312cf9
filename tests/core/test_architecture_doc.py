"""The contracts the code cites live in the repository: docs/ARCHITECTURE.md, numbered 1..10."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
CITING = ("engine", "ewg_tui", "tests", "bench")


def _sources() -> list[Path]:
    return [p for folder in CITING for p in (ROOT / folder).rglob("*.py")]


def test_the_architecture_numbers_contracts_one_to_ten():
    numbers = [int(n) for n in re.findall(r"^\*\*(\d+)\. ", DOC.read_text(encoding="utf-8"), re.M)]
    assert numbers == list(range(1, 11))


def test_no_module_cites_a_design_file_outside_the_repository():
    design = "DESIGN" + ".md"  # spelled apart so this file does not cite it
    assert [str(p.relative_to(ROOT)) for p in _sources() if design in p.read_text(encoding="utf-8")] == []


def test_every_cited_contract_exists():
    cited = re.compile(r"ARCHITECTURE\.md,? contracts? (\d+)(?: and (\d+))?")
    numbers = {
        int(n)
        for p in _sources()
        for m in cited.finditer(p.read_text(encoding="utf-8"))
        for n in m.groups()
        if n
    }
    assert numbers and numbers <= set(range(1, 11))
