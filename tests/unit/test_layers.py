"""The package's layers (infbench.LAYERS): no module imports from a layer above its own, peer packages
in one layer do not import each other (root leaves may), and no import cycle exists. Imports inside
functions count: a lazy import is still a dependency; one for type hints only (`if TYPE_CHECKING:`)
counts for the layers but makes no cycle, since it never runs."""

from __future__ import annotations

import ast
from pathlib import Path

import infbench

PACKAGE = Path(infbench.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, type_only: bool = True) -> set[str]:
    """The infbench modules a file imports (from X import name: X.name when that is a module);
    type_only=False leaves out imports under `if TYPE_CHECKING:` (they never run, so make no cycle)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = set()
    if not type_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                skipped |= {id(n) for statement in node.body for n in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "infbench"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "infbench":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found - {"infbench"}  # the package's own __init__ (version, LAYERS) is below everything


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}
RUNTIME_IMPORTS = {name: _imports(path, type_only=False) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its sub-package (measure), or its own name (handoff)."""
    return module.split(".")[1]


def _layer(module: str) -> int:
    unit = _unit(module)
    for index, units in enumerate(infbench.LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{module}: {unit} is in no layer of infbench.LAYERS: add it there")


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != "infbench":
            _layer(module)


def layer_violations(imports: dict[str, set[str]]) -> list[str]:
    """An import from a higher layer, or from a peer package of the same layer (root leaves may)."""
    wrong = []
    for module, imported in sorted(imports.items()):
        if module == "infbench":
            continue
        for target in sorted(imported):
            if _layer(target) > _layer(module):
                wrong.append(f"{module} imports {target} (layer {_layer(target)} above {_layer(module)})")
            elif _layer(target) == _layer(module) > 0 and _unit(target) != _unit(module):
                wrong.append(f"{module} imports its peer {target}")
    return wrong


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_from_a_layer_above_its_own_or_a_peer():
    wrong = layer_violations(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    cycles = import_cycles({m: {t for t in RUNTIME_IMPORTS[m] if t in MODULES} for m in MODULES})
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_import_a_peer_import_and_a_cycle():
    assert layer_violations({"infbench.measure.client": {"infbench.jobs.bench", "infbench.handoff"}}) == [
        "infbench.measure.client imports infbench.jobs.bench (layer 4 above 1)"
    ]
    assert layer_violations({"infbench.memory.table": {"infbench.measure.records"}}) == [
        "infbench.memory.table imports its peer infbench.measure.records"
    ]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
