"""The sweep-based studies (algorithmic, landscape, ema-never-hurts) and the three-outcome report."""

import json
import math
import sys
import types

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


# ------------------------------------------------------------------ algorithmic: the row rules

BASE = [0.10, 0.12, 0.11]


def test_falls_supports_contradicts_inconclusive():
    assert algorithmic.row_verdict("falls", [0.02, 0.03, 0.025], BASE)[0] == "supports"
    assert algorithmic.row_verdict("falls", [0.2, 0.25, 0.22], BASE)[0] == "contradicts"
    outcome, nums = algorithmic.row_verdict("falls", [0.05, 0.13, 0.09], BASE)
    assert outcome == "inconclusive" and nums["ratio_lo"] < 1 < nums["ratio_hi"]


def test_stays_supports_contradicts_inconclusive():
    assert algorithmic.row_verdict("stays", [0.09, 0.13, 0.12], BASE)[0] == "supports"
    assert algorithmic.row_verdict("stays", [0.01, 0.02, 0.015], BASE)[0] == "contradicts"
    assert algorithmic.row_verdict("stays", [0.02, 0.12, 0.03], BASE)[0] == "inconclusive"


def test_row_rules_need_two_runs_a_side_and_a_known_expectation():
    outcome, nums = algorithmic.row_verdict("falls", [0.01], BASE)
    assert outcome == "inconclusive" and nums["ratio"] == pytest.approx(0.01 / 0.11)
    assert algorithmic.row_verdict("falls", [], BASE)[0] == "inconclusive"
    with pytest.raises(ValueError, match="expect"):
        algorithmic.row_verdict("rises", [0.1, 0.2], BASE)


def test_p_lower_threshold_decides_falls():
    # ratio interval below 1 but only 7/9 pairs in order: P = 0.78 < 0.8 -> inconclusive
    x, base = [0.05, 0.06, 0.115], [0.10, 0.12, 0.11]
    outcome, nums = algorithmic.row_verdict("falls", x, base)
    assert nums["p_lower"] == pytest.approx(7 / 9) and outcome == "inconclusive"


def test_analyse_synthetic_results_table():
    rows = [_row("base", s, o) for s, o in zip((1, 2, 3), BASE)]
    rows += [_row("lr-cosine", s, o) for s, o in zip((1, 2, 3), (0.02, 0.03, 0.025))]
    rows += [_row("width-512", s, o) for s, o in zip((1, 2, 3), (0.01, 0.02, 0.015))]
    rows += [_row("batch-256", 1, math.nan, status="failed")]
    grid = (("lr-cosine", "falls"), ("width-512", "stays"), ("batch-256", "falls"))
    table = algorithmic.analyse(rows, grid)
    by = {r["intervention"]: r for r in table}
    assert by["base"]["expect"] == "-" and by["base"]["osc"] == pytest.approx(0.11)
    assert by["lr-cosine"]["outcome"] == "supports"
    assert by["width-512"]["outcome"] == "contradicts"
    assert by["batch-256"]["outcome"] == "inconclusive" and by["batch-256"]["n"] == 0
    assert by[algorithmic.AVERAGING]["outcome"] == "supports"  # the EMA column is 10x calmer
    verdicts = algorithmic.verdicts_of(table)
    assert [v.outcome for v in verdicts] == ["supports", "contradicts", "inconclusive", "supports"]
    assert "P(osc < base)" in verdicts[0].detail


# ------------------------------------------------------------------ landscape and EMA rules


def test_landscape_ratio_verdict():
    assert landscape.ratio_verdict([3.0, 4.0, 5.0])[0] == "supports"
    assert landscape.ratio_verdict([0.5, 0.8, 0.9])[0] == "contradicts"
    assert landscape.ratio_verdict([0.7, 1.5, 1.2])[0] == "inconclusive"
    assert landscape.ratio_verdict([3.0])[0] == "inconclusive"
    assert landscape.ratio_verdict([])[0] == "inconclusive"


def test_ema_never_hurts_verdict_lists_exceptions():
    rows = [_row("base", s, 0.1, raw_ret=900, ema_ret=950) for s in (1, 2)]
    rows.append(_row("wd-1e-4", 1, 0.1, raw_ret=900, ema_ret=890))  # -0.01: within the tolerance
    assert ema_never_hurts.verdict(ema_never_hurts.paired(rows))[0] == "supports"
    rows.append(_row("batch-256", 3, 0.1, raw_ret=900, ema_ret=800))  # -0.1: an exception
    rows.append(_row("demos-100", 1, math.nan, status="failed"))  # not paired
    pairs = ema_never_hurts.paired(rows)
    outcome, exceptions, ci = ema_never_hurts.verdict(pairs)
    assert len(pairs) == 4 and outcome == "contradicts"
    assert [p["run"] for p in exceptions] == ["Hopper-v5__batch-256__s3"]
    assert exceptions[0]["diff"] == pytest.approx(-0.1) and ci.low <= ci.estimate <= ci.high
    assert ema_never_hurts.verdict([])[0] == "inconclusive"


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

    assert set(OPT_IN_SECTIONS) == {"algorithmic", "landscape", "ema-never-hurts"}
    assert not set(select_sections(None, None)) & set(OPT_IN_SECTIONS)
    assert select_sections(["ema-never-hurts", "algorithmic", "landscape"], None) == list(OPT_IN_SECTIONS)
    assert select_sections(["landscape", list(SECTIONS)[0]], None) == [list(SECTIONS)[0], "landscape"]


# ------------------------------------------------------------------ end to end, a 2-run sweep


def test_three_studies_end_to_end_on_a_tiny_sweep(tmp_path, monkeypatch):
    from gvaempirics.sweeps import SweepSpec
    from validation.reproduce import reproduce

    spec = SweepSpec(preset="tiny", base={"threads": 1}, interventions=((), ("lr-cosine",)), seeds=(1,))
    monkeypatch.setattr(algorithmic, "sweep_spec", lambda quick, seed: spec)
    monkeypatch.setattr(algorithmic, "sweep_grid", lambda quick: (("lr-cosine", "falls"),))
    monkeypatch.setattr(landscape, "grid_size", lambda quick: (3, 2))
    path, sections = reproduce(
        tmp_path / "rep", quick=True, only=["algorithmic", "landscape", "ema-never-hurts"], quiet=True
    )
    by = {s.key: s for s in sections}
    assert list(by) == ["algorithmic", "landscape", "ema-never-hurts"]
    # one seed a side: nothing to decide over seeds
    assert [v.outcome for v in by["algorithmic"].verdicts] == ["inconclusive", "inconclusive"]
    assert by["landscape"].verdicts[0].outcome in ("supports", "contradicts", "inconclusive")
    assert "over 2 runs" in by["landscape"].verdicts[0].detail
    assert "2 runs" in by["ema-never-hurts"].verdicts[0].detail
    sweep = tmp_path / "rep" / "sweep"  # one sweep, shared by the three studies
    assert (sweep / "results.csv").is_file()
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == [
        "Hopper-v5__base__s1",
        "Hopper-v5__lr-cosine__s1",
    ]
    text = path.read_text()
    assert "INCONCLUSIVE" in text and "The EMA never hurts" in text
