"""The layers: ml < catalog < scraping < classifier. No module imports one of a layer above its own.

Every import statement counts, also those inside functions (a lazy import is still a dependency).
``carsite`` (settings, URLs, the API's shared error shape and permissions) wires the apps together and
is not a layer; ``ml`` stays free of Django and of every app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["ml", "catalog", "scraping", "classifier"]
ML_MUST_NOT_IMPORT = {"django", "rest_framework", "celery", "carsite", *LAYERS[1:]}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every absolute import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules_of(layer: str) -> list[Path]:
    return sorted(p for p in (REPO / layer).rglob("*.py") if "migrations" not in p.parts)


def violations() -> list[str]:
    found = []
    for rank, layer in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :]) | (ML_MUST_NOT_IMPORT if layer == "ml" else set())
        for path in modules_of(layer):
            for package in sorted(imported_packages(path) & above):
                found.append(f"{path.relative_to(REPO)} imports {package}")
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert violations() == []


@pytest.mark.parametrize("layer", LAYERS)
def test_the_walk_sees_every_layer(layer):
    # Guards the test itself: a wrong root or pattern would find nothing and pass.
    assert len(modules_of(layer)) >= 5


def test_the_walk_finds_a_lazy_import_inside_a_function(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from classifier.selectors import registry\n    import scraping.http\n")
    assert imported_packages(module) == {"classifier", "scraping"}
