"""The ``lm`` study (R5 over seeds): each verdict is its registry rule on per-seed numbers, can fail
(a control built to contradict does) and can pass (a control built to support does); the quick
budget end to end is slow."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from gvatheory.inference import mean_interval, paired_interval, smallest_effect
from validation.registry import rules_of
from validation.studies.lm import SeedMeasures, decide, edge_distance, power_table, seeds_needed

KEYS = [r.key for r in rules_of("lm")]
JITTER = np.array([-0.01, 0.0, 0.01])  # seed-to-seed spread of the synthetic numbers


def supporting(**changes) -> SeedMeasures:
    """Three seeds of a run that shows every claim: many raw changes, a still loss, an EMA and a
    decay with few changes, an EMA loss below the decayed one and an EMA that agrees more."""
    base = dict(
        changed_raw=0.45 + JITTER,
        changed_ema=0.06 + JITTER / 2,
        changed_decay=0.04 + JITTER / 2,
        fluctuation=2e-3 + JITTER / 10,
        decrease=np.array([2.0, 2.1, 1.9]),
        loss_ema=0.70 + JITTER / 10,
        loss_decay=0.72 + JITTER / 5,
        task_raw=0.80 + JITTER,
        task_ema=0.85 + JITTER * 1.2,
    )
    return SeedMeasures(**{**base, **changes})


def outcomes(m: SeedMeasures) -> dict[str, str]:
    return {v.rule: v.outcome for v in decide(m)}


def test_every_lm_rule_is_decided_once_in_registry_order():
    assert [v.rule for v in decide(supporting())] == KEYS and len(KEYS) == 6


def test_positive_control_supports_every_verdict():
    assert outcomes(supporting()) == dict.fromkeys(KEYS, "supports")


NOTHING = np.array([0.0, 0.01, 0.0])


@pytest.mark.parametrize(
    "key, changes, also",
    [
        # no continuation changes, raw or averaged: then there is also nothing for EMA or decay to remove
        (
            "lm/continuations-change",
            dict(changed_raw=NOTHING, changed_ema=NOTHING, changed_decay=NOTHING),
            {"lm/ema-fewer-changes", "lm/decay-fewer-changes"},
        ),
        ("lm/loss-barely-moves", dict(fluctuation=np.array([0.10, 0.11, 0.09])), set()),  # 5% of its decrease
        ("lm/ema-fewer-changes", dict(changed_ema=0.45 + JITTER + np.array([0.002, -0.001, 0.0])), set()),  # as raw
        ("lm/decay-fewer-changes", dict(changed_decay=0.45 + JITTER + np.array([0.0, 0.002, -0.002])), set()),
        ("lm/ema-loss-no-higher", dict(loss_ema=0.72 + JITTER / 5 + 0.05), set()),  # 0.05 nats above decay
        ("lm/ema-agrees-with-teacher", dict(task_ema=0.80 + JITTER - 0.05), set()),  # 0.05 less agreement
    ],
)
def test_negative_control_contradicts_its_verdict(key, changes, also):
    got = outcomes(supporting(**changes))
    assert {k for k, o in got.items() if o == "contradicts"} == {key} | also, got
    # the rest of that synthetic run still shows its claims: a control moves only what it is about
    assert all(o == "supports" for k, o in got.items() if k not in {key} | also), got


def test_intervals_are_the_inference_modules_over_seeds():
    m = supporting()
    v = {x.rule: x for x in decide(m)}
    assert v["lm/continuations-change"].intervals[0] == mean_interval(m.changed_raw).to_dict()
    assert v["lm/loss-barely-moves"].intervals[0] == mean_interval(m.fluctuation / m.decrease).to_dict()
    assert v["lm/ema-fewer-changes"].intervals[0] == paired_interval(m.changed_ema, m.changed_raw).to_dict()
    assert v["lm/decay-fewer-changes"].intervals[0] == paired_interval(m.changed_decay, m.changed_raw).to_dict()
    assert v["lm/ema-loss-no-higher"].intervals[0] == paired_interval(m.loss_ema, m.loss_decay).to_dict()
    assert v["lm/ema-agrees-with-teacher"].intervals[0] == paired_interval(m.task_ema, m.task_raw).to_dict()
    assert all(x.rule_text and "decides an effect of" in x.detail for x in v.values())


def test_too_few_seeds_or_a_straddling_interval_is_inconclusive():
    one = SeedMeasures(**{k: np.asarray(getattr(supporting(), k))[:2] for k in SeedMeasures.__dataclass_fields__})
    assert set(outcomes(one).values()) == {"inconclusive"}  # 2 seeds, rules need 3
    wide = supporting(task_ema=0.80 + np.array([-0.2, 0.0, 0.2]))  # EMA - raw spans the edge -0.01
    assert outcomes(wide)["lm/ema-agrees-with-teacher"] == "inconclusive"


def test_power_is_the_smallest_effect_of_the_seeds_spread():
    m = supporting(task_ema=0.80 + np.array([-0.2, 0.0, 0.2]))
    sd = float((m.task_ema - m.task_raw).std(ddof=1))
    table = power_table(m)
    assert f"{smallest_effect(sd, 3, power=0.8):.4g}" in table and "`lm/ema-agrees-with-teacher`" in table
    assert edge_distance(-0.02, rules_of("lm")[-1].region) == pytest.approx(0.01)
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    needs = [r[-1].strip() for r in rows]
    assert len(rows) == 6 and all(n == "> 1000" or int(n) >= 3 for n in needs)  # never below a rule's minimum
    n = seeds_needed(0.1, 0.05)
    assert smallest_effect(0.1, n, power=0.8) <= 0.05 < smallest_effect(0.1, n - 1, power=0.8)
    assert seeds_needed(float("nan"), 0.1) is None


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(changed_ema=np.array([0.1, 0.2])), "changed_ema has 2 seeds"),
        (dict(task_raw=np.array([0.5, 1.2, 0.5])), "task_raw=.*must be in \\[0, 1\\]"),
        (dict(decrease=np.array([1.0, 0.0, 1.0])), "decrease=.*must be positive"),
        (dict(loss_ema=np.array([0.7, np.nan, 0.7])), "loss_ema holds non-finite"),
    ],
)
def test_bad_per_seed_numbers_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        supporting(**changes)


@pytest.mark.slow
def test_quick_study_verdicts(tmp_path):
    from validation.studies.lm import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert [v.rule for v in section.verdicts] == KEYS
    assert all(p.stat().st_size > 0 for p in section.figures)
    assert "± " in section.body and "smallest decidable effect" in section.body
