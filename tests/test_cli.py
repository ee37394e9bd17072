import subprocess
import sys

import pytest

from validation.cli import main


def test_help_lists_groups(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "theory" in out and "reproduce" in out


def test_unknown_section_is_one_line_exit_2(capsys):
    assert main(["reproduce", "--quick", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "choose from" in err[0]


def test_theory_runs_without_torch():
    # Block the heavy packages: `gva theory --help` must still work.
    code = (
        "import sys\n"
        "for m in ('torch', 'gymnasium', 'mujoco', 'stable_baselines3'): sys.modules[m] = None\n"
        "from validation.cli import main\n"
        "try:\n    main(['theory', '--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "SYSTEM" in res.stdout
