from validation.cli import main


def test_help_lists_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "theory" in out and "reproduce" in out


def test_unknown_section_is_one_line_exit_2(capsys):
    assert main(["reproduce", "--quick", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "choose from" in err[0]
