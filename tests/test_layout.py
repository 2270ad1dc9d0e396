"""The house: import arrows point one way, modules stay readable, the README's Python runs as
written, and the shipped jobs' pictures are the ones recorded before the package was laid out
anew (``scripts/picture_hashes.py``)."""

import ast
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fvjax"
sys.path.insert(0, str(ROOT / "scripts"))
import picture_hashes  # noqa: E402


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """``(imported fvjax module, at module level)`` of every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.append((target, id(node) in top))
    return found


def test_the_package_imports_have_no_circles_and_none_hides_in_a_function():
    modules = _modules()
    graph = {name: set() for name in modules}
    late = []
    for name, path in modules.items():
        for target, at_top in _imports(name, path, modules):
            graph[name].add(target)
            if not at_top:
                late.append(f"{name} -> {target}")
    assert late == []
    # Depth-first search: a module met again while still on the path closes a circle.
    state, circles = {}, []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_two_halves_and_the_job_sit_in_their_own_folders():
    modules = _modules()
    for folder in ("models", "models.zoo", "rendering", "checks", "data", "job"):
        assert f"fvjax.{folder}" in modules
    # Making pictures never reaches up into the job or the checks; data reaches no model.
    for name, path in modules.items():
        targets = {target for target, _ in _imports(name, path, modules)}
        if name.startswith(("fvjax.rendering", "fvjax.models", "fvjax.data")):
            assert not {t for t in targets if t.startswith(("fvjax.job", "fvjax.checks"))}, name
        if name.startswith("fvjax.data"):
            assert not {t for t in targets if t.startswith("fvjax.models")}, name


def test_every_module_says_what_it_is_for_and_stays_readable():
    for name, path in _modules().items():
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{name} has no opening docstring"
        assert len(text.splitlines()) <= 540, f"{name} has {len(text.splitlines())} lines"


def _readme_python_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)


def test_the_readme_has_python_examples():
    assert len(_readme_python_blocks()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_readme_python_blocks())))
def test_each_readme_python_block_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    code = _readme_python_blocks()[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "readme"})


@pytest.mark.slow
def test_the_shipped_jobs_make_the_recorded_pictures():
    recorded = json.loads(picture_hashes.RECORD.read_text())
    if recorded["fingerprint"] != picture_hashes.fingerprint():
        pytest.skip(
            f"pictures were recorded on {recorded['fingerprint']}, this is "
            f"{picture_hashes.fingerprint()}: bits are comparable on one backend only"
        )
    jobs = list(recorded["jobs"])
    # Each job is a process that keeps about one core busy: side by side on two cores, 19 s
    # instead of 26.
    with ThreadPoolExecutor(len(jobs)) as pool:
        rendered = dict(zip(jobs, pool.map(picture_hashes.picture_hashes, jobs), strict=True))
    for job, hashes in recorded["jobs"].items():
        found = rendered[job]
        changed = sorted(
            name for name in hashes.keys() | found.keys() if hashes.get(name) != found.get(name)
        )
        assert changed == [], f"{job}: {len(changed)} pictures changed, e.g. {changed[:5]}"


def test_the_readme_layout_table_names_every_module_and_nothing_that_is_gone():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Layout") :]
    table = table[: table.index("\n\n", table.index("| path | what |"))]
    covered, prefixes = set(), []
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        path_cell, what_cell = row.split("|")[1:3]
        for path in re.findall(r"`([^`]+)`", path_cell):
            assert (ROOT / path).exists(), f"the layout table names {path}, which is gone"
            covered.add(path)
            if not path.endswith("/"):
                continue
            for name in re.findall(r"`(\w+\.py)`", what_cell):
                found = [p.relative_to(ROOT).as_posix() for p in (ROOT / path).rglob(name)]
                assert found, f"the layout table puts {name} in {path}, where it is not"
                covered.update(found)
            prefixes += [path + sub for sub in re.findall(r"`(\w+/)`", what_cell)]
    for module in PACKAGE.rglob("*.py"):
        rel = module.relative_to(ROOT).as_posix()
        if module.name == "__init__.py" and rel != "fvjax/__init__.py":
            continue  # a folder's face: the folder's row names it
        assert rel in covered or rel.startswith(tuple(prefixes)), f"{rel} is not in the table"
