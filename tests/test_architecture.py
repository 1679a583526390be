"""The import rules of docs/architecture.md, read from the code itself, so a wrong arrow fails here."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("daemon", "modelstore")


def modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """The project modules a file imports, at any depth of the file (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# (importer, imported): no module inside the first may import anything inside the second.
FORBIDDEN = [
    ("daemon.inference", "daemon.http"),
    ("daemon.inference", "daemon.cli"),
    ("modelstore", "daemon"),
    ("daemon.http", "daemon.cli"),
    ("daemon.config", "daemon.http"),
    ("daemon.config", "daemon.inference"),
    ("daemon.startup", "daemon.http"),
]
# Only the edge speaks HTTP: Starlette and uvicorn appear in daemon/http/ and in the process entry point.
HTTP_LIBRARIES = ("starlette", "uvicorn")
HTTP_ALLOWED = ("daemon.http", "daemon.serve")


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN, ids=[f"{a}-x-{b}" for a, b in FORBIDDEN])
def test_layers_import_only_downwards(importer: str, imported: str) -> None:
    broken = sorted(
        f"{name} imports {target}"
        for name, path in modules().items()
        if within(name, importer)
        for target in imports_of(path)
        if within(target, imported)
    )
    assert not broken, broken


def test_only_the_edge_knows_starlette() -> None:
    offenders = []
    for name, path in modules().items():
        if any(within(name, allowed) for allowed in HTTP_ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            roots = []
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = [node.module.split(".")[0]]
            offenders += [f"{name} imports {root}" for root in roots if root in HTTP_LIBRARIES]
    assert not offenders, offenders


def test_the_daemon_never_imports_the_cli() -> None:
    """The cli runs in the user's terminal; nothing the daemon runs may reach into it."""
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in modules().items()
        if not within(name, "daemon.cli")
        for target in imports_of(path)
        if within(target, "daemon.cli")
    )
    assert not offenders, offenders


def test_the_rules_see_every_folder() -> None:
    """Guard against a rule that passes because it reads nothing."""
    names = modules()
    for package in ("daemon.http", "daemon.inference", "daemon.cli", "modelstore"):
        inside = [n for n in names if within(n, package)]
        assert len(inside) >= 3, package
    assert "daemon.http.errors" in imports_of(names["daemon.http.ollama"])
    assert any(within(t, "modelstore") for t in imports_of(names["daemon.inference.engine"]))


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_the_daemon_imports_only_what_it_declares() -> None:
    """Every third-party module that daemon/ and modelstore/ import comes from a dependency of the install, or of
    an extra a user installs for a feature (quantize: NNCF); the test extra never counts."""
    requirements = [r for r in importlib.metadata.requires("ovembed") or [] if 'extra == "test"' not in r]
    declared = {_canonical(re.split(r"[\s<>=!~;\[(]", spec, maxsplit=1)[0]) for spec in requirements}
    assert {"openvino", "huggingface-hub", "httpx2"} <= declared
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            roots = []
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            for root in roots:
                if root in sys.stdlib_module_names or root in PACKAGES or root == "__future__":
                    continue
                if not {_canonical(d) for d in providers.get(root, [root])} & declared:
                    undeclared.append(f"{name} imports {root}")
    assert not undeclared, undeclared
