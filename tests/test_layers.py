"""The house: every import goes down a floor or stays on its own, and no modules import each other in a ring.

Floors, bottom to top (README, Layout):

    0  hexa_zoo        registry, weights, convert, publish, data readers, embedded dataset, records, catalog
    1  cluster         the job runner (submitit, SLURM): jobs, the job board, preemption
    2  pretrain        stand on hexa_zoo and cluster; neither imports the other
    2  transfer
    3  leaderboards    reads their outputs (records, model cards, run logs), imports neither
    4  orchestration   the demo (and the study): may import every floor below

Imports are read from the source with `ast`, nothing is imported: every `import` and `from ... import`
statement anywhere in a file counts, inside functions and `if TYPE_CHECKING:` blocks too (a cycle hidden
in a function is still a cycle). The `hexa` command line (hexa_zoo/cli.py) names the floors above by module
name, as strings, and imports them with importlib when a command runs: the one allowed way up. Below it, a
transfer run is followed by plain imports: transfer/cli.py -> the protocol table -> the protocol -> its readers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOORS = {"hexa_zoo": 0, "cluster": 1, "pretrain": 2, "transfer": 2, "leaderboards": 3, "orchestration": 4}


@dataclass(frozen=True)
class Import:
    """One import statement: `source` takes `names` from `target` (both module names), at `line`."""
    source: str
    target: str
    names: tuple[str, ...]
    line: int


def module_files(root: Path) -> dict[str, Path]:
    """{module name: file} for every .py file of the floors' packages under `root`."""
    modules = {}
    for package in FLOORS:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project-internal imports in one file, each resolved to the module it loads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            pairs = [(alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import mod` loads pkg.mod when that is a module, else it takes a name from pkg
            pairs = [(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, a.name) for a in node.names]
        else:
            continue
        for target, taken in pairs:
            while target and target not in modules:  # `import a.b.c` of a package: the deepest module we have
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append(Import(name, target, (taken,), node.lineno))
    return found


def import_graph(root: Path) -> tuple[dict[str, Path], dict[tuple[str, str], Import]]:
    """Modules and one merged Import per (source, target) pair, its names sorted."""
    modules = module_files(root)
    edges: dict[tuple[str, str], Import] = {}
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            key = (imp.source, imp.target)
            if key in edges:
                old = edges[key]
                imp = Import(imp.source, imp.target, tuple(sorted(set(old.names + imp.names))), min(old.line, imp.line))
            edges[key] = imp
    return modules, edges


def floor_of(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def upward_imports(root: Path) -> list[str]:
    """Each import that climbs a floor, or crosses from pretrain to transfer (or back), as a sentence."""
    modules, edges = import_graph(root)
    bad = []
    for (src, dst), imp in sorted(edges.items()):
        up = floor_of(dst) > floor_of(src)
        across = floor_of(dst) == floor_of(src) and dst.split(".")[0] != src.split(".")[0]
        if up or across:
            bad.append(f"{_file(modules, src, root)}:{imp.line} imports {', '.join(imp.names)} from "
                       f"{_file(modules, dst, root)} ({'a floor above' if up else 'the other package on its floor'})")
    return bad


def cycles(root: Path) -> list[tuple[frozenset[str], str]]:
    """Every ring of imports (a strongly connected set of modules), with one ring through it spelled out."""
    modules, edges = import_graph(root)
    succ: dict[str, list[str]] = {m: [] for m in modules}
    for src, dst in edges:
        succ[src].append(dst)
    found = []
    for component in _strongly_connected(succ):
        if len(component) < 2:
            continue
        ring = _ring(sorted(component)[0], component, succ)
        steps = [f"{_file(modules, a, root)} takes {', '.join(edges[a, b].names)} from {_file(modules, b, root)}"
                 for a, b in zip(ring, ring[1:])]
        found.append((frozenset(component), "; ".join(steps)))
    return sorted(found, key=lambda c: sorted(c[0]))


def reachable(root: Path, start: str) -> set[str]:
    """Every module that `start` reaches through import statements, itself included."""
    _, edges = import_graph(root)
    succ: dict[str, set[str]] = {}
    for src, dst in edges:
        succ.setdefault(src, set()).add(dst)
    seen, todo = {start}, [start]
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def imports_by_name(root: Path, package: str) -> list[str]:
    """Each call of importlib's import_module or of __import__ in `package`, as a sentence: a module loaded from a
    string is a trail a reader cannot follow from the import statements."""
    modules, bad = module_files(root), []
    for name, path in modules.items():
        if name.split(".")[0] != package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Call) and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                                               or isinstance(node.func, ast.Name)
                                               and node.func.id in ("import_module", "__import__")):
                bad.append(f"{_file(modules, name, root)}:{node.lineno} loads a module by name "
                           "(import it with an import statement)")
    return bad


def owner(module: str, protocols) -> str | None:
    """The protocol (module name) that `module` is or belongs to (a helper inside its package), else None."""
    return next((p for p in protocols if module == p or module.startswith(p + ".")), None)


def protocols_importing_protocols(root: Path, protocols) -> list[str]:
    """Each import of one protocol (or a helper of its own) by another, as a sentence: what two protocols share
    lives in a shared piece of transfer/ (features, heads, probe, metrics, readers, ...), so each reads on its own."""
    modules, protocols = module_files(root), set(protocols)
    return [f"{_file(modules, imp.source, root)}:{imp.line} imports {', '.join(imp.names)} from "
            f"{_file(modules, imp.target, root)} (another protocol; move what they share to a shared piece)"
            for source in sorted(m for m in modules if owner(m, protocols))
            for imp in imports_of(source, modules[source], modules)
            if owner(imp.target, protocols) not in (None, owner(source, protocols))]


def _file(modules: dict[str, Path], name: str, root: Path) -> str:
    return modules[name].relative_to(root).as_posix()


def _strongly_connected(succ: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a large tree)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(sorted(succ[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _ring(start: str, component: set[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest path from `start` back to itself inside `component` (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(succ[node]):
                if child not in component:
                    continue
                if child == start:  # back at the start: walk the parents from `node` to it
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{start} is in a component without a ring")


# ------------------------------------------------------------------------------------ the tree itself

def test_no_import_climbs_a_floor():
    bad = upward_imports(REPO)
    assert not bad, "imports against the layers (hexa_zoo <- cluster <- pretrain, transfer <- leaderboards <- orchestration):\n" \
        + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(REPO)
    assert not found, "import cycles:\n" + "\n".join(text for _, text in found)


def test_the_command_line_dispatches_by_name_to_modules_that_exist():
    """hexa_zoo/cli.py reaches the floors above only through these strings: each must name a real module."""
    from hexa_zoo.cli import SUBCOMMANDS

    modules = module_files(REPO)
    assert {module for module, _ in SUBCOMMANDS.values()} <= set(modules)
    assert not [i for i in imports_of("hexa_zoo.cli", modules["hexa_zoo.cli"], modules) if floor_of(i.target) > 0]


def test_the_ground_floor_imports_no_job_runner():
    """hexa_zoo is the zoo: the job runner (submitit, SLURM) stands a floor above it, in cluster/."""
    runners = []
    for path in sorted((REPO / "hexa_zoo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            runners += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "submitit"]
    assert not runners, runners


def test_a_transfer_run_is_followed_from_the_command_line_to_its_readers_by_plain_imports():
    from transfer.protocols import PROTOCOLS

    assert not imports_by_name(REPO, "transfer"), "\n".join(imports_by_name(REPO, "transfer"))
    seen = reachable(REPO, "transfer.cli")
    for name, protocol in PROTOCOLS.items():
        wanted = {protocol.module.__name__} | {reader.__name__ for reader in protocol.readers}
        assert wanted <= seen, f"{name}: transfer/cli.py does not reach {sorted(wanted - seen)} by imports"


def test_each_protocols_row_names_the_readers_it_imports():
    """The table's readers are the ones the protocol (with its own helpers) imports: the row is what a reader
    following the imports finds."""
    from transfer.protocols import PROTOCOLS

    modules, edges = import_graph(REPO)
    for name, protocol in PROTOCOLS.items():
        own = protocol.module.__name__
        imported = {dst for src, dst in edges if owner(src, [own]) and dst.startswith("transfer.readers.")}
        assert imported == {reader.__name__ for reader in protocol.readers}, name


def test_no_protocol_imports_another_and_each_lives_in_the_protocols_room():
    from transfer.protocols import PROTOCOLS

    protocols = [protocol.module.__name__ for protocol in PROTOCOLS.values()]
    bad = protocols_importing_protocols(REPO, protocols)
    assert not bad, "\n".join(bad)
    room = {m for m in module_files(REPO) if m.startswith("transfer.protocols.")}
    assert all(owner(m, protocols) for m in room), "transfer/protocols/ holds the protocols (and their own helpers)"
    assert {m for m in room if m.count(".") == 2} == set(protocols)


# ------------------------------------------------------------------------------------ the checker fails when it must

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in FLOORS:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


# The three cycles issue 12 found, each hidden behind imports inside functions, as they stood.
FOUND_CYCLES = {
    "models <-> weights": {
        "hexa_zoo/models.py": "from . import weights\n\ndef registry():\n    return weights.build\n",
        "hexa_zoo/weights.py": "def build():\n    from .models import MODELS, OFFICIAL\n    return MODELS, OFFICIAL\n",
    },
    "leaderboard <-> leaderboard_plots": {
        "hexa_zoo/leaderboard.py": "def compile():\n    from . import leaderboard_plots\n"
                                   "    leaderboard_plots.find_runs()\n",
        "hexa_zoo/leaderboard_plots.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from .leaderboard import Compiled\n\n"
                                         "def find_runs():\n    from .leaderboard import recipe_of, zoo_folder_of\n",
    },
    "detection <-> detection_d2": {
        "transfer/detection.py": "def run():\n    from transfer import detection_d2\n    return detection_d2.run\n",
        "transfer/detection_d2.py": "def run():\n    from transfer.detection import benchmark_for, load_detection_data\n",
    },
}


@pytest.mark.parametrize("case", list(FOUND_CYCLES))
def test_each_cycle_the_issue_found_fails_naming_both_files_and_the_names(tmp_path, case):
    found = cycles(_tree(tmp_path, FOUND_CYCLES[case]))
    assert len(found) == 1
    text = found[0][1]
    a, b = sorted(FOUND_CYCLES[case])
    assert a in text and b in text, text
    if case == "models <-> weights":
        assert "takes weights from hexa_zoo/models.py" not in text  # `from . import weights` is the module
        assert "hexa_zoo/weights.py takes MODELS, OFFICIAL from hexa_zoo/models.py" in text
        assert "hexa_zoo/models.py takes weights from hexa_zoo/weights.py" in text
    if case == "leaderboard <-> leaderboard_plots":
        assert "takes Compiled, recipe_of, zoo_folder_of from hexa_zoo/leaderboard.py" in text  # TYPE_CHECKING too
    if case == "detection <-> detection_d2":
        assert "transfer/detection_d2.py takes benchmark_for, load_detection_data from transfer/detection.py" in text


def test_a_longer_ring_is_spelled_out_in_order(tmp_path):
    root = _tree(tmp_path, {"hexa_zoo/a.py": "from .b import x\n", "hexa_zoo/b.py": "def f():\n    from .c import y\n",
                            "hexa_zoo/c.py": "import hexa_zoo.a\n", "hexa_zoo/d.py": "from .a import z\n"})
    (members, text), = cycles(root)
    assert members == {"hexa_zoo.a", "hexa_zoo.b", "hexa_zoo.c"}
    assert text == ("hexa_zoo/a.py takes x from hexa_zoo/b.py; hexa_zoo/b.py takes y from hexa_zoo/c.py; "
                    "hexa_zoo/c.py takes hexa_zoo.a from hexa_zoo/a.py")


def test_upward_and_sideways_imports_fail_naming_the_files(tmp_path):
    root = _tree(tmp_path, {
        "hexa_zoo/demo.py": "def run():\n    from pretrain.loop.trainer import train\n",      # the bottom reaching up
        "pretrain/loop/trainer.py": "import transfer.cli\n",                                    # across one floor
        "pretrain/launch.py": "from hexa_zoo.errors import HexaError\n",                   # down: fine
        "transfer/cli.py": "from leaderboards import compiler\n",                          # up
        "leaderboards/compiler.py": "from orchestration.demo import main\n",               # up
        "orchestration/demo.py": "from leaderboards.compiler import run\nimport pretrain.loop.trainer\n",  # down: fine
    })
    assert upward_imports(root) == [
        "hexa_zoo/demo.py:2 imports train from pretrain/loop/trainer.py (a floor above)",
        "leaderboards/compiler.py:1 imports main from orchestration/demo.py (a floor above)",
        "pretrain/loop/trainer.py:1 imports transfer.cli from transfer/cli.py (the other package on its floor)",
        "transfer/cli.py:1 imports compiler from leaderboards/compiler.py (a floor above)",
    ]


def test_a_protocol_importing_another_fails_naming_both(tmp_path):
    root = _tree(tmp_path, {"transfer/protocols/robustness.py": "from .linear import fast_head\n",
                            "transfer/protocols/linear.py": "from ..probe import fit\n", "transfer/probe.py": ""})
    assert protocols_importing_protocols(root, ["transfer.protocols.linear", "transfer.protocols.robustness"]) == [
        "transfer/protocols/robustness.py:1 imports fast_head from transfer/protocols/linear.py "
        "(another protocol; move what they share to a shared piece)"]


def test_a_protocol_package_importing_another_protocols_helper_fails_naming_both(tmp_path):
    root = _tree(tmp_path, {"transfer/protocols/manyshot/__init__.py": "from .sweep import fit\n",
                            "transfer/protocols/manyshot/sweep.py": "",
                            "transfer/protocols/lowshot_svm/__init__.py": "from .solver import solve\n",
                            "transfer/protocols/lowshot_svm/solver.py": "from ..manyshot.sweep import fit\n"})
    assert protocols_importing_protocols(root, ["transfer.protocols.lowshot_svm", "transfer.protocols.manyshot"]) == [
        "transfer/protocols/lowshot_svm/solver.py:1 imports fit from transfer/protocols/manyshot/sweep.py "
        "(another protocol; move what they share to a shared piece)"]


def test_a_protocol_loaded_by_name_is_neither_reached_nor_allowed(tmp_path):
    root = _tree(tmp_path, {"transfer/cli.py": "from . import suite\n", "transfer/readers/images.py": "",
                            "transfer/suite.py": "import importlib\n\ndef run(name):\n"
                                                 "    return importlib.import_module('transfer.protocols.knn')\n",
                            "transfer/protocols/knn.py": "from ..readers import images\n"})
    assert reachable(root, "transfer.cli") == {"transfer.cli", "transfer.suite"}
    assert imports_by_name(root, "transfer") == [
        "transfer/suite.py:4 loads a module by name (import it with an import statement)"]
