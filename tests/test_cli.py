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
