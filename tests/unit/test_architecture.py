"""The package's import graph: no circles, and no layer importing one above it.

Every ``import`` statement of every module under ``davserver/`` counts — at the top, inside
functions, and under ``if TYPE_CHECKING:`` (a circle of type hints is still two modules that
each need the other to be understood). ``from davserver.x import y`` is an edge to the module
``davserver.x.y`` when that is a module, else to ``davserver.x``; a package's ``__init__`` is
the node of the package's own name. The graph must be acyclic, and the layers of
``FORBIDDEN`` must hold (DESIGN §3, STYLE "The house after wave 1").
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "davserver"

# What each part of the package must never import (by module-name prefix). Dependencies point
# down: cli/server -> web -> dav -> vault -> index/blobs/crypto.
_ABOVE_VAULT = (
    "davserver.dav",
    "davserver.http",
    "davserver.httpio",
    "davserver.web",
    "davserver.cli",
    "davserver.server",
    "davserver.runtime",
    "davserver.admin",
)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # Pure functions: nothing of ours at all (their own submodules aside).
    "davserver.crypto": ("davserver.",),
    "davserver.errors": ("davserver.",),
    "davserver.blobs": ("davserver.vault", "davserver.index", *_ABOVE_VAULT),
    "davserver.index": ("davserver.vault", "davserver.blobs", *_ABOVE_VAULT),
    "davserver.vault": _ABOVE_VAULT,
    "davserver.admin": (
        "davserver.dav",
        "davserver.http",
        "davserver.web",
        "davserver.cli",
        "davserver.server",
    ),
    "davserver.http": (
        "davserver.vault",
        "davserver.dav",
        "davserver.web",
        "davserver.cli",
        "davserver.server",
        "davserver.admin",
    ),
    "davserver.httpio": (
        "davserver.vault",
        "davserver.dav",
        "davserver.web",
        "davserver.cli",
        "davserver.server",
        "davserver.admin",
    ),
    "davserver.dav": ("davserver.web", "davserver.cli", "davserver.server", "davserver.admin"),
    "davserver.web": ("davserver.cli", "davserver.server"),
    "davserver.config": ("davserver.",),  # errors aside (allowed below)
    # Metric definitions and the audit log: every layer may use them, so they use nothing
    # of ours (the audit log counts its failed writes in a metric).
    "davserver.metrics": ("davserver.",),
    "davserver.audit": ("davserver.",),  # metrics aside (allowed below)
    # Nextcloud's retention rules: pure arithmetic that the configuration checks values
    # with and the vault applies.
    "davserver.retention": ("davserver.",),
    # The gauges computed on scrape: vault statistics, never the HTTP side.
    "davserver.monitoring": (
        "davserver.dav",
        "davserver.http",
        "davserver.web",
        "davserver.cli",
        "davserver.server",
        "davserver.admin",
    ),
}
# The assembly on top may import anything below it.
ASSEMBLY = ("davserver", "davserver.cli", "davserver.server", "davserver.runtime")
ALLOWED: dict[str, tuple[str, ...]] = {
    "davserver.config": ("davserver.errors", "davserver.retention"),
    "davserver.audit": ("davserver.metrics",),
}


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import."""
    if level == 0:
        return target or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def imports_of(source: str, name: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ours that ``source`` (the module ``name``) imports, anywhere in it."""
    ours = set(known)
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in ours else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import davserver.vault.tree`` also works when only a prefix is ours.
            while target and target not in ours:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root, package)
    return {
        name: imports_of(
            path.read_text(encoding="utf-8"), name, path.name == "__init__.py", mods.keys()
        )
        for name, path in mods.items()
    }


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules, first repeated at the end), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _within(name: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    out = []
    for module, targets in graph.items():
        for layer, forbidden in FORBIDDEN.items():
            if not _within(module, layer):
                continue
            allowed = ALLOWED.get(layer, ())
            for target in sorted(targets):
                if _within(target, layer) or any(_within(target, a) for a in allowed):
                    continue
                if any(_within(target, f) for f in forbidden):
                    out.append(f"{module} imports {target} (a {layer} module must not)")
    return out


# -- the checks on davserver ----------------------------------------------------------------


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_layer_imports_a_higher_one() -> None:
    assert layer_violations(import_graph()) == []


def test_every_part_of_the_package_has_a_place_in_the_layers() -> None:
    """A new package must be given its layer here before it can grow imports."""
    parts = {".".join(name.split(".")[:2]) for name in import_graph()}
    unplaced = parts - set(FORBIDDEN) - set(ASSEMBLY)
    assert unplaced == set()


def test_the_dav_package_is_a_chain_not_a_circle() -> None:
    """The dispatch function is handed to the provider by the assembly; resources and
    handlers know the provider only as the ``TreeProvider`` protocol below them."""
    graph = import_graph()
    assert "davserver.dav.handlers" not in graph["davserver.dav.provider"]
    for module in ("handlers", "resources", "propfind", "nextcloud"):
        assert "davserver.dav.provider" not in graph[f"davserver.dav.{module}"], module
    assert "davserver.vault.uploads" not in graph["davserver.vault.tree"]
    assert "davserver.vault" not in graph["davserver.vault.tree"]


# -- the checks can fail --------------------------------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_circle_of_type_hints_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import X\n"
            ),
            "pkg/c.py": "def f():\n    from . import a\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a"}  # relative, inside a function
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"pkg.a", "pkg.b", "pkg.c"}


def test_an_acyclic_graph_passes(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import x\n",
            "pkg/a.py": "import pkg.b.c\n",
            "pkg/b/__init__.py": "",
            "pkg/b/c.py": "import os\nfrom ..b import c\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b.c"}, "pkg.b": set(), "pkg.b.c": set()}
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("davserver.crypto.kdf", "davserver.errors"),
        ("davserver.blobs.s3", "davserver.vault"),
        ("davserver.index.fast", "davserver.dav.handlers"),
        ("davserver.vault.tree", "davserver.dav.resources"),
        ("davserver.vault.nodes", "davserver.server"),
        ("davserver.dav.auth", "davserver.web.routes"),
        ("davserver.http.request", "davserver.vault"),
    ],
)
def test_an_import_pointing_up_is_a_violation(module: str, target: str) -> None:
    assert layer_violations({module: {target}}) != []


def test_imports_pointing_down_are_fine() -> None:
    graph = {
        "davserver.web.health": {"davserver.vault", "davserver.dav.middleware"},
        "davserver.dav.handlers": {"davserver.vault.tree", "davserver.errors"},
        "davserver.vault.tree": {"davserver.index.fast", "davserver.crypto"},
        "davserver.config": {"davserver.errors"},
        "davserver.crypto.kdf": {"davserver.crypto.primitives"},
    }
    assert layer_violations(graph) == []
