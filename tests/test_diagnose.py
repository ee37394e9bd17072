"""``gva diagnose`` on checkpoints the toolkit never saw: a linear CartPole policy trained by a
plain SGD script here, its factory in ``tests/diagnose_factory.py``; the numbers against hand
computations and a plain gymnasium loop; bad input; and a toolkit BC run directory."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gvaempirics.diagnose import Diagnosis, analyze, average_state_dicts, diagnose, ics_needed, plot_diagnosis
from gvatheory.inference import Interval
from validation.cli import main

torch.set_num_threads(1)
ICS, H, SEED = 6, 200, 3


def train_cartpole_policy(folder: Path, steps: int = 40, every: int = 4) -> list[Path]:
    """Plain minibatch SGD of a linear CartPole policy imitating a hand-made controller
    (push towards the side the pole falls to) on uniformly drawn states; a state dict every
    ``every`` steps, named by the step."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    policy = torch.nn.Linear(4, 2)
    torch.nn.init.normal_(policy.weight, std=0.1, generator=g)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    scale = torch.tensor([2.0, 2.0, 0.2, 2.0])
    saved = []
    for step in range(steps + 1):
        if step % every == 0:
            saved.append(folder / f"step_{step}.pt")
            torch.save(policy.state_dict(), saved[-1])
        s = (torch.rand(16, 4, generator=g) * 2 - 1) * scale  # (B, 4): x, x_dot, theta, theta_dot
        target = (s[:, 2] + 0.5 * s[:, 3] > 0).long()  # (B,)
        loss = torch.nn.functional.cross_entropy(policy(s), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return saved


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cartpole") / "ckpts"
    return folder, train_cartpole_policy(folder)


@pytest.fixture(scope="module")
def cli_run(ckpts, tmp_path_factory):
    """``gva diagnose`` on the trained policy, as a user would run it."""
    folder, _ = ckpts
    out = tmp_path_factory.mktemp("diag") / "out"
    argv = ["diagnose", folder, "--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1"]
    argv += ["--ics", ICS, "--H", H, "--seed", SEED, "--average", "2", "4", "8", "--out", out, "-q"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    assert code == 0
    return out, buf.getvalue(), Diagnosis.from_dict(json.loads((out / "diagnosis.json").read_text()))


def seeds() -> np.ndarray:
    return np.random.SeedSequence([SEED, 0]).generate_state(ICS).astype(np.int64)


def test_cli_writes_summary_figure_and_shapes(cli_run, ckpts):
    out, printed, d = cli_run
    _, saved = ckpts
    assert (out / "diagnosis.png").stat().st_size > 0
    assert d.returns.shape == (len(saved), ICS) and d.mean_ci.shape == (len(saved), 2)
    assert d.ics_needed.shape == (len(saved) - 1,)
    assert list(d.steps) == [int(p.stem.split("_")[1]) for p in saved]
    assert [a.k for a in d.averages] == [2, 4, 8]
    np.testing.assert_array_equal(d.seeds, seeds())
    assert np.all(d.mean_ci[:, 0] - 1e-9 <= d.mean) and np.all(d.mean <= d.mean_ci[:, 1] + 1e-9)
    for line in ("oscillation index", "flip rate", "ICs needed to rank neighbours", "average of last 8"):
        assert line in printed


def test_returns_match_a_plain_gymnasium_loop(cli_run, ckpts):
    _, _, d = cli_run
    _, saved = ckpts
    from diagnose_factory import plain_returns

    for i in (0, len(saved) // 2, len(saved) - 1):
        np.testing.assert_array_equal(d.returns[i], plain_returns("CartPole-v1", torch.load(saved[i]), seeds(), H))


def test_averaged_checkpoint_equals_hand_averaged_weights(cli_run, ckpts):
    _, _, d = cli_run
    _, saved = ckpts
    from diagnose_factory import plain_returns

    for a in d.averages:
        states = [torch.load(p) for p in saved[-a.k :]]
        hand = {name: sum(s[name] for s in states) / a.k for name in states[0]}
        np.testing.assert_array_equal(a.returns, plain_returns("CartPole-v1", hand, seeds(), H))
        assert a.gain.estimate == pytest.approx(a.returns.mean() - d.returns[-1].mean())


def test_box_actions_other_names_and_formats(tmp_path):
    """Pendulum (Box actions, clipped): checkpoints named ckpt-epoch<N>.pth holding a
    {"state_dict": ...} dict, ordered by N (not by name); returns equal a plain gymnasium loop."""
    g = torch.Generator().manual_seed(1)
    states = {
        n: {"weight": 3 * torch.randn(1, 3, generator=g), "bias": torch.randn(1, generator=g)} for n in (2, 10, 7)
    }
    for n, state in states.items():
        torch.save({"state_dict": state, "epoch": n}, tmp_path / f"ckpt-epoch{n}.pth")
    d = diagnose(
        tmp_path, factory="diagnose_factory:box_policy", env="Pendulum-v1", ics=3, H=25, average=(2,), n_boot=200
    )
    assert list(d.steps) == [2, 7, 10]
    from diagnose_factory import plain_returns

    s = np.random.SeedSequence([0, 0]).generate_state(3).astype(np.int64)
    for i, n in enumerate(d.steps):
        np.testing.assert_allclose(d.returns[i], plain_returns("Pendulum-v1", states[int(n)], s, 25), rtol=1e-12)


def test_oscillation_index_and_flip_rate_by_hand(cli_run):
    _, _, d = cli_run
    m = d.returns.mean(axis=1)
    scale = d.returns.max() - d.returns.min()
    assert d.scale_source == "range" and d.scale == pytest.approx(scale)
    assert d.oscillation.estimate == pytest.approx(np.mean(np.abs(np.diff(m))) / scale)
    # a small case: means (1, 2, 2.5), range 4 -> (1 + 0.5) / 2 / 4; flips |change| > 0.4: 3 of 4
    r = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 4.0]])
    small = analyze(r, n_boot=200)
    assert small.oscillation.estimate == pytest.approx(0.1875)
    assert small.flip_rate.estimate == pytest.approx(0.75)
    assert analyze(r, scale=2.0, n_boot=200).oscillation.estimate == pytest.approx(0.375)


