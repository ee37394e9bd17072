"""The documentation site: every tutorial script runs and shows what its page claims; every
snippet a page includes exists; ``mkdocs build --strict`` passes (slow, when mkdocs is installed)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
SNIPPET = re.compile(r'--8<-- "([^":]+)(?::([\w-]+))?"')


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _number(pattern: str, text: str) -> list[float]:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return [float(g) for g in m.groups()]


@pytest.mark.parametrize("page", sorted(TUTORIALS.glob("*.md")), ids=lambda p: p.name)
def test_tutorial_snippets_exist(page):
    """Each ``--8<-- "file:section"`` names a file in the repository with that section's markers."""
    found = SNIPPET.findall(page.read_text())
    assert found, f"{page.name} includes no script"
    for path, section in found:
        source = ROOT / path
        assert source.is_file(), f"{page.name}: {path} does not exist"
        assert source.parent == TUTORIALS, f"{page.name}: {path} is not a tutorial script"
        if section:
            text = source.read_text()
            assert f"--8<-- [start:{section}]" in text and f"--8<-- [end:{section}]" in text, (path, section)


def test_tutorial_verify_a_bound():
    """Page: every |z| < 4; the last iterate's gap is of order C, the EMA's far smaller."""
    out = _run("verify_a_bound.py")
    (worst,) = _number(r"largest \|z\| = ([\d.]+)", out)
    assert worst < 4
    gap_theta, gap_ema = _number(r"E\[J\* - J\(theta_T\)\] = ([\d.e+-]+)\s+E\[J\* - J\(ema_T\)\] = ([\d.e+-]+)", out)
    assert gap_theta > 0.5 > 10 * gap_ema  # C = 1
    rows = re.findall(r"^(theta|ema)\s+(gap|loss_bc|p_off)\s", out, flags=re.M)
    assert len(rows) == 6


def test_tutorial_detect_gva(tmp_path):
    """Page: ``gva diagnose`` on 11 checkpoints writes its files; oscillation index CI above 0.05."""
    pytest.importorskip("torch")
    pytest.importorskip("gymnasium")
    out = _run("detect_gva.py", str(tmp_path))
    assert "11 checkpoints on CartPole-v1" in out
    d = json.loads((tmp_path / "out" / "diagnosis.json").read_text())
    assert (tmp_path / "out" / "diagnosis.png").is_file()
    assert len(d["checkpoints"]) == 11 and len(d["returns"][0]) == 20
    assert d["oscillation_index"]["low"] > 0.05
    low, high = _number(r"oscillation index [\d.]+ \[([\d.]+), ([\d.]+)\]", out)
    assert (low, high) == (round(d["oscillation_index"]["low"], 3), round(d["oscillation_index"]["high"], 3))


def test_tutorial_stabilizers_in_your_loop():
    """Page: the EMA's test loss over the last 500 steps is below a quarter of the last iterate's."""
    pytest.importorskip("torch")
    out = _run("stabilizers_in_your_loop.py")
    raw, ema = _number(r"last iterate ([\d.]+), EMA ([\d.]+)", out)
    assert ema < 0.25 * raw


def test_rst_math_to_markdown():
    """The API pages' griffe extension turns reST math and roles into arithmatex math and code."""
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst_math", ROOT / "docs" / "api" / "griffe_rst_math.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = "Step :math:`\\eta_t`, see :func:`~gvatheory.cliff.sgd_expectation`.\n\n.. math::\n\n    a = b\n    + c\n\nafter"
    assert mod.convert(text) == ("Step \\(\\eta_t\\), see `sgd_expectation`.\n\n\n\\[\na = b\n+ c\n\\]\n\nafter")


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """The site builds with ``--strict`` (broken links, docstring warnings fail it), offline."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (the `docs` extra)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in (
        "index.html",
        "concepts/index.html",
        "tutorials/verify_a_bound/index.html",
        "api/gvatheory/index.html",
    ):
        assert (site / page).is_file(), page
    api = (site / "api" / "gvatheory" / "index.html").read_text()
    assert "CliffProblem" in api and "sgd_monte_carlo" in api
    tutorial = (site / "tutorials" / "verify_a_bound" / "index.html").read_text()
    assert "agreement_z" in tutorial and "--8&lt;--" not in tutorial  # the snippets were included
