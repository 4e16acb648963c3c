"""No import circle among the modules of orchestrator/ and workers/.

The graph is read from the source with `ast`, every import statement counted wherever it stands (a lazy import
inside a function closes a circle as surely as one at the top: whichever module is imported first meets the
other half-initialised), except those under `if TYPE_CHECKING:`, which never run, and a package's lazy imports
of its own sub-modules (a method family's runner importing its `run` module when a stage runs): a function of
a package runs only once the package has finished initialising, so its sub-modules find it whole. An edge goes
to the module a statement names: `from a.b import c` to a.b.c when that is a module of ours, else to a.b."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "workers")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_package: bool, modules: dict) -> set[str]:
    out: set[str] = set()

    def own_part(target: str) -> bool:
        return is_package and target.startswith(name + ".")

    def visit(node, in_function=False):
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules and not (in_function and own_part(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                if target in modules and not (in_function and own_part(target)):
                    out.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", modules)
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_packages_modules_and_their_imports():
    graph = import_graph()
    assert "orchestrator.cli" in graph and "workers.masks" in graph
    assert "orchestrator.cli.common" in graph["orchestrator.cli.sweep"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    package = ast.parse("import p.top\ndef runner():\n    from p.run import go\n    import q\n")
    modules = {"p": None, "p.top": None, "p.run": None, "q": None}
    assert _imports(package, "p", True, modules) == {"p.top", "q"}  # its own part, lazily: no edge
    assert _imports(package, "x", False, modules) == {"p.top", "p.run", "q"}


def test_no_import_circle_among_orchestrator_and_workers_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# orchestrator/'s packages, each importing only those before it (docs/architecture.md); cli imports them all.
LAYERS = ("orchestrator.spec", "orchestrator.store", "orchestrator.analysis", "orchestrator.deploy",
          {"orchestrator.run", "orchestrator.tuning"}, "orchestrator.cli")
# The edges that go against LAYERS, each named in docs/architecture.md.
UPWARD = {("orchestrator.spec.sweep_spec", "orchestrator.analysis.sequential"),
          ("orchestrator.spec.sweep_spec", "orchestrator.analysis.stats"),
          ("orchestrator.deploy.detached", "orchestrator.cli.common")}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _layer(package: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if package in ({layer} if isinstance(layer, str) else layer)),
                None)


def test_orchestrator_packages_import_only_the_packages_below_them():
    against = []
    for module, targets in import_graph().items():
        here = _layer(_package(module))
        for target in targets:
            there = _layer(_package(target))
            if here is not None and there is not None and there > here and (module, target) not in UPWARD:
                against.append(f"{module} -> {target}")
    assert against == []


def _importing(package: str, banned: tuple[str, ...]) -> list[str]:
    """Every import, lazy ones included, by a module of `package` of a top-level package in `banned`."""
    found = []
    for name, path in _modules().items():
        if name != package and not name.startswith(package + "."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            found += [f"{name} imports {n}" for n in names if n.split(".")[0] in banned]
    return found


def test_workers_import_neither_ray_nor_the_orchestrator():
    assert _importing("workers", ("ray", "orchestrator")) == []


def test_the_spec_never_touches_ray():
    # A spec is read, validated and planned without Ray; shipping its plugin code to the cluster is run/'s job.
    assert _importing("orchestrator.spec", ("ray",)) == []
