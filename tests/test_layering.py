"""The layout's rules, read from the source (every import, at the top, inside functions, and
under TYPE_CHECKING): which part may import which, no import circles, no file over 400 lines.

    model/                    the core: never imports chargpt_tui (nor Textual)
    chargpt_tui/wire/         between a run and its viewers: neither end's code (host, dashboard)
    chargpt_tui/host/         the run's process: never Textual, the dashboard or the browser view
    chargpt_tui/dashboard/    the viewer: never the host; its widgets and screens never the app
    chargpt_tui/browser/      serve: never the host or the dashboard (a tab runs `attach` as a process)
    chargpt_tui/runs_browser/ the runs browser, a viewer too: never the host, serve or the commands
    chargpt_tui/inside/       the model's inside drawn as Rich Text: plain values in, no PyTorch or Textual
    chargpt_tui/commands/     may import every part

That a viewer never loads PyTorch and the host never loads Textual at run time is checked by
running them: tests/test_core_imports.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "chargpt_tui")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


SOURCES = _sources()


def _imports(name: str, path: Path) -> set[str]:
    """The modules `name` imports (the project's as module names; others by their top package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from package import module`
                if f"{target}.{alias.name}" in SOURCES:
                    found.add(f"{target}.{alias.name}")
    return found


IMPORTS = {name: _imports(name, path) for name, path in SOURCES.items()}


def _imports_any(name: str, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in IMPORTS[name] if any(m == p or m.startswith(p + ".") for p in prefixes))


RULES = [
    # (modules under, may not import)
    ("model", ("chargpt_tui", "textual", "textual_plotext", "textual_serve", "rich")),
    ("chargpt_tui.format", ("chargpt_tui.host", "chargpt_tui.wire", "chargpt_tui.dashboard", "chargpt_tui.browser",
                            "chargpt_tui.commands", "textual", "torch")),
    ("chargpt_tui.wire", ("chargpt_tui.host", "chargpt_tui.dashboard", "chargpt_tui.browser", "chargpt_tui.commands",
                          "textual")),
    ("chargpt_tui.host", ("chargpt_tui.dashboard", "chargpt_tui.browser", "chargpt_tui.commands", "textual",
                          "textual_plotext", "textual_serve")),
    ("chargpt_tui.dashboard", ("chargpt_tui.host", "chargpt_tui.browser", "chargpt_tui.commands",
                               "chargpt_tui.runs_browser")),
    ("chargpt_tui.runs_browser", ("chargpt_tui.host", "chargpt_tui.browser", "chargpt_tui.commands")),
    ("chargpt_tui.inside", ("chargpt_tui.host", "chargpt_tui.wire", "chargpt_tui.dashboard", "chargpt_tui.browser",
                            "chargpt_tui.commands", "chargpt_tui.runs_browser", "textual", "torch", "model")),
    ("chargpt_tui.dashboard.widgets", ("chargpt_tui.dashboard.app", "chargpt_tui.dashboard.screens",
                                       "chargpt_tui.wire")),
    ("chargpt_tui.dashboard.screens", ("chargpt_tui.dashboard.app",)),
    ("chargpt_tui.dashboard.state", ("textual", "torch")),
    ("chargpt_tui.browser", ("chargpt_tui.host", "chargpt_tui.dashboard", "chargpt_tui.commands", "torch")),
]


@pytest.mark.parametrize(("under", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_each_part_imports_only_what_it_may(under: str, forbidden: tuple[str, ...]) -> None:
    modules = [name for name in SOURCES if name == under or name.startswith(under + ".")]
    assert modules, f"no module under {under}: the layout changed, and so must this test"
    broken = {name: _imports_any(name, forbidden) for name in modules}
    assert {name: found for name, found in broken.items() if found} == {}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's), in the project's modules."""
    graph = {name: sorted(m for m in imports if m in SOURCES and m != name) for name, imports in IMPORTS.items()}
    # importing a package runs its __init__; importing a module of the package is not importing
    # the package's other modules, so a package's __init__ importing its modules is no circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert _cycles() == []


def test_the_rules_see_imports_inside_functions() -> None:
    """The rules above are only as good as the import reading: a lazy import counts too."""
    assert "chargpt_tui.dashboard.session" in IMPORTS["chargpt_tui.commands.cli"]  # imported inside a function


def test_no_file_over_400_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in SOURCES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
