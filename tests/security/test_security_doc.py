"""SECURITY.md maps every threat to a test: each cited `tests/...::name` must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")


def defined_names(path: Path) -> set[str]:
    """Test functions and classes as pytest names them (Class::method for methods)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, ast.FunctionDef)}
        if isinstance(node, ast.Assign):  # TestX = Machine.TestCase (runTest)
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.startswith("Test"):
                    names |= {target.id, f"{target.id}::runTest"}
    return names


def test_every_test_cited_in_security_md_exists() -> None:
    cited = CITATION.findall((ROOT / "SECURITY.md").read_text())
    assert len(cited) >= 10
    missing = [f"{file}::{name}" for file, name in cited
               if not (ROOT / file).exists() or name not in defined_names(ROOT / file)]
    assert missing == []


def test_every_threat_row_cites_a_test() -> None:
    rows = [line for line in (ROOT / "SECURITY.md").read_text().splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 10
    assert all(CITATION.search(row) for row in rows)
