"""The import graph of a package, read from its source with `ast` (nothing is imported), its cycles, and its
imports up the layer table of an architecture page."""

from __future__ import annotations

import ast
import re
from pathlib import Path


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package directory `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or deferred inside a function."""
    names = module_names(root, package)
    graph = {}
    for name, path in names.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {t for node in _executed(tree.body) for t in _targets(node, name, is_package, names)}
    return graph


def _executed(body: list[ast.stmt]):
    """Every import statement, also inside functions (a deferred import still closes a circle when the
    function runs during an import), except under `if TYPE_CHECKING:` (never run)."""
    for node in body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from _executed(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _executed([child])


def _targets(node, module: str, is_package: bool, names: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in names}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source not in names:
        return set()
    # `from pkg import sub` imports the submodule; `from pkg import name` imports pkg/__init__
    found = {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in names}
    return found | {source} if len(found) < len(node.names) else found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import), each as a cycle's
    members in sorted order (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_table(markdown: str, root: Path, package: str) -> tuple[list[str], dict[str, str], list[str]]:
    """The layer table of an architecture page (the first table after a heading "Modules and what they may
    import"): its layers top to bottom, module -> layer, and what is wrong with it as a map of the package (a
    module in no row or in two, an entry that names no module). The modules column names files in backticks,
    relative to the package directory: a file (`store.py`), a glob (`studies/*.py`) or a folder (`data/`,
    every module under it)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and "may import" in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    names = {path: name for name, path in module_names(root, package).items()}
    layers: list[str] = []
    layer_of: dict[str, str] = {}
    problems: list[str] = []
    for cells in rows[2:]:  # after the header and its |---| line
        layer, entries = cells[0], re.findall(r"`([^`]+)`", cells[1])
        layers.append(layer)
        for entry in entries:
            found = sorted(root.glob(f"{entry}**/*.py" if entry.endswith("/") else entry))
            if not [path for path in found if path in names]:
                problems.append(f"`{entry}` ({layer}) names no module of {package}")
            for path in found:
                if path not in names:
                    continue
                module = names[path]
                if layer_of.setdefault(module, layer) != layer:
                    problems.append(f"{module} is in two rows: {layer_of[module]}, {layer}")
    missing = sorted(set(names.values()) - set(layer_of))
    problems += [f"{module} is in no row of the layer table" for module in missing]
    return layers, layer_of, problems


def layer_violations(graph: dict[str, set[str]], layers: list[str], layer_of: dict[str, str]) -> list[str]:
    """Every import of a module of a higher layer (nearer the top of the table) than the importer's, as
    "importer (its layer) imports imported (its layer)". Imports within a layer are allowed (the cycle test
    keeps them acyclic)."""
    rank = {layer: i for i, layer in enumerate(layers)}
    found = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if module in layer_of and target in layer_of and rank[layer_of[target]] < rank[layer_of[module]]:
                found.append(f"{module} ({layer_of[module]}) imports {target} ({layer_of[target]})")
    return found
