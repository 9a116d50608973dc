"""The package's structure: modules as rooms, imports (at any depth of a module) as arrows. No loop, and no arrow up."""

import ast
from pathlib import Path

import sb3_trpo_ext

PACKAGE = Path(sb3_trpo_ext.__file__).parent
SCRIPTS = {path.stem for path in (PACKAGE.parent / "scripts").glob("*.py")}
#: Layers, lowest first: the algorithms and what they are built of, the zoo (which reads entries into them), and the
#: benchmark (which runs them through the zoo's entries). A module imports from its own layer or the ones below.
LAYERS = ("sb3_trpo_ext", "sb3_trpo_ext.zoo", "sb3_trpo_ext.benchmark")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package, and the names outside it, that ``path`` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            targets |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    found = set()
    for target in targets:
        while "." in target and target not in known:  # `from package import name` names a module or a value
            target = target.rpartition(".")[0]
        if target != name:
            found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t in imports(name, path, known) if t in known} for name, path in known.items()}


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while component[-1:] != [node]:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def test_the_loop_finder_finds_a_loop():
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert loops({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_in_a_loop():
    assert loops(graph()) == []


def test_no_module_imports_upward():
    edges = graph()
    # The package root imports every algorithm; a module inside that imported it would import its own importers.
    assert [name for name, targets in edges.items() if "sb3_trpo_ext" in targets] == []
    upward = [(name, target) for name, targets in edges.items() for target in targets if layer(target) > layer(name)]
    assert upward == []
    assert layer("sb3_trpo_ext.trpo") == 0 and layer("sb3_trpo_ext.zoo.cli") == 1 and layer("sb3_trpo_ext.benchmark") == 2


def test_the_package_never_imports_a_maintainer_tool():
    assert {"tune", "budget", "behaviour", "entry_variants"} <= SCRIPTS  # what the check below looks for
    known = modules()
    reached = {name: imports(name, path, known) & SCRIPTS for name, path in known.items()}
    assert {name: found for name, found in reached.items() if found} == {}
