"""The layout holds: every module imports, no import circle, no arrow pointing up the graph
gvatheory <- gvaempirics <- validation, and gvatheory stays free of heavy packages."""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"gvatheory": 0, "gvaempirics": 1, "validation": 2}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (function-level imports included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level else node.module
            )
            targets = [base.rstrip(".")] + [f"{base.rstrip('.')}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def test_every_module_imports():
    for pkg in LAYERS:
        module = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{pkg}."):
            if not info.name.endswith("__main__"):  # runs the command on import
                importlib.import_module(info.name)


def test_no_import_circle_and_no_arrow_up():
    mods = _modules()
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    up = [(m, t) for m, ts in graph.items() for t in ts if LAYERS[t.split(".")[0]] > LAYERS[m.split(".")[0]]]
    assert not up, f"imports pointing up the graph: {up}"
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                pytest.fail(f"import circle: {' -> '.join(path[path.index(t) :] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_theory_and_cli_help_run_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'gymnasium', 'mujoco', 'stable_baselines3'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import gvatheory, gvatheory.config\n"
        "from validation.cli import main\n"
        "raise SystemExit(main(['theory', 'cliff', '--steps', '50', '--chains', '200', '-q']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
