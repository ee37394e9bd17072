"""``gva theory ...``: bad settings, from flags or from ``--config`` files, are one line on stderr and exit 2.

Every case fails before any computation, so the module runs in seconds. Sizes that cannot fit in
memory (issue 13, item 10) and the contracts shared by all commands (item 12) are reproduced at
the end.
"""

import json
import math

import pytest

from validation.cli import main

BIG = "10000000000"  # 1e10: chains, steps, ... whose arrays need far more memory than any machine has


def _run(argv, capsys):
    """Exit status of ``gva ARGV`` (argparse's usage errors exit, the handlers return) and its output."""
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _assert_one_line(rc, err, field):
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and field in lines[0], (field, lines[0])


# (command, flags, the field the message must name): wrong type, out of range, NaN, inf, huge, unknown choice
FLAG_CASES = [
    ("averaging", ["--eta", "-1"], "eta"),
    ("averaging", ["--eta", "nan"], "eta"),
    ("averaging", ["--eta", "inf"], "eta"),
    ("averaging", ["--eta", "abc"], "--eta"),
    ("averaging", ["--eta", "2.5"], "eta"),  # SGD diverges for h = 1
    ("averaging", ["--gamma", "0"], "gamma"),
    ("averaging", ["--gamma", "0.1", "1.5"], "gamma"),
    ("averaging", ["--h", "0"], "h"),
    ("averaging", ["--sigma", "-1"], "sigma"),
    ("averaging", ["--sigma", "1e200"], "sigma"),  # sigma^2 overflows
    ("averaging", ["--steps", "0"], "steps"),
    ("averaging", ["--steps", "1.5"], "--steps"),
    ("averaging", ["--steps", BIG], "steps"),
    ("averaging", ["--chains", "1"], "chains"),
    ("averaging", ["--chains", BIG], "chains"),
    ("averaging", ["--noise", "laplace"], "--noise"),
    ("averaging", ["--df", "2"], "df"),
    ("averaging", ["--batch-size", "0"], "batch_size"),
    ("averaging", ["--h", "1", "2", "--n-data", "2"], "n_data"),  # the dataset needs n_data > d
    ("averaging", ["--n-times", "1"], "n_times"),
    ("averaging", ["--n-times", BIG], "n_times"),
    ("averaging", ["--seed", "-1"], "seed"),
    ("averaging", ["--theta0", "1e308", "--mu=-1e308"], "theta0"),
    ("cliff", ["--eps", "0"], "eps"),
    ("cliff", ["--eps", "nan"], "eps"),
    ("cliff", ["--eps", "0.5", "--C", "0.1"], "C"),
    ("cliff", ["--eps", "1e300", "--C", "1e300"], "C"),
    ("cliff", ["--eta", "2"], "eta"),
    ("cliff", ["--eta", "-inf"], "eta"),
    ("cliff", ["--gamma", "1.1"], "gamma"),
    ("cliff", ["--sigma", "1e200"], "sigma"),
    ("cliff", ["--steps", "0"], "steps"),
    ("cliff", ["--chains", "1"], "chains"),
    ("cliff", ["--chains", BIG], "chains"),
    ("cliff", ["--d", "0"], "d"),
    ("cliff", ["--d", BIG], "d"),
    ("cliff", ["--d", "x"], "--d"),
    ("cliff", ["--theta0", "nan"], "theta0"),
    ("cliff", ["--mu", "1e308", "--theta0=-1e308"], "theta0"),
    ("prop41", ["--eps", "-1"], "eps"),
    ("prop41", ["--eps", "0.5", "--C", "0.1"], "C"),
    ("prop41", ["--sigma", "nan"], "sigma"),
    ("prop41", ["--eta", "2"], "eta"),
    ("prop41", ["--gamma", "0"], "gamma"),
    ("prop41", ["--c1", "0"], "c1"),
    ("prop41", ["--c2", "inf"], "c2"),
    ("prop41", ["--quick", "maybe"], "--quick"),
    ("prop31", ["--H", "0"], "H"),
    ("prop31", ["--H", "x"], "--H"),
    ("prop31", ["--delta", "0"], "delta"),
    ("prop31", ["--delta", "inf"], "delta"),
    ("prop31", ["--s", "-1"], "s"),
    ("prop31", ["--s", "1e-308"], "s"),  # s^2 underflows to 0
    ("prop31", ["--x0", "nan"], "x0"),
    ("prop31", ["--x0-sd", "-1"], "x0_sd"),
    ("linear-gva", ["--rho", "1.5"], "rho"),
    ("linear-gva", ["--dt", "0"], "dt"),
    ("linear-gva", ["--dt", "1e300"], "dt"),
    ("linear-gva", ["--N", "0"], "N"),
    ("linear-gva", ["--N", "fresh"], "--N"),
    ("linear-gva", ["--N", BIG], "N"),
    ("linear-gva", ["--traj-len", BIG], "traj_len"),
    ("linear-gva", ["--label-noise", "-1"], "label_noise"),
    ("linear-gva", ["--misspec", "nan"], "misspec"),
    ("linear-gva", ["--rho", "1", "--misspec", "1e300"], "misspec"),  # the demonstrations overflow
    ("linear-gva", ["--eta", "0"], "eta"),
    ("linear-gva", ["--batch-size", "0"], "batch_size"),
    ("linear-gva", ["--batch-size", BIG], "batch_size"),
    ("linear-gva", ["--gamma", "1.5"], "gamma"),
    ("linear-gva", ["--steps", BIG], "steps"),
    ("linear-gva", ["--chains", BIG], "chains"),
    ("linear-gva", ["--H", "0"], "H"),
    ("linear-gva", ["--record-every", "0"], "record_every"),
    ("linear-gva", ["--fresh", "maybe"], "--fresh"),
]


