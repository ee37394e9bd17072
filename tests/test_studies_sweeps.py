"""The sweep-based studies (algorithmic, landscape, ema-never-hurts) and the three-outcome report."""

import json
import math
import sys
import types

import numpy as np
import pytest

from validation.report import Section, Verdict, write_report
from validation.studies import algorithmic, ema_never_hurts, landscape


def _row(label, seed, osc, stab=None, raw_ret=900.0, ema_ret=950.0, expert=1000.0, status="finished"):
    return {
        "run": f"Hopper-v5__{label}__s{seed}",
        "env": "Hopper-v5",
        "interventions": label,
        "seed": seed,
        "status": status,
        "stabilizer": "ema",
        "expert_return": expert,
        "steps_done": 60,
        "raw_oscillation": osc,
        "stab_oscillation": osc / 10 if stab is None else stab,
        "raw_zoom_mean_return": raw_ret,
        "stab_zoom_mean_return": ema_ret,
    }


# ------------------------------------------------------------------ algorithmic: registry rules and controls

BASE = [0.10, 0.12, 0.11]


def _table(osc_by_label, stab=None):
    rows = [_row(label, s, o) for label, xs in osc_by_label.items() for s, o in zip((1, 2, 3), xs)]
    if stab is not None:
        for r, v in zip((r for r in rows if r["interventions"] == "base"), stab):
            r["stab_oscillation"] = v
    return rows


def _outcomes(table):
    return {r["intervention"]: r["verdict"].outcome for r in table if "verdict" in r}


def test_algorithmic_rows_come_from_their_registry_rules():
    rows = _table({"base": BASE, "lr-cosine": [0.02, 0.03, 0.025], "width-512": [0.01, 0.02, 0.015]})
    rows.append(_row("batch-256", 1, math.nan, status="failed"))
    table = algorithmic.analyse(rows, ("lr-cosine", "width-512", "batch-256"))
    by = {r["intervention"]: r for r in table}
    assert by["base"]["osc"].estimate == pytest.approx(math.exp(np.mean(np.log(BASE))))
    ratio = by["lr-cosine"]["ratio"]
    assert ratio.method == "Welch t, log ratio" and ratio.estimate == pytest.approx(
        math.exp(np.mean(np.log([0.02, 0.03, 0.025])) - np.mean(np.log(BASE)))
    )
    assert _outcomes(table) == {
        "lr-cosine": "supports",  # falls 5x: the interval lies in (0, 0.8]
        "width-512": "contradicts",  # stays? it fell 7x: wholly below 0.5
        "batch-256": "inconclusive",  # no finished run
        algorithmic.AVERAGING: "supports",  # the EMA column is 10x calmer in every base run
    }
    verdicts = algorithmic.verdicts_of(table)
    assert [v.rule for v in verdicts] == [
        "algorithmic/lr-cosine",
        "algorithmic/width-512",
        "algorithmic/batch-256",
        "algorithmic/averaging",
    ]
    assert all(v.rule_text and v.intervals for v in verdicts)
    assert by[algorithmic.AVERAGING]["ratio"].method == "paired t, log ratio"


def test_falls_rule_negative_control_same_law_as_base():
    """An intervention drawn from the base's own law never supports "falls" (at most the 2.5% of a
    one-sided 95% interval, over 400 seeded replications); a 10x fall supports."""
    rng = np.random.default_rng(0)
    supports = 0
    for _ in range(400):
        x, base = np.exp(rng.normal(np.log(0.1), 0.5, (2, 3)))
        table = algorithmic.analyse(_table({"base": list(base), "lr-cosine": list(x)}), ("lr-cosine",))
        supports += _outcomes(table)["lr-cosine"] == "supports"
    assert supports / 400 <= 0.04
    x, base = np.exp(rng.normal(np.log(0.1), 0.3, (2, 3)))
    table = algorithmic.analyse(_table({"base": list(base), "lr-cosine": list(x / 10)}), ("lr-cosine",))
    assert _outcomes(table)["lr-cosine"] == "supports"


def test_stays_rule_controls():
    """An intervention that cuts the index 10x contradicts "stays"; one equal to the base up to 5%
    supports it."""
    base = [0.10, 0.12, 0.11]
    cut = algorithmic.analyse(_table({"base": base, "width-512": [v / 10 for v in base]}), ("width-512",))
    assert _outcomes(cut)["width-512"] == "contradicts"
    same = algorithmic.analyse(_table({"base": base, "width-512": [0.105, 0.115, 0.11]}), ("width-512",))
    assert _outcomes(same)["width-512"] == "supports"


