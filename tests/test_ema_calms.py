"""The averaging study (``validation.studies.ema_calms``): its rules on synthetic runs built to
support and to contradict, its gates, its spec against the committed one, and one tiny run
measured end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gvaempirics.bc.flips import PowerLaw
from validation.studies import ema_calms as ec
from validation.studies.ema_calms_page import dropped

ROOT = Path(__file__).resolve().parent.parent
K = len(ec.WIDTHS)


def _run(env, seed, rng, *, ratio, law_off=1.0, walks=None, fit=0.0):
    """A synthetic measured run: raw oscillation ~0.1, averages at ``ratio`` x raw (noisy), flips
    as the law predicts times ``law_off``."""
    raw = 0.1 * np.exp(rng.normal(0, 0.1))
    law = PowerLaw(0.3, 0.8)
    movement = np.geomspace(0.05, 0.5, K)
    moves = [m * np.exp(rng.normal(0, 0.3, 29)) for m in movement]  # 29 consecutive pairs per width
    pairs = 290
    flips = np.array([rng.poisson(10 * law_off * float(law(m).sum())) for m in moves])
    walks = np.ones(10, bool) if walks is None else walks
    return dict(
        run=f"{env}__base__s{seed}", env=env, seed=seed, scale=1000.0, walks=walks, law=law,
        raw_osc=raw, osc=raw * ratio * np.exp(rng.normal(0, 0.1, K)), fit_error=np.full(K, fit),
        movement=movement, moves=moves, n_ics=10, raw_flips=rng.poisson(pairs * float(law(1.0))), pairs=pairs, flips=flips,
        raw_osc_walked=raw, osc_walked=raw * ratio * np.exp(rng.normal(0, 0.1, K)), raw_mean=0.8, mean=np.full(K, 0.85), raw_mean_walked=0.9, mean_walked=np.full(K, 0.9),
    )  # fmt: skip


def _runs(seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [_run(env, s, rng, **kw) for env in ec.ENVS for s in range(1, 6)]


def _outcomes(verdicts):
    return {v.rule: v.outcome for v in verdicts}


def test_averages_that_remove_most_support_and_the_law_that_holds_supports():
    falls = np.array([True] * 8 + [False] * 2)
    out = _outcomes(ec.decide(_runs(ratio=0.2, walks=falls)))
    for env in ec.ENVS:
        assert out[f"ema-calms/window/{env}-quick"] == "supports"
        assert out[f"ema-calms/flip-law/{env}-quick"] == "supports"
    assert out["ema-calms/flip-law/pooled-quick"] == "supports"
    assert out["ema-calms/expert-ics/Walker2d-v5-quick"] == "supports"


def test_averages_that_remove_little_and_a_law_4x_off_contradict():
    out = _outcomes(ec.decide(_runs(ratio=0.9, law_off=4.0, walks=np.array([True] * 8 + [False] * 2))))
    for env in ec.ENVS:
        assert out[f"ema-calms/window/{env}-quick"] == "contradicts"
    assert out["ema-calms/flip-law/pooled-quick"] == "contradicts"
    assert out["ema-calms/expert-ics/Hopper-v5-quick"] == "contradicts"


def test_one_width_that_halves_is_enough_and_a_poorly_fitted_width_is_left_out():
    runs = _runs(ratio=0.9)
    for r in runs:
        r["osc"][2] = r["raw_osc"] * 0.2
    assert _outcomes(ec.decide(runs))["ema-calms/window/Hopper-v5-quick"] == "supports"
    for r in runs:
        r["fit_error"][2] = 0.5  # the snapshots cannot give that width: it leaves the family
    v = next(v for v in ec.decide(runs) if v.rule == "ema-calms/window/Hopper-v5-quick")
    assert v.outcome == "contradicts" and "5 widths in the family" in v.detail
    assert "the intervals are of widths 0.01, 0.02, 0.1, 0.2, 0.289; left out: 0.05 (fit error 0.5)" in v.detail
    for r in runs:
        r["fit_error"][2], r["mean"][2] = 0.0, r["raw_mean"] - 0.3  # calm, but by falling: also left out
    v = next(v for v in ec.decide(runs) if v.rule == "ema-calms/window/Hopper-v5-quick")
    assert v.outcome == "contradicts" and "5 widths in the family" in v.detail
    assert "left out: 0.05 (return -0.30 x expert)" in v.detail
    runs[0]["osc"][4] = 0.0
    v = next(v for v in ec.decide(runs) if v.rule == "ema-calms/window/Hopper-v5-quick")
    assert "left out: 0.05 (return -0.30 x expert); 0.2 (index 0 in a run)" in v.detail


def test_gates_an_expert_that_never_falls_and_too_few_runs():
    out = _outcomes(ec.decide(_runs(ratio=0.2)))  # the expert walks every IC: the restriction cannot separate
    assert out["ema-calms/expert-ics/Walker2d-v5-quick"] == "inconclusive"
    few = [r for r in _runs(ratio=0.2) if r["seed"] <= 2]
    assert _outcomes(ec.decide(few))["ema-calms/window/Ant-v5-quick"] == "inconclusive"  # min_n 3


def test_the_law_ratio_by_hand():
    r = _run("Hopper-v5", 1, np.random.default_rng(1), ratio=0.5)
    predicted = sum(10 * min(0.3 * m**0.8, 1.0) for ms in r["moves"] for m in ms)  # the law at each pair
    assert ec._law_ratio(r) == pytest.approx((r["flips"].sum() + 1) / (predicted + 1))
    assert ec._law_ratio(r, raw=True) == pytest.approx((r["raw_flips"] + 1) / (290 * 0.3 + 1))


def test_flip_counts_by_hand():
    returns = np.array([[100.0, 0.0], [150.0, 0.0], [151.0, 300.0]])
    assert ec._flip_counts(returns, [np.arange(3)], 1000.0) == (1, 4)  # one move over 100 of 4 pairs
    assert ec._flip_counts(returns, [np.arange(2), np.arange(1, 3)], 100.0, ics=np.array([True, False])) == (
        1,
        2,
    )  # IC 0: 100 -> 150 moves over 10


@pytest.mark.parametrize("name", ec.SWEEPS)
def test_the_specs_are_the_committed_ones(name):
    from gvaempirics.sweeps import SweepSpec

    assert SweepSpec.from_file(ROOT / "docs" / "sweeps" / f"ema-calms-{name}.toml") == ec.sweep_spec(name)


def test_a_tiny_posthoc_run_measured_end_to_end(tmp_path, tiny_bc):
    from gvaempirics.bc.config import BCConfig
    from gvaempirics.bc.train import train_bc

    run = tmp_path / "run"
    train_bc(BCConfig(**{**tiny_bc, "stabilizer": "posthoc", "posthoc_every": 10}), run, quiet=True)
    m = ec.measure_run(run)
    assert m["osc"].shape == (K,) and m["movement"].shape == (K,) and m["pairs"] == 4 * 3
    assert (run / "posthoc.json").is_file() and (run / "flips_step_30.json").is_file()
    again = ec.measure_run(run)  # from the cached files: the same numbers
    np.testing.assert_array_equal(again["osc"], m["osc"])
    np.testing.assert_equal(vars(again["law"]), vars(m["law"]))  # NaN exponent when no flip: equal as arrays
    # On a machine that has only the run's small files (longruns/ commits no checkpoint): the same numbers.
    shutil.rmtree(run / "checkpoints")
    moved = ec.measure_run(run)
    np.testing.assert_array_equal(moved["osc"], m["osc"])
    np.testing.assert_array_equal(moved["flips"], m["flips"])
    (run / "posthoc.json").unlink()  # a cache missing as well: the error says what is missing
    with pytest.raises(ValueError, match="no checkpoint yet"):
        ec.measure_run(run)


def test_runs_that_cannot_test_the_law_are_left_out_and_the_raw_check_can_fail():
    runs = _runs(ratio=0.2)
    for r in runs:
        if r["env"] in ("HalfCheetah-v5", "Ant-v5"):  # calm envs: hardly a raw flip, hardly a predicted one
            r["raw_flips"], r["flips"] = 3, np.zeros(K, int)
    v = {v.rule: v for v in ec.decide(runs)}
    assert v["ema-calms/flip-law/Ant-v5-quick"].outcome == "inconclusive"
    assert "0 of 5 runs can test the law" in v["ema-calms/flip-law/Ant-v5-quick"].detail
    assert "over 10 of 20 runs" in v["ema-calms/flip-law/pooled-quick"].detail
    assert v["ema-calms/flip-law/pooled-quick"].outcome == "supports"
    for r in runs:
        r["raw_flips"] = 200  # raw flips far above the curve at one step (0.3 x 290 = 87)... 2.3x
        r["law"] = PowerLaw(0.1, 0.8)  # ...and with a flatter curve, 6.9x: the consistency check fails
    assert _outcomes(ec.decide(runs))["ema-calms/flip-law/raw-quick"] == "contradicts"


def test_a_per_environment_law_can_fail_while_others_hold():
    runs = _runs(ratio=0.5)
    for r in runs:
        if r["env"] == "Walker2d-v5":
            r["flips"] = r["flips"] * 0 + 0  # the averages never flip where the law predicts ~40
    out = _outcomes(ec.decide(runs))
    assert out["ema-calms/flip-law/Walker2d-v5-quick"] == "contradicts"
    assert out["ema-calms/flip-law/Hopper-v5-quick"] == "supports"


@pytest.mark.parametrize(
    "key",
    [
        "ema-calms/filtered-demos/Walker2d-v5-quick",
        "ema-calms/window/Walker2d-v5-paper",
        "ema-calms/filtered-demos/Walker2d-v5-paper",
        "ema-calms/sac-expert/Walker2d-v5-quick",
    ],
)
def test_the_one_expert_tables_decide_their_own_rule_both_ways(key):
    rng = np.random.default_rng(3)
    calm = [_run("Walker2d-v5", s, rng, ratio=0.2) for s in range(1, 6)]
    rough = [_run("Walker2d-v5", s, rng, ratio=0.9) for s in range(1, 6)]
    assert (ec.decide_window(key, calm).rule, ec.decide_window(key, calm).outcome) == (key, "supports")
    assert ec.decide_window(key, rough).outcome == "contradicts"  # 5 seeds: a ratio near 1 is decided
    assert ec.decide_window(key, rough[:3]).outcome == "inconclusive"  # 3 seeds at level 1 - 0.05/6: too wide
    assert ec.decide_window(key, rough[:2]).outcome == "inconclusive"  # fewer than min_n seeds
    if key.endswith("-paper"):  # designed as 5 runs: 4 that would support do not decide
        assert ec.decide_window(key, calm[:4]).outcome == "inconclusive"
    rows = ec.table(calm, "paper")
    assert [(r["env"], r["table"], r["runs"]) for r in rows] == [("Walker2d-v5", "paper", 5)]


def test_the_sac_tables_walked_subset_decides_apart_from_the_whole_set():
    """Averaging that calms only the initial conditions the expert walks: the restriction supports
    while the whole set contradicts; an expert that never falls gates it; the power is stated."""
    key = "ema-calms/expert-ics/Walker2d-v5-sac-quick"
    rng = np.random.default_rng(5)
    walks = np.array([True] * 6 + [False] * 4)
    runs = [_run("Walker2d-v5", s, rng, ratio=0.9, walks=walks) for s in range(1, 6)]
    for r in runs:
        r["osc_walked"] = r["raw_osc_walked"] * 0.2 * np.exp(rng.normal(0, 0.1, K))
    v = ec.decide_expert_ics(key, runs)
    assert (v.rule, v.outcome) == (key, "supports")
    assert "falls on initial conditions [6, 7, 8, 9]" in v.detail and "power: the budget decides a ratio" in v.detail
    assert ec.decide_window("ema-calms/sac-expert/Walker2d-v5-quick", runs).outcome == "contradicts"
    for r in runs:
        r["walks"] = np.ones(10, bool)
    assert ec.decide_expert_ics(key, runs).outcome == "inconclusive"  # nothing to separate


def test_the_power_line_is_the_t_interval_budget():
    """The factor printed: exp((t_{1-a/2} + t_0.8) sd / sqrt n) at the Bonferroni level, by hand."""
    from scipy import stats

    rng = np.random.default_rng(8)
    runs = [_run("Walker2d-v5", s, rng, ratio=0.5) for s in range(1, 6)]
    logs = np.array([[np.log(r["osc"][k] / r["raw_osc"]) for r in runs] for k in range(K)])
    sd = float(np.median(logs.std(axis=1, ddof=1)))
    t = stats.t.ppf(1 - 0.05 / K / 2, 4) + stats.t.ppf(0.8, 4)
    assert (
        ec._power(runs)
        == f"power: the budget decides a ratio {np.exp(t * sd / np.sqrt(5)):.3g}x from an edge (80% power, 5 runs)"
    )


def test_the_paper_tables_train_fresh_seeds_and_the_filtered_ones_drop_falls():
    assert ec.sweep_spec("paper").seeds == ec.sweep_spec("paper-filtered").seeds == (4, 5, 6, 7, 8)
    assert ec.sweep_spec("paper-filtered").base["drop_falls"] and ec.sweep_spec("filtered").base["drop_falls"]
    assert "drop_falls" not in ec.sweep_spec("paper").base
    with pytest.raises(ValueError, match="name='full' is out of range"):
        ec.sweep_spec("full")


def test_the_page_says_what_the_filter_drops(tmp_path):
    from gvaempirics.bc.data import Demonstrations, Trajectories

    lengths = np.array([10, 4, 10, 10])
    tr = Trajectories(np.zeros((4, 10, 3)), np.zeros((4, 10, 1)), lengths, np.zeros(4))
    (tmp_path / "demos").mkdir()
    Demonstrations(tr, tr, {}).save(tmp_path / "demos" / "Walker2d-v5__n4_v4_h10_s0.npz")
    assert dropped(tmp_path) == "Walker2d-v5: it drops 1 of 4 trajectories, 11.8% of the training pairs"
    assert dropped(tmp_path / "none") == "no demonstrations collected"