@pytest.mark.parametrize("command, flags, field", FLAG_CASES)
def test_bad_flag_is_one_line(command, flags, field, capsys):
    rc, _, err = _run(["theory", command, "-q"] + flags, capsys)
    _assert_one_line(rc, err, field)


# (command, config-file table, field): the same kinds of mistakes, read from a JSON file
FILE_CASES = [
    ("averaging", {"eta": "fast"}, "eta"),
    ("averaging", {"steps": 10.5}, "steps"),
    ("averaging", {"chains": True}, "chains"),
    ("averaging", {"gamma": [0.1, math.nan]}, "gamma"),
    ("averaging", {"sigma": math.inf}, "sigma"),
    ("averaging", {"chains": int(BIG)}, "chains"),
    ("averaging", {"noise": "laplace"}, "noise"),
    ("averaging", {"h": 1.0}, "h"),  # a list is needed
    ("averaging", {"T": 100}, "T"),  # unknown key: the old flag name
    ("cliff", {"eps": -0.1}, "eps"),
    ("cliff", {"eta": math.nan}, "eta"),
    ("cliff", {"d": 2.0}, "d"),
    ("cliff", {"chains": int(BIG)}, "chains"),
    ("cliff", {"theta0": "mu"}, "theta0"),
    ("prop41", {"eps": -1}, "eps"),
    ("prop41", {"quick": "yes"}, "quick"),
    ("prop41", {"C": math.inf}, "C"),
    ("prop31", {"H": [10, 0]}, "H"),
    ("prop31", {"H": [int("100000000000")]}, "H"),
    ("prop31", {"delta": [0.01, -0.01]}, "delta"),
    ("prop31", {"s": None}, "s"),
    ("linear-gva", {"eta": 1e6}, "eta"),
    ("linear-gva", {"chains": 1}, "chains"),
    ("linear-gva", {"seeds": 10}, "seeds"),  # unknown key: the old flag name
    ("linear-gva", {"batch_size": 0}, "batch_size"),
    ("linear-gva", {"fresh": 1}, "fresh"),
    ("linear-gva", {"H": [50, 1e400]}, "H"),
]