def test_averaging_rule_controls():
    """Averaging that does nothing (EMA index = raw index up to 10% noise) does not support; a 10x cut does."""
    rng = np.random.default_rng(1)
    nothing = algorithmic.analyse(_table({"base": BASE}, stab=list(np.array(BASE) * rng.uniform(0.9, 1.1, 3))), ())
    assert _outcomes(nothing)[algorithmic.AVERAGING] != "supports"
    cut = algorithmic.analyse(_table({"base": BASE}, stab=[v / 10 for v in BASE]), ())
    assert _outcomes(cut)[algorithmic.AVERAGING] == "supports"


def test_algorithmic_power_and_zero_index():
    rows = _table({"base": BASE, "lr-cosine": [0.02, 0.03, 0.025]})
    pw = algorithmic.power(rows, ("lr-cosine",))
    assert pw["n"] == 3 and pw["group"] > 1 and pw["n_pair"] == 3
    # the base's sd of log index alone: the pooled sd lies between the two groups' sds
    sds = [np.std(np.log(v), ddof=1) for v in (BASE, [0.02, 0.03, 0.025])]
    assert min(sds) <= pw["sd_log"] <= max(sds)
    table = algorithmic.analyse(_table({"base": BASE, "lr-cosine": [0.0, 0.03, 0.025]}), ("lr-cosine",))
    verdict = {r["intervention"]: r for r in table}["lr-cosine"]["verdict"]
    assert verdict.outcome == "inconclusive" and "has no log" in verdict.detail


# ------------------------------------------------------------------ landscape: rule and controls


def _measures(reward_raw, loss_raw, reward_ema=None, loss_ema=None):
    from gvaempirics.bc.roughness import roughness

    reward_ema = reward_raw if reward_ema is None else reward_ema
    loss_ema = loss_raw if loss_ema is None else loss_ema
    return {
        "raw": {"reward": roughness(reward_raw), "loss": roughness(loss_raw)},
        "ema": {"reward": roughness(reward_ema), "loss": roughness(loss_ema)},
    }


A = np.linspace(-5, 5, 7)
AA, BB = np.meshgrid(A, A, indexing="ij")


def test_landscape_negative_control_smooth_reward_over_smooth_loss():
    """A smooth reward dome over a smooth loss bowl (4 runs of different curvature and tilt) does
    not pass, though its total-variation ratio is 2 (the dome turns back inside the grid, the
    tilted loss does not): that ratio was the old measure, and it passed smooth surfaces."""
    rough = []
    for k in range(4):
        reward = 3000 - (1 + k) * (AA**2 + 0.5 * BB**2) + 7 * AA
        loss = 0.01 + 1e-4 * (k + 1) * (AA + 20) ** 2 + 1e-5 * BB
        rough.append(landscape.roughness_row(f"run{k}", _measures(reward, loss), ("raw", "ema")))
        assert rough[-1]["raw_reward_tv"] / rough[-1]["raw_loss_tv"] > 1.5
    outcomes = [v.outcome for v, _ in landscape.decide(rough)]
    assert outcomes == ["contradicts", "contradicts"]


SMOOTH_NOT_QUADRATIC = {
    "tanh ridge": np.tanh(AA),
    "Gaussian bump": np.exp(-(AA**2 + BB**2) / 8),
    "sin(a/2)": np.sin(AA / 2),
    "cubic": (AA / 5) ** 3 + 0.3 * BB,
    "logistic step": 1 / (1 + np.exp(-2 * AA)),
    "tanh((a+b)/2)": np.tanh((AA + BB) / 2),
}


@pytest.mark.parametrize("name", list(SMOOTH_NOT_QUADRATIC))
def test_landscape_negative_control_smooth_surfaces_that_are_not_quadratics(name):
    """Smooth rewards that no quadratic follows over the whole grid (the whole-grid quadratic fit,
    the first registered measure, scores them like noise) do not pass the local measure."""
    rough = []
    for k in range(4):
        reward = 3000 * SMOOTH_NOT_QUADRATIC[name] * (1 + 0.1 * k)
        loss = 0.01 + 1e-4 * (k + 1) * (AA**2 + BB**2)
        rough.append(landscape.roughness_row(f"run{k}", _measures(reward, loss), ("raw", "ema")))
    assert all(v.outcome != "supports" for v, _ in landscape.decide(rough))


