import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


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
