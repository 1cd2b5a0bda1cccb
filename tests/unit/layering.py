"""A static check of the package's layers: every import of every module, read with `ast`.

An import inside a function, under `if TYPE_CHECKING:` or through `importlib.import_module("...")` /
`__import__("...")` with a literal name counts like one at the top, so a lazy import cannot hide a
dependency the way it hides from a `sys.modules` check. Relative imports are resolved.

`check(root, package, layers, banned)` returns one line per violation:
- a module of a layer importing a module of the package outside that layer and the layers it may use;
- a module of a layer that reaches a banned top-level package through any chain of the package's own
  modules (importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so those count).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module, absolute
    where: str  # path:line


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root` (the folder holding the package), by dotted name."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _literal_import(node: ast.Call) -> str | None:
    """The module named by `importlib.import_module("x")` or `__import__("x")`, if literal."""
    function = node.func
    named = (isinstance(function, ast.Name) and function.id in ("__import__", "import_module")) or (
        isinstance(function, ast.Attribute) and function.attr == "import_module"
    )
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[Import]:
    """Every import in the module's source, wherever it sits in the file."""
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            base_parts = package_parts[: len(package_parts) - node.level + 1] if node.level else []
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from a import b` imports the module a.b when there is one, else a name of a.
                yield Import(module, submodule if submodule in known else base, where)
        elif isinstance(node, ast.Call):
            target = _literal_import(node)
            if target is not None:
                yield Import(module, target, where)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _parents(module: str) -> list[str]:
    """The packages whose __init__ runs when `module` is imported (itself excluded)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def check(root: Path, package: str, layers: Mapping[str, set[str]], banned: set[str]) -> list[str]:
    """Violations of `layers` (layer -> the other layers it may import) and of `banned` (top-level
    packages no layer module may reach) by the modules of `package` under `root`."""
    known = module_names(root, package)
    graph = {module: list(imports_of(module, path, known)) for module, path in known.items()}
    problems = []
    for layer, allowed in layers.items():
        for module in (m for m in known if _within(m, layer)):
            for found in graph[module]:
                ours = _within(found.target, package)
                if ours and not any(_within(found.target, ok) for ok in (layer, *allowed)):
                    may = ", ".join(sorted(allowed)) or "nothing else of the package"
                    problems.append(f"{found.where}: {module} imports {found.target} ({layer} may import {may})")
            chain = _reaches(module, graph, known, banned)
            if chain is not None:
                problems.append(f"{known[module]}: {module} reaches {' -> '.join(chain)}")
    return problems


def _reaches(
    start: str, graph: Mapping[str, list[Import]], known: Mapping[str, Path], banned: set[str]
) -> list[str] | None:
    """The first chain of imports from `start` to a banned package, breadth first; None if there is none."""
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start, *(p for p in _parents(start) if p in known)]
    for parent in queue[1:]:
        paths[parent] = [start, parent]  # importing a module runs its packages' __init__ first
    while queue:
        module = queue.pop(0)
        for found in graph.get(module, []):
            if found.target.split(".")[0] in banned:
                return [*paths[module], f"{found.target} ({found.where})"]
            for next_module in (found.target, *_parents(found.target)):
                if next_module in known and next_module not in paths:
                    paths[next_module] = [*paths[module], next_module]
                    queue.append(next_module)
    return None
