import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _run_key(tmp_path_factory):
    """The key that signs expert-run manifests, kept in a session folder, not in the user's home."""
    os.environ["GVA_KEY_FILE"] = str(tmp_path_factory.mktemp("key") / "run-key")
    yield


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def refuses(capsys, tmp_path, monkeypatch):
    """``refuses(argv, field)``: the ``gva`` command ``argv`` exits with status 2 and exactly one
    stderr line naming ``field``, no traceback, and creates nothing (run from an empty folder)."""
    from validation.cli import main

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    def check(argv: list[str], field: str) -> str:
        before = sorted(tmp_path.rglob("*"))
        code = main(argv)
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        assert code == 2, (argv, out.err)
        assert len(lines) == 1, (argv, out.err)
        assert field in lines[0] and "Traceback" not in out.err, (argv, lines[0])
        assert sorted(tmp_path.rglob("*")) == before, f"{argv} left files behind"
        return lines[0]

    return check


# A tiny behavior-cloning run (Hopper, 40 steps, short rollouts), trained once per session and
# shared by the tests that read a finished run directory; they must not modify it.
TINY_BC = {
    "env": "Hopper-v5",
    "n_demos": 3,
    "val_demos": 1,
    "demo_horizon": 60,
    "depth": 2,
    "width": 32,
    "steps": 40,
    "eval_every": 10,
    "zoom_windows": (30,),
    "zoom_length": 5,
    "ics": 3,
    "H": 60,
    "checkpoint_every": 10,
    "batch_size": 32,
    "eta": 1e-3,
    "threads": 1,
}


@pytest.fixture(scope="session")
def tiny_bc():
    """The field values of the shared tiny BC run (a copy: change it freely)."""
    return dict(TINY_BC)


@pytest.fixture(scope="session")
def tiny_bc_run(tmp_path_factory):
    """``(run directory, summary)`` of the shared tiny BC run."""
    from gvaempirics.bc.config import BCConfig
    from gvaempirics.bc.train import train_bc

    out = tmp_path_factory.mktemp("tiny_bc") / "run"
    return out, train_bc(BCConfig(**TINY_BC), out, quiet=True)
