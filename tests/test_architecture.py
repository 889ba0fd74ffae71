"""The shape of the code, checked on its source (ast, no imports): each stage in its own room, no import
cycle (imports inside functions included), no stage module importing another's, imports at the top of
the file, no function over 80 lines, one markdown-table helper and one home for matplotlib."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

from idc.pipeline import STAGES
from tests.helpers import REPO

PACKAGE = REPO / "idc"
# Heavy optional packages that may be imported where they are used (DEVELOPERS.md).
LAZY_OK = {"lime", "bokeh", "selenium"}
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}


def known(name: str) -> str | None:
    """The longest idc module that `name` (a dotted import target) is or lies in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> List[Tuple[ast.AST, Set[str], bool]]:
    """(node, idc modules it loads, inside a function?) per import statement; loading `a.b.c` also runs
    the packages `a.b` and `a` (their __init__), except those `module` itself lies in (already running)."""
    tree, out = TREES[module], []
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        loaded = set()
        for t in targets:
            m = known(t) if t.split(".")[0] == "idc" else None
            while m:
                loaded.add(m)
                m = known(m.rpartition(".")[0]) if "." in m else None
        own = {p for p in loaded if module.startswith(p + ".")}
        out.append((node, loaded - own - {module}, id(node) in in_function))
    return out


GRAPH = {m: set().union(*[loaded for _, loaded, _ in imports(m)]) for m in MODULES}
STAGE_MODULES = {s.module for s in STAGES.values()}


def test_each_stage_has_its_room():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"scores", "explain", "sanity", "leaderboard", "viewer"} <= rooms
    assert STAGES["sanity"].module == "idc.sanity.stage" and STAGES["leaderboard"].module == "idc.leaderboard.stage"
    assert STAGE_MODULES <= set(MODULES), STAGE_MODULES - set(MODULES)
    # the scores are plain functions: nothing in idc.scores reads a config or imports a stage's room
    for m in (m for m in MODULES if m.startswith("idc.scores")):
        assert not {d for d in GRAPH[m] if d.startswith(("idc.sanity", "idc.leaderboard", "idc.config", "idc.inputs"))}, m


def test_import_graph_has_no_cycle():
    state: Dict[str, int] = {}

    def visit(m: str, path: Tuple[str, ...]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path[path.index(d):] + (d,))
            if d not in state:
                visit(d, path + (d,))
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, (m,))


def test_no_stage_module_imports_another_stage_module():
    """Stages talk through files in the run dir (idc.paths), never through each other's code."""
    def reach(m: str, seen: Set[str]) -> Set[str]:
        for d in GRAPH[m] - seen:
            seen.add(d)
            reach(d, seen)
        return seen

    for stage in STAGE_MODULES:
        assert not (reach(stage, set()) & STAGE_MODULES) - {stage}, stage


def test_imports_are_at_the_top_of_the_file():
    """Inside a function only the heavy optional packages (lime, bokeh, selenium); never an idc module."""
    late = []
    for m in MODULES:
        for node, loaded, in_function in imports(m):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if in_function and (loaded or not all(n.split(".")[0] in LAZY_OK for n in names)):
                late.append(f"{MODULES[m].relative_to(REPO)}:{node.lineno} {names}")
    assert not late, late


def test_no_function_over_80_lines():
    long = [f"{MODULES[m].relative_to(REPO)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for m, tree in TREES.items() for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_one_markdown_table_helper_and_one_matplotlib_home():
    rule_writers = sorted(m for m, p in MODULES.items() if '"|---' in p.read_text() or "---|\"" in p.read_text())
    assert rule_writers == [], rule_writers  # idc.markdown builds its rules from RULES
    plotting = sorted(m for m in MODULES if any("matplotlib" in n for node, _, _ in imports(m)
                                                for n in ([a.name for a in node.names] if isinstance(node, ast.Import)
                                                          else [node.module or ""])))
    assert plotting == ["idc.viz.style"], plotting


def test_docs_name_tests_that_exist():
    """docs/*.md and the README cite tests as `test_<file>.py::<test>`: each one must exist."""
    defined = {p.name: {n.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef)}
               for p in (REPO / "tests").glob("test_*.py")}
    cited = [(doc.name, f, t) for doc in [*(REPO / "docs").glob("*.md"), REPO / "README.md"]
             for f, t in re.findall(r"(test_\w+\.py)::(\w+)", doc.read_text())]
    assert cited and not [c for c in cited if c[2] not in defined.get(c[1], ())], \
        [c for c in cited if c[2] not in defined.get(c[1], ())]


def test_tests_share_helpers_not_conftest():
    """Test modules import shared code from tests/helpers, never from conftest (pytest's fixture file)."""
    offenders = [p.name for p in (REPO / "tests").glob("test_*.py")
                 if re.search(r"^\s*(from|import) conftest\b", p.read_text(), re.M)]
    assert not offenders, offenders