def test_ics_needed_formula():
    r0 = np.zeros(4)
    r1 = np.array([1.0, 2.0, 3.0, 4.0])  # difference: mean 2.5, sd sqrt(5/3)
    r2 = r1 + np.array([1.0, -1.0, 1.0, -1.0])  # mean 0: a tie, never resolved
    r3 = r2 + np.array([0.1, -0.1, 0.3, -0.2])  # mean 0.025, sd 0.2217
    mean, sd, n = ics_needed(np.stack([r0, r1, r2, r3]))
    np.testing.assert_allclose(mean, [2.5, 0.0, 0.025])
    d3 = np.array([0.1, -0.1, 0.3, -0.2])
    np.testing.assert_allclose(sd, [np.sqrt(5 / 3), 2 / np.sqrt(3), d3.std(ddof=1)])
    assert n[0] == pytest.approx((1.96 * np.sqrt(5 / 3) / 2.5) ** 2) and n[1] == np.inf
    assert n[2] == pytest.approx((1.96 * d3.std(ddof=1) / 0.025) ** 2)
    d = analyze(np.stack([r0, r1, r2, r3]), n_boot=200)
    assert d.ics_needed_median == pytest.approx(n[2]) and d.resolvable_fraction == pytest.approx(1 / 3)


def test_rollout_function_and_weight_averaging(ckpts):
    """With a return linear in the weights, the averaged checkpoint's return is the mean of the
    last k checkpoints' returns."""
    folder, saved = ckpts
    d = diagnose(
        folder, factory="diagnose_factory:rollout_policy", rollout="diagnose_factory:linear_rollout", ics=5, n_boot=200
    )
    assert d.returns.shape == (len(saved), 5)
    for a in d.averages:
        np.testing.assert_allclose(a.returns, d.returns[-a.k :].mean(axis=0), rtol=1e-6, atol=1e-6)


def test_cli_json_with_a_rollout_function(ckpts, tmp_path, capsys):
    argv = ["diagnose", ckpts[0], "--factory", "diagnose_factory:rollout_policy", "--json"]
    assert main([*argv, "--rollout", "diagnose_factory:linear_rollout", "--ics", "3", "--out", tmp_path / "o"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "o" / "diagnosis.json").read_text())
    assert np.shape(printed["returns"]) == (len(ckpts[1]), 3) and printed["settings"]["H"] is None