def test_landscape_positive_control_plateaus_over_a_bowl():
    """Reward on plateaus with cliffs between them (the rollout falls or not) over a smooth loss: supports."""
    rng = np.random.default_rng(2)
    rough = []
    for k in range(4):
        reward = np.where(AA + 0.7 * BB + rng.normal(0, 2, AA.shape) > 0, 3000.0, 1200.0)
        loss = 0.02 + 1e-4 * (AA**2 + BB**2) + 1e-6 * rng.standard_normal(AA.shape)
        rough.append(landscape.roughness_row(f"run{k}", _measures(reward, loss), ("raw", "ema")))
    decided = landscape.decide(rough)
    assert [v.outcome for v, _ in decided] == ["supports", "supports"]
    v, nums = decided[0]
    assert v.rule == "landscape/raw-reward-rougher" and nums["n"] == 4 and nums["power"] > 0
    assert decided[1][0].rule == "landscape/ema-reward-rougher"


def test_landscape_needs_three_runs():
    reward = np.where(AA > 0, 1.0, 0.0)
    rough = [landscape.roughness_row("r", _measures(reward, AA**2), ("raw", "ema"))] * 2
    assert [v.outcome for v, _ in landscape.decide(rough)] == ["inconclusive", "inconclusive"]
    assert [v.outcome for v, _ in landscape.decide([])] == ["inconclusive", "inconclusive"]


# ------------------------------------------------------------------ ema-never-hurts: rule and controls


def _ema_rows(raw, ema, labels=None):
    labels = labels or ["base"] * 3 + ["wd-1e-4"] * (len(raw) - 3)
    return [
        _row(lab, i + 1, 0.1, raw_ret=1000 * r, ema_ret=1000 * e, expert=1000.0)
        for i, (lab, r, e) in enumerate(zip(labels, raw, ema))
    ]


RAW = [0.90, 0.92, 0.94, 0.85, 0.88]  # base sd: m = 0.02 of the expert


def test_ema_negative_control_hurts_by_five_margins():
    """An EMA that loses 5 margins (+-0.5) in every run contradicts."""
    jitter = [0.3, -0.5, 0.1, 0.5, -0.2]
    rows = _ema_rows(RAW, [r - (5 + j) * 0.02 for r, j in zip(RAW, jitter)])
    verdict, nums = ema_never_hurts.decide(ema_never_hurts.paired(rows))
    assert nums["m"] == pytest.approx(0.02) and len(nums["off"]) == 5
    assert nums["interval"].estimate == pytest.approx(-5 - np.mean(jitter))
    assert verdict.outcome == "contradicts" and verdict.rule == "ema-never-hurts/no-loss"


def test_ema_positive_control_helps():
    rows = _ema_rows(RAW, [r + 0.01 + 0.002 * i for i, r in enumerate(RAW)])
    rows.append(_row("demos-100", 1, math.nan, status="failed"))  # not paired
    verdict, nums = ema_never_hurts.decide(ema_never_hurts.paired(rows))
    assert verdict.outcome == "supports" and len(nums["off"]) == 5 and nums["power"] > 0


def test_ema_at_the_ceiling_is_inconclusive_and_says_so():
    """Runs at the ceiling do not count, however the EMA does there: with fewer than 3 runs off
    the ceiling the rule gives inconclusive and the detail says why."""
    raw = [0.985, 0.99, 0.995, 0.99, 0.90]
    rows = _ema_rows(raw, [r - 0.3 for r in raw])
    verdict, nums = ema_never_hurts.decide(ema_never_hurts.paired(rows))
    assert len(nums["off"]) == 1 and verdict.outcome == "inconclusive"
    assert "only 1 of 5 runs are off the ceiling" in verdict.detail
    one_base = ema_never_hurts.decide(ema_never_hurts.paired(_ema_rows(RAW[:1], RAW[:1], ["base"])))[0]
    assert one_base.outcome == "inconclusive" and "no margin" in one_base.detail


# ------------------------------------------------------------------ the three-outcome report


def test_verdict_outcomes():
    assert Verdict("c", True, "d").outcome == "supports"
    assert Verdict("c", False, "d").outcome == "contradicts"
    v = Verdict.of("c", "inconclusive", "d")
    assert not v.passed and not v.contradicts and v.label == "INCONCLUSIVE"
    assert Verdict.of("c", "supports", "d").passed
    with pytest.raises(ValueError, match="outcome"):
        Verdict.of("c", "maybe", "d")
    with pytest.raises(ValueError, match="does not fit"):
        Verdict("c", True, "d", "contradicts")


