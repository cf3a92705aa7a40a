"""The layers of DESIGN.md, read from the source: every import, lazy ones too, goes down, never up or round.

Each module's imports are read from its syntax tree (``import x``, ``from x import y``, relative imports
resolved, ``importlib.import_module("x")``), wherever they stand: at the top, inside a function, under
an ``if``. Nothing is imported to find them, so a lazy import that no test happens to run counts too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ("agent_runtime", "models", "train", "distill", "pipeline")
"""Our packages from the ground up: a module may import its own package and those before it here."""

RUNTIME_THIRD_PARTY = frozenset({"numpy", "zmq", "onnxruntime", "msgpack"})
"""All that ``agent_runtime`` may import besides the standard library: a robot host installs only these."""


@dataclass(frozen=True)
class Import:
    """Module ``source`` (the file ``path``, at ``line``) imports module ``target``."""

    source: str
    path: Path
    line: int
    target: str

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}: {self.source} imports {self.target}"


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root`` by dotted name (a package by its ``__init__``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(node: ast.AST, package: list[str]) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names taken from it) for an import node; ``package`` resolves relative imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield node.lineno, alias.name, ()
    elif isinstance(node, ast.ImportFrom):
        base = package[: len(package) - node.level + 1] if node.level else []
        module = ".".join([*base, *([node.module] if node.module else [])])
        yield node.lineno, module, tuple(a.name for a in node.names)
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if func in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            yield node.lineno, node.args[0].value, ()  # importlib.import_module("x"), spelled out


def read_imports(root: Path, packages: Iterable[str]) -> list[Import]:
    """Every import in every module of ``packages``; ``from a import b`` names ``a.b`` when that is a module."""
    modules = module_names(root, packages)
    found = []
    for source, path in modules.items():
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for line, module, names in _imported_names(node, package):
                targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
                if len(targets) < len(names) or not names:
                    targets.append(module)  # some names are attributes of the module itself
                found += [Import(source, path, line, t) for t in targets if t != source]
    return sorted(found, key=lambda i: (str(i.path), i.line))


def upward_imports(imports: Iterable[Import], layers: tuple[str, ...]) -> list[Import]:
    """The imports of a package of ours that stands above the importing module's package."""
    rank = {package: i for i, package in enumerate(layers)}
    return [
        i
        for i in imports
        if i.target.split(".")[0] in rank and rank[i.target.split(".")[0]] > rank[i.source.split(".")[0]]
    ]


def foreign_imports(imports: Iterable[Import], package: str, allowed: frozenset[str]) -> list[Import]:
    """The imports by ``package`` of anything but itself, the standard library and ``allowed``."""
    ok = {package, *allowed, *sys.stdlib_module_names}
    return [i for i in imports if i.source.split(".")[0] == package and i.target.split(".")[0] not in ok]


def import_cycles(imports: Iterable[Import]) -> list[list[Import]]:
    """The imports inside each strongly connected component of the module graph (Tarjan's algorithm).

    Only imports between the modules read count; a component of more than one module is a cycle, and
    every import joining two of its modules is listed, so the message shows how to break it.
    """
    imports = list(imports)
    ours = {i.source for i in imports}
    edges: dict[str, list[str]] = {m: [] for m in sorted(ours)}
    for i in imports:
        if i.target in ours:
            edges[i.source].append(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in edges:
        if node not in index:
            visit(node)
    return [
        sorted((i for i in imports if i.source in c and i.target in c), key=lambda i: (str(i.path), i.line))
        for c in components
        if len(c) > 1
    ]


def _report(imports: Iterable[Import], root: Path) -> str:
    return "\n  ".join(i.where(root) for i in imports)


# The project's own tree.

IMPORTS = read_imports(ROOT, LAYERS)


def test_the_tree_is_read():
    modules = module_names(ROOT, LAYERS)
    assert {m.split(".")[0] for m in modules} == set(LAYERS)
    assert len(modules) > 60
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("train.runner", "train.run_files") in edges  # from ... import, at the top
    assert ("pipeline.cli", "train.sim_robot") in edges  # lazy, inside run_robot
    assert ("agent_runtime.loop", "agent_runtime.client") in edges


def test_every_import_goes_down_the_layers():
    upward = upward_imports(IMPORTS, LAYERS)
    order = " < ".join(LAYERS)
    assert not upward, f"imports of a layer above the importing module's ({order}):\n  {_report(upward, ROOT)}"


def test_no_two_modules_import_each_other():
    cycles = import_cycles(IMPORTS)
    assert not cycles, "import cycles:\n" + "\n".join(f"  {_report(c, ROOT)}" for c in cycles)


def test_the_runtime_imports_only_what_a_robot_host_installs():
    foreign = foreign_imports(IMPORTS, "agent_runtime", RUNTIME_THIRD_PARTY)
    allowed = ", ".join(sorted(RUNTIME_THIRD_PARTY))
    assert not foreign, f"agent_runtime imports beyond the standard library and {allowed}:\n  {_report(foreign, ROOT)}"


# The checker itself, on a made-up tree, so the tests above cannot pass by finding nothing.


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_checker_catches_lazy_upward_imports_cycles_and_foreign_packages(tmp_path):
    _tree(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/ok.py": "import os\nimport numpy as np\n",
            "low/up.py": "import json\n\n\ndef lazy():\n    from high.a import thing\n",
            "low/heavy.py": "def f():\n    import importlib\n    importlib.import_module('torch')\n",
            "high/__init__.py": "from . import a\n",
            "high/a.py": "from .b import helper\nfrom low import ok\n",
            "high/b.py": "import high.a\n",
            "low/c1.py": "from low import c2\n",
            "low/c2.py": "import low.c3 as c3\n",
            "low/c3.py": "def f():\n    from . import c1\n",
        },
    )
    imports = read_imports(tmp_path, ("low", "high"))

    upward = upward_imports(imports, ("low", "high"))
    assert [i.where(tmp_path) for i in upward] == ["low/up.py:5: low.up imports high.a"]

    cycles = sorted([i.where(tmp_path) for i in c] for c in import_cycles(imports))
    assert cycles == [
        ["high/a.py:1: high.a imports high.b", "high/b.py:1: high.b imports high.a"],
        [  # three modules round, one of the imports lazy
            "low/c1.py:1: low.c1 imports low.c2",
            "low/c2.py:1: low.c2 imports low.c3",
            "low/c3.py:2: low.c3 imports low.c1",
        ],
    ]

    foreign = foreign_imports(imports, "low", frozenset({"numpy"}))
    assert [i.where(tmp_path) for i in foreign] == [
        "low/heavy.py:3: low.heavy imports torch",
        "low/up.py:5: low.up imports high.a",  # ours, but not low: foreign to it as well as upward
    ]
