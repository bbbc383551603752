"""The shape of the code base: which package may import which, and the CI command.

Read statically (``ast``), so that an import hidden inside a function counts
as much as one at the top of a module: both tie the packages together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "config", "connectors", "evaluation", "observability", "operators")
PURE = ("operators", "config")
MAX_MODULES = 15
SYS_PATH_EDIT = re.compile(r"^\s*sys\.path\.(insert|append)\(", re.MULTILINE)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    files = [ROOT / "dataflow.py"] + [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return {_module_name(p): p for p in files}


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that ``import name`` loads last (a module or its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from pkg import mod`` names ``pkg.mod``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_operators_and_config_never_import_connectors():
    graph = _graph()
    wrong = {
        module: sorted(dep for dep in deps if dep.split(".")[0] in ("connectors", "observability", "cli"))
        for module, deps in graph.items()
        if module.split(".")[0] in PURE
    }
    assert {module: deps for module, deps in wrong.items() if deps} == {}, (
        "operators/ and config/ hold pure logic and settings: move the shared record into operators/ "
        "or pass the connector in from dataflow.py"
    )


def test_no_import_cycle_among_project_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from connectors.sinks import jsonl\n    import operators.parse\n")
    modules = _project_modules()
    assert _imports("operators.x", source, modules) == {"connectors.sinks.jsonl", "operators.parse"}


def test_no_package_folder_holds_more_than_fifteen_modules():
    crowded = {}
    for pkg in (*PACKAGES, "tests", "bench"):
        for folder in [ROOT / pkg, *(p.parent for p in (ROOT / pkg).rglob("*/__init__.py"))]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > MAX_MODULES:
                crowded[str(folder.relative_to(ROOT))] = len(modules)
    assert crowded == {}, (
        f"split these packages by what their modules do (at most {MAX_MODULES} each); a class pickled in a "
        "snapshot must keep its module path (tests/operations/test_snapshot_upgrade.py)"
    )


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Test it", 1)[1]
    return section.split("```bash\n", 1)[1].split("\n", 1)[0]


def test_ci_runs_exactly_the_readme_command_with_lint_and_types_before_pytest():
    command = _readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == command
    steps = [step.strip() for step in command.split("&&")]
    assert steps.index(".venv/bin/ruff check .") < steps.index(".venv/bin/python -m pytest -q")
    assert steps.index(".venv/bin/ruff format --check .") < steps.index(".venv/bin/python -m pytest -q")
    assert steps.index(".venv/bin/mypy") < steps.index(".venv/bin/python -m pytest -q")


def test_the_chart_names_the_config_path_the_statefulset_mounts():
    statefulset = (ROOT / "k8s" / "paywatch" / "templates" / "statefulset.yaml").read_text()
    values = (ROOT / "k8s" / "paywatch" / "values.yaml").read_text()
    path = statefulset.split("name: PAYWATCH_CONFIG", 1)[1].split("value:", 1)[1].split("\n", 1)[0].strip()
    assert path.startswith("/etc/paywatch/")
    assert f"mounted at {path}" in values


def test_tests_and_benchmarks_do_not_edit_sys_path():
    """pyproject.toml puts the repo on the path for pytest; benchmarks run as ``python -m bench.<name>``."""
    edits = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench")
        for path in sorted((ROOT / folder).glob("*.py"))
        if SYS_PATH_EDIT.search(path.read_text())
    ]
    assert edits == [], "drop the sys.path edit; run a benchmark as python -m bench.<name> from the repo root"


#: A repository path named in the docs: ``connectors/aws/retry.py``, ``docs/lake.md``...
DOC_PATH = re.compile(
    r"\b((?:operators|connectors|config|cli|observability|evaluation|bench|tests|k8s|dashboards|docs)/[\w./-]+?"
    r"\.(?:py|md|yaml|json))\b"
)


def test_every_path_the_docs_name_exists():
    """A moved module leaves no pointer behind in the README or docs/ (generated outputs excepted)."""
    dangling = sorted(
        {
            f"{doc.relative_to(ROOT)}: {path}"
            for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for path in DOC_PATH.findall(doc.read_text())
            if not (ROOT / path).exists() and not path.startswith(("bench/results/", "bench/data/"))
        }
    )
    assert dangling == [], "these docs name files that are not in the repo (moved? renamed?)"
