"""The layers point one way, read off the imports of every module (lazy ones inside functions too).

jobs -> pipelines -> transforms -> (training, schemas). A kernel module (any
module under transforms/ outside a ``beam`` package) imports no apache_beam.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "pipelines", "transforms", "schemas", "training")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module a file imports, relative imports resolved."""
    package = ["corpusmill", *path.relative_to(REPO).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            # `from corpusmill.transforms import io` imports the submodule io.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def is_kernel(path: Path) -> bool:
    parts = path.relative_to(REPO).parts
    return parts[0] == "transforms" and "beam" not in parts[:-1] and parts[-1] != "beam.py"


def violations(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    found = []
    for path in paths:
        for name in sorted(imported_modules(path)):
            if any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


def test_every_package_has_modules():
    for package in PACKAGES:
        assert modules(package), package
    assert [p for p in modules("transforms") if is_kernel(p)] and [p for p in modules("transforms") if not is_kernel(p)]


@pytest.mark.parametrize("package, banned", [
    ("schemas", ("corpusmill.transforms", "corpusmill.pipelines", "corpusmill.jobs", "corpusmill.training")),
    ("training", ("corpusmill.transforms", "corpusmill.pipelines", "corpusmill.jobs", "apache_beam")),
    ("transforms", ("corpusmill.pipelines", "corpusmill.jobs")),
    ("pipelines", ("corpusmill.jobs",)),
])
def test_layers_point_one_way(package, banned):
    assert violations(modules(package), banned) == []


def test_kernel_modules_import_no_beam():
    kernels = [p for p in modules("transforms") if is_kernel(p)]
    assert violations(kernels, ("apache_beam",)) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    # The rules above are only as good as the import reader: it must see what hides in functions.
    module = REPO / "transforms" / "dedup" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "def f():\n    import apache_beam as beam\n    from ..io.beam import shards\n"))
    names = imported_modules(module)
    assert "apache_beam" in names and "corpusmill.transforms.io.beam.shards" in names
    assert violations([module], ("apache_beam",)) and is_kernel(module)
