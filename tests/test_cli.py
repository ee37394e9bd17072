import pytest

from validation.cli import main


def test_help_lists_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "theory" in out and "reproduce" in out


def test_unknown_section_is_one_line_exit_2(capsys):
    assert main(["reproduce", "--quick", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "choose from" in err[0]


def test_validate_refuses_an_unknown_study_and_budget(capsys):
    assert main(["validate", "nope"]) == 2
    assert main(["validate", "lm", "--budget", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "noise-floor" in err[0] and "quick" in err[1]


def test_every_validation_study_is_a_registered_section():
    from validation.reproduce import ALL_SECTIONS, VALIDATION_STUDIES

    assert set(VALIDATION_STUDIES) <= set(ALL_SECTIONS)


def test_validate_requires_a_study(refuses):
    line = refuses(["validate"], "study=''")
    assert "all" in line and "noise-floor" in line  # names the valid ones, `all` among them


def test_check_work_refuses_what_cannot_be_meant_and_announces_what_is_large(capsys):
    from validation.cli._common import check_work

    kw = dict(what="Monte Carlo of chains=10 x steps=5", unit="chain-steps", limit=1e6, flag="--max-chain-steps")
    check_work(50, rate=1e3, announce=1e3, **kw)  # small: silent
    assert capsys.readouterr().err == ""
    check_work(2e5, rate=1e3, announce=1e3, **kw)
    assert (
        capsys.readouterr().err
        == "gva: Monte Carlo of chains=10 x steps=5 = 200000 chain-steps (about 3.33 minutes at 1e+03 chain-steps per second on one core)\n"
    )
    check_work(2e5, rate=1e3, announce=1e3, quiet=True, **kw)
    assert capsys.readouterr().err == ""
    with pytest.raises(
        ValueError,
        match=r"= 5e\+09 chain-steps \(about 57.9 days .*\) is out of range: must be <= max_chain_steps=1000000; raise --max-chain-steps",
    ):
        check_work(5e9, rate=1e3, announce=1e3, **kw)


@pytest.mark.parametrize(
    "argv, named",
    [
        (
            ["theory", "cliff", "--steps", "100000000000"],
            "steps=100000000000 x d=1 = 2e+15 chain-steps (about 231 days",
        ),
        (["theory", "averaging", "--steps", "100000000000"], "max_chain_steps=1e+11"),
        (
            ["theory", "prop31", "--H", "90000000"],
            "sum(H)=90000000 x 4 delta(s) = 3.6e+08 horizon-steps (about 5 hours",
        ),
    ],
)
def test_theory_work_of_hours_is_refused_before_it_starts(refuses, argv, named):
    line = refuses(argv, named)
    assert "--max-" in line


def test_a_lifted_limit_runs_and_announces_its_size_first(capsys):
    argv = ["theory", "prop31", "--H", "5", "--delta", "0.01", "--max-steps", "1"]
    assert main(argv) == 2  # 5 horizon-steps are over a limit of 1
    capsys.readouterr()
    assert main([*argv[:-1], "10"]) == 0
    assert capsys.readouterr().err == ""  # a few steps: nothing announced