@pytest.mark.parametrize("command, table, field", FILE_CASES)
def test_bad_config_key_is_one_line(command, table, field, capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))  # NaN and Infinity are written as JSON's common extension
    rc, _, err = _run(["theory", command, "-q", "--config", str(path)], capsys)
    _assert_one_line(rc, err, field)


def test_bad_toml_value_is_one_line(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("eta = nan\n")
    rc, _, err = _run(["theory", "cliff", "-q", "--config", str(path)], capsys)
    _assert_one_line(rc, err, "eta")


def test_config_file_and_flags_give_the_same_run(capsys, tmp_path):
    path = tmp_path / "cliff.toml"
    path.write_text("steps = 20\nchains = 50\nd = 2\n")
    by_file = _run(["theory", "cliff", "-q", "--json", "--config", str(path)], capsys)
    by_flags = _run(["theory", "cliff", "-q", "--json", "--steps", "20", "--chains", "50", "--d", "2"], capsys)
    assert by_file[0] == by_flags[0] == 0 and by_file[1] == by_flags[1]
    # a flag overrides the file
    override = _run(["theory", "cliff", "-q", "--json", "--config", str(path), "--steps", "5"], capsys)
    assert json.loads(override[1])["title"].count("T=5,") == 1


def test_noise_kinds_match_the_model():
    from gvatheory.averaging import NOISE_KINDS
    from validation.cli.theory_averaging import NOISE_KINDS as CLI_KINDS

    assert CLI_KINDS == NOISE_KINDS


# ---------------------------------------------------------------- issue 13, item 10: sizes that cannot fit


@pytest.mark.parametrize(
    "argv, field",
    [
        # the work bound lifted, so that the memory check is what refuses
        (["cliff", "--chains", BIG, "--max-chain-steps", "1e30"], "chains"),
        (["prop31", "--H", "100000000000", "--max-steps", "1e30"], "H"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_allocating(argv, field, capsys):
    rc, _, err = _run(["theory", *argv, "-q"], capsys)
    _assert_one_line(rc, err, f"{field}=")
    assert "too large" in err and f"the largest {field} that fits is" in err


def test_overflow_is_reported_as_inf_with_a_flag(capsys, recwarn):
    rc, out, err = _run(["theory", "prop31", "--delta", "1e308", "--json"], capsys)
    assert rc == 0 and err == "" and not recwarn.list
    doc = json.loads(out)
    assert all(row["loss_bc"] == "inf" for row in doc["rows"])
    assert doc["overflow (reported as inf)"].startswith("6 of 6")


# ---------------------------------------------------------------- issue 13, item 12: one contract for all


@pytest.mark.parametrize("command", ["averaging", "cliff", "linear-gva"])
def test_every_monte_carlo_command_refuses_a_divergent_eta(command, capsys):
    rc, _, err = _run(["theory", command, "-q", "--eta", "1e6"], capsys)
    _assert_one_line(rc, err, "eta=")
    assert "allow_divergent" not in err


@pytest.mark.parametrize("command", ["averaging", "cliff", "linear-gva"])
def test_every_monte_carlo_command_refuses_one_chain(command, capsys):
    rc, _, err = _run(["theory", command, "-q", "--chains", "1"], capsys)
    _assert_one_line(rc, err, "chains=1")


def test_prop41_validates_without_plot(capsys):
    rc, _, err = _run(["theory", "prop41", "--eps", "-1"], capsys)
    _assert_one_line(rc, err, "eps=-1")


def test_messages_name_the_flags_the_user_typed(capsys):
    # sigma (not the derived variance) for the cliff, theta0 (not offset0), no API-only arguments
    for argv, field in (
        (["cliff", "--sigma", "1e300"], "sigma="),
        (["cliff", "--theta0", "1e308", "--mu=-1e308"], "theta0="),
    ):
        rc, _, err = _run(["theory", *argv, "-q"], capsys)
        _assert_one_line(rc, err, field)
        assert "var=" not in err and "offset0" not in err