def test_report_renders_three_outcomes(tmp_path):
    s = Section(
        "x",
        "Section X",
        "body",
        [
            Verdict.of("c1", "supports", "a"),
            Verdict.of("c2", "inconclusive", "b"),
            Verdict.of("c3", "contradicts", "c"),
        ],
    )
    text = write_report([s], tmp_path, title="T").read_text()
    assert "| [Section X](#x) | 1/3 (1 inconclusive) |" in text
    assert "| c1 | PASS | a |" in text and "| c2 | INCONCLUSIVE | b |" in text and "| c3 | FAIL | c |" in text
    saved = json.loads((tmp_path / "verdicts.json").read_text())["x"]["verdicts"]
    assert saved[1] == {"claim": "c2", "passed": False, "detail": "b", "outcome": "inconclusive"}
    assert "outcome" not in saved[0]  # boolean verdicts keep their record
    assert s.contradicted and not s.passed
    assert not Section("y", "Y", "", [Verdict.of("c", "inconclusive", "")]).contradicted


@pytest.mark.parametrize("outcome", ["inconclusive", "supports", "contradicts"])
def test_reproduce_reports_every_outcome_and_exits_0(tmp_path, monkeypatch, capsys, outcome):
    """A contradiction or an inconclusive verdict is a result of the job, not its failure."""
    from validation import reproduce
    from validation.cli import main

    module = types.ModuleType("_fake_study")
    module.run = lambda outdir, *, quick, seed, quiet: Section("fake", "Fake", "", [Verdict.of("c", outcome, "d")])
    monkeypatch.setitem(sys.modules, "_fake_study", module)
    monkeypatch.setattr(reproduce, "ALL_SECTIONS", {**reproduce.ALL_SECTIONS, "fake": "_fake_study"})
    assert main(["reproduce", "--only", "fake", "--out", tmp_path / "r", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ("inconclusive verdicts: fake" in out) == (outcome == "inconclusive")
    assert ("contradict the prediction: fake" in out) == (outcome == "contradicts")


def test_opt_in_sections_run_only_when_named():
    from validation.reproduce import OPT_IN_SECTIONS, SECTIONS, select_sections

    assert set(OPT_IN_SECTIONS) == {"algorithmic", "landscape", "ema-never-hurts", "ema-calms"}
    assert not set(select_sections(None, None)) & set(OPT_IN_SECTIONS)
    assert select_sections(["ema-calms", "ema-never-hurts", "algorithmic", "landscape"], None) == list(OPT_IN_SECTIONS)
    assert select_sections(["landscape", list(SECTIONS)[0]], None) == [list(SECTIONS)[0], "landscape"]


# ------------------------------------------------------------------ end to end, a 2-run sweep


def test_three_studies_end_to_end_on_a_tiny_sweep(tmp_path, monkeypatch):
    from gvaempirics.sweeps import SweepSpec
    from validation.reproduce import reproduce

    spec = SweepSpec(preset="tiny", base={"threads": 1}, interventions=((), ("lr-cosine",)), seeds=(1,))
    monkeypatch.setattr(algorithmic, "sweep_spec", lambda quick, seed: spec)
    monkeypatch.setattr(algorithmic, "sweep_grid", lambda quick: ("lr-cosine",))
    monkeypatch.setattr(landscape, "grid_size", lambda quick: (3, 2))
    path, sections = reproduce(
        tmp_path / "rep", quick=True, only=["algorithmic", "landscape", "ema-never-hurts"], quiet=True
    )
    by = {s.key: s for s in sections}
    assert list(by) == ["algorithmic", "landscape", "ema-never-hurts"]
    # one seed a side, two landscapes: fewer units than any rule's minimum of 3
    assert [v.outcome for s in sections for v in s.verdicts] == ["inconclusive"] * 5
    assert [v.rule for v in by["landscape"].verdicts] == [
        "landscape/raw-reward-rougher",
        "landscape/ema-reward-rougher",
    ]
    assert (
        "over 1 runs" in by["landscape"].verdicts[0].detail and "optimizer step" in by["landscape"].body
    )  # base runs only: one per seed
    assert "of 2 runs" in by["ema-never-hurts"].verdicts[0].detail
    sweep = tmp_path / "rep" / "sweep"  # one sweep, shared by the three studies
    assert (sweep / "results.csv").is_file()
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == [
        "Hopper-v5__base__s1",
        "Hopper-v5__lr-cosine__s1",
    ]
    text = path.read_text()
    assert "INCONCLUSIVE" in text and "The EMA never hurts" in text
