"""The layout's rules, read from the sources: each layer imports only the layers below it
(veil -> veil.stream -> veil.kernels -> veil.engines -> veil.errors), no module imports
itself back through others, and nothing but veil.testing holds test tools."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"veil": "veil", "stream": "veil.stream", "kernels": "veil.kernels", "engines": "veil.engines"}
LAYERS = ["veil.errors", "veil.engines", "veil.kernels", "veil.stream", "veil"]  # lowest first


def modules() -> dict[str, Path]:
    """Every module of the package, by its installed name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (names for type hints, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
            else:
                stack.append(child)


def layer(name: str) -> int:
    """The layer of a module: that of the longest layer name it lies in."""
    return LAYERS.index(max((prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")), key=len))


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, set(known)) for name, path in known.items()}


def test_every_import_goes_down_the_layers():
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if layer(target) > layer(name) and not (target == "veil" and layer(name) == 0)
    ]
    assert upward == []


def test_no_module_imports_itself_back():
    edges = graph()
    circles = []

    def visit(name, path):
        for target in edges[name]:
            if target == path[0]:
                circles.append(" -> ".join([*path, target]))
            elif target not in path and len(path) < 12:
                visit(target, [*path, target])

    for name in edges:
        visit(name, [name])
    assert circles == []


def test_the_runtime_packages_hold_no_test_tools():
    tools = ("privacy", "timecode", "clips", "peers")
    misplaced = [name for name in modules() if name.rpartition(".")[2] in tools and not name.startswith("veil.testing.")]
    assert misplaced == []
    users = [name for name, targets in graph().items() if name.startswith(("veil.stream", "veil.kernels", "veil.engines"))
             for target in targets if target.startswith("veil.testing")]
    assert users == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checks above must be able to fail: an engine importing the pipeline is caught."""
    module = tmp_path / "upward.py"
    module.write_text("def f():\n    from veil.stream.frame import Frame\n")
    assert imports(module, "veil.engines.upward", set(modules()) | {"veil.engines.upward"}) == {"veil.stream.frame"}
    assert layer("veil.stream.frame") > layer("veil.engines.upward")
