"""The house keeps its shape (ARCHITECTURE.md): imports run one way.

The face (`backend/cli.py` → the tools → `backend/app.py`) → domain packages → access packages → the
base (the modules at `backend/`'s top); the tablet package imports nothing of `backend`. Every
import counts, also one inside a function or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACE = {"backend.app", "backend.cli"}
# Packages that belong to the base: they import nothing of the others (the language: backend.i18n).
BASE_PACKAGES = {"i18n"}


def unit_of(module: str) -> str | None:
    """`backend.sync.push` → `backend.sync`; a base module → `base`; outside the project → None."""
    parts = module.split(".")
    if parts[0] == "mobile_sync_protocol":
        return "mobile_sync_protocol"
    if parts[0] != "backend":
        return None
    if len(parts) == 1 or parts[1] in BASE_PACKAGES:
        return "base"
    if (ROOT / "backend" / parts[1]).is_dir():
        return f"backend.{parts[1]}"
    name = f"backend.{parts[1]}"
    return name if name in FACE else "base"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def edges() -> dict[str, dict[str, list[str]]]:
    """unit → unit it imports → the files that do."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in [*ROOT.glob("backend/**/*.py"), *ROOT.glob("mobile_sync_protocol/**/*.py")]:
        source = unit_of(module_name(path))
        assert source is not None
        for module in imported(path):
            target = unit_of(module)
            if target is not None and target != source:
                graph[source][target].append(str(path.relative_to(ROOT)))
    return graph


def test_the_tablet_package_imports_nothing_of_the_server() -> None:
    assert not edges()["mobile_sync_protocol"], dict(edges()["mobile_sync_protocol"])


def test_the_base_imports_no_package() -> None:
    wrong = {target: files for target, files in edges()["base"].items() if target != "mobile_sync_protocol"}
    assert not wrong, f"base modules import packages: {wrong}"


def test_only_the_cli_imports_the_tools_and_only_they_import_the_app() -> None:
    """The tools sit on top (the simulator drives the app in-process); the CLI runs them."""
    graph = edges()
    for source, targets in graph.items():
        if source not in FACE | {"backend.tools"}:
            assert not FACE & set(targets), f"{source} imports the face: {dict(targets)}"
        if source != "backend.cli":
            assert "backend.tools" not in targets, f"{source} imports the tools: {targets['backend.tools']}"


def test_eligibility_does_not_import_enrollment() -> None:
    assert "backend.enrollment" not in edges()["backend.eligibility"], edges()["backend.eligibility"][
        "backend.enrollment"
    ]


def test_no_cycle_between_packages() -> None:
    graph = {source: set(targets) for source, targets in edges().items() if source not in FACE}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in FACE:
                continue
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif len(path) < 12:
                visit(target, [*path, target])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
