"""The gvatheory package: light to import, every toy system re-exported, compute apart from plotting."""

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_import_is_light():
    out = _run(
        "import sys, gvatheory; print(sorted(m for m in ('numba', 'scipy', 'matplotlib', 'sympy', 'numpy') "
        "if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_compute_modules_never_import_matplotlib():
    out = _run(
        "import sys\n"
        "import gvatheory.averaging, gvatheory.cliff, gvatheory.prop41, gvatheory.prop31, gvatheory.linear_gva\n"
        "import gvatheory.stabilizers, gvatheory.moments, gvatheory.symbolic\n"
        "print('matplotlib' in sys.modules)"
    )
    assert out.strip() == "False"


def test_public_api_is_re_exported():
    import gvatheory

    for name in gvatheory.__all__:
        assert getattr(gvatheory, name) is not None, name
    from gvatheory import CliffProblem, LinearBC, QuadraticSGD  # noqa: F401

    with pytest.raises(AttributeError):
        gvatheory.no_such_thing  # noqa: B018


def test_theory_commands_register_without_numerics():
    out = _run(
        "import argparse, sys\n"
        "from validation.cli import theory\n"
        "theory.register(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('numba', 'numpy', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    assert out.strip() == "[]"