def test_bootstrap_is_seeded_and_json_round_trips(cli_run, tmp_path):
    _, _, d = cli_run
    again = analyze(d.returns, seeds=d.seeds, n_boot=d.n_boot, seed=SEED)
    np.testing.assert_array_equal(again.mean_ci, d.mean_ci)
    assert again.oscillation == d.oscillation and again.flip_rate == d.flip_rate
    back = Diagnosis.from_dict(json.loads(d.to_json()))
    np.testing.assert_array_equal(back.ics_needed, d.ics_needed)
    assert back.to_json() == d.to_json()
    # the toolkit's one interval type, its unit and method written out in the JSON
    assert type(d.oscillation) is Interval and d.oscillation.n == ICS and d.oscillation.level == d.confidence
    doc = json.loads(d.to_json())
    assert doc["oscillation_index"] == {**d.oscillation.to_dict(), "method": "percentile bootstrap over ICs"}
    # diagnosis.json files written before the interval type was shared name the estimate "value"
    for key in ("oscillation_index", "flip_rate"):
        doc[key] = {"value": doc[key]["estimate"], "low": doc[key]["low"], "high": doc[key]["high"]}
    assert Diagnosis.from_dict(doc).oscillation == d.oscillation
    assert plot_diagnosis(back) is not None


def test_average_of_state_dicts_keeps_integer_entries():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    avg = average_state_dicts([a, b])
    torch.testing.assert_close(avg["w"], torch.tensor([2.0, 4.0]))
    assert int(avg["n"]) == 7


@pytest.fixture
def bad_folders(tmp_path_factory, ckpts):
    base = tmp_path_factory.mktemp("bad")
    (base / "empty").mkdir()
    (base / "one").mkdir()
    torch.save(torch.load(ckpts[1][0]), base / "one" / "step_1.pt")
    return base


def _argv(folder, *extra):
    return ["diagnose", folder, "-q", "--ics", "2", "--H", "5", *map(str, extra)]


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--factory", "no_such_module_xyz:make", "--env", "CartPole-v1"], "no_such_module_xyz"),
        (["--factory", "diagnose_factory:missing", "--env", "CartPole-v1"], "diagnose_factory:missing"),
        (["--factory", "diagnose_factory:NOT_CALLABLE", "--env", "CartPole-v1"], "not callable"),
        (["--factory", "diagnose_factory", "--env", "CartPole-v1"], "module:function"),
        (["--factory", "diagnose_factory:wrong_policy", "--env", "CartPole-v1"], "step_0.pt"),
        (["--factory", "diagnose_factory:linear_policy", "--env", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
        (["--factory", "diagnose_factory:linear_policy"], "env and rollout"),
        (["--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1", "--rollout", "a:b"], "rollout"),
        (["--env", "CartPole-v1"], "factory"),
        (["--factory", "diagnose_factory:rollout_policy", "--rollout", "diagnose_factory:bad_rollout"], "bad_rollout"),
        (["--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1", "--ics", "1"], "ics"),
        (["--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1", "--average", "1"], "average"),
        (["--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1", "--out", "/dev/null/x"], "/dev/null"),
    ],
)
def test_bad_input_refused(refuses, ckpts, extra, named):
    refuses(_argv(ckpts[0], *extra), named)


@pytest.mark.parametrize("which, named", [("empty", "no checkpoints"), ("one", "only one"), ("missing", "missing")])
def test_bad_checkpoint_folders_refused(refuses, bad_folders, which, named):
    refuses(_argv(bad_folders / which, "--factory", "diagnose_factory:linear_policy", "--env", "CartPole-v1"), named)


def test_toolkit_bc_run_directory(tmp_path):
    """A `gva bc train` run: default factory and env from its config; with the run's ICs and
    horizon, gymnasium's returns are the run's own logged evaluations of the raw weights."""
    from gvaempirics.bc.config import PRESETS, BCConfig
    from gvaempirics.bc.train import train_bc
    from gvaempirics.rundir import RunDir

    cfg = BCConfig(
        **{
            **PRESETS["tiny"],
            "threads": 1,
            "steps": 20,
            "eval_every": 10,
            "zoom_windows": (),
            "checkpoint_every": 10,
            "H": 30,
            "ics": 2,
            "demo_horizon": 30,
        }
    )
    run = tmp_path / "run"
    train_bc(cfg, run, quiet=True)
    d = diagnose(run, ics=cfg.ics, H=cfg.H, seed=cfg.ic_seed, average=(2,), n_boot=200)
    assert d.settings["env"] == cfg.env and d.settings["factory"].endswith("bc_imitator")
    logged = {r["step"]: r["returns"] for r in RunDir(run).metrics("eval") if r["weights"] == "raw"}
    np.testing.assert_allclose(d.returns, [logged[int(s)] for s in d.steps], rtol=1e-6)
    assert d.averages[0].returns.shape == (cfg.ics,)
