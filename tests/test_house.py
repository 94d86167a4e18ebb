"""The house's rules that the import contract (`lint-imports`, run by `make test`) cannot see."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "shortlist"


def test_every_class_name_is_defined_once():
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(SRC)))
    twice = {name: files for name, files in where.items() if len(files) > 1}
    assert not twice


def test_the_base_imports_nothing_of_ours_but_the_base():
    base = {"config", "errors", "columns"}
    for name in base:
        tree = ast.parse((SRC / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shortlist"):
                assert node.module.split(".")[1] in base, f"{name}.py imports {node.module}"
