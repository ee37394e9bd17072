"""The registry of verdict rules: complete declarations, decisions by rule, and the generated table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from gvatheory.inference import Interval
from validation.registry import RULES, rule
from validation.reproduce import VALIDATION_STUDIES
from validation.verdict_table import BEGIN, END, render

ROOT = Path(__file__).resolve().parent.parent


def test_every_rule_is_declared_in_full_for_a_known_study():
    for key, r in RULES.items():
        assert key == r.key and r.study in VALIDATION_STUDIES, key
        for field in ("claim", "prediction", "measure", "unit", "method", "fixed"):
            assert getattr(r, field).strip(), f"{key}: empty {field}"
        assert r.min_n >= 2 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.fixed), key


def test_every_study_decides_only_registered_rules():
    """Each rule key a study names (``rule("...")``) is in the registry, and each study with rules
    names at least one of them: no verdict is built outside the registry."""
    named = set()
    for path in (ROOT / "validation" / "studies").glob("*.py"):
        named |= set(re.findall(r"""rule\(\s*f?["']([\w\-/{}]+)["']""", path.read_text()))
    plain = {k for k in named if "{" not in k}
    assert plain <= set(RULES), plain - set(RULES)


def test_a_rule_decides_three_ways_and_says_why():
    r = rule("algorithmic/averaging")  # region [0, 0.8]
    assert r.decide(Interval(0.3, 0.2, 0.5, n=3)).outcome == "supports"
    assert r.decide(Interval(1.0, 0.9, 1.2, n=3)).outcome == "contradicts"
    assert r.decide(Interval(0.7, 0.5, 1.1, n=3)).outcome == "inconclusive"
    assert r.decide(Interval(0.3, 0.2, 0.5, n=2)).outcome == "inconclusive"  # min_n 3
    gated = r.decide(Interval(0.3, 0.2, 0.5, n=3), gate="the loss still drifts")
    assert gated.outcome == "inconclusive" and "not decided: the loss still drifts" in gated.detail
    v = r.decide(Interval(0.3, 0.2, 0.5, n=3), "raw 0.1")
    assert v.rule == r.key and v.rule_text == r.describe() and "0.3 [0.2, 0.5] (n=3); raw 0.1" == v.detail
    assert v.to_json()["intervals"][0]["n"] == 3


def test_several_intervals_must_agree_and_outside_rules_reverse():
    r = rule("reward-law/delta-long-breaks")  # supports when wholly outside [1/2, 2]
    assert r.outside and r.amendments
    assert r.decide([Interval(3, 2.5, 4, n=5), Interval(5, 3, 9, n=5)]).outcome == "supports"
    assert r.decide([Interval(1, 0.8, 1.2, n=5)] * 2).outcome == "contradicts"
    assert r.decide([Interval(3, 2.5, 4, n=5), Interval(1, 0.8, 1.2, n=5)]).outcome == "inconclusive"
    assert "Amended after an outcome seen 2026-12-01" in r.describe()


def test_an_undeclared_rule_is_refused():
    with pytest.raises(ValueError, match="declare it before measuring"):
        rule("landscape/something-new")


def test_pages_print_the_rule_beside_the_number(tmp_path):
    import json

    from validation.report import Section, write_pages

    v = rule("lm/ema-loss-no-higher").decide(Interval(-0.01, -0.02, 0.001, n=3))
    write_pages([Section("lm", "LM", "body", [v])], tmp_path)
    page = (tmp_path / "lm.md").read_text()
    assert "`lm/ema-loss-no-higher`" in page and rule("lm/ema-loss-no-higher").measure in page
    record = json.loads((tmp_path / "lm.json").read_text())["verdicts"][0]
    assert record["outcome"] == "supports" and math.isclose(record["intervals"][0]["high"], 0.001)


def test_full_budget_pages_get_their_own_table(tmp_path):
    from validation.report import Section, write_pages

    quick = rule("lm/ema-loss-no-higher").decide(Interval(0.02, 0.01, 0.03, n=3))
    full = rule("lm/ema-loss-no-higher").decide(Interval(-0.01, -0.02, 0.001, n=8))
    write_pages([Section("lm", "LM", "body", [quick])], tmp_path)
    assert "At the full budget" not in render(tmp_path)
    write_pages([Section("lm", "LM", "body", [full])], tmp_path / "full")
    table = render(tmp_path)
    assert "| `lm/ema-loss-no-higher` | [supports](results/full/lm.md) | -0.01 [-0.02, 0.001], n=8 |" in table
    assert "[contradicts](results/lm.md)" in table  # the quick row keeps its own outcome


def test_the_verdict_table_in_the_docs_is_current():
    text = (ROOT / "docs" / "validation.md").read_text()
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == render(ROOT / "docs" / "results").strip(), "run: python -m validation.verdict_table"


def test_every_results_page_prints_each_rule_as_the_registry_states_it():
    import json

    results = ROOT / "docs" / "results"
    for js in sorted([*results.glob("*.json"), *(results / "full").glob("*.json")]):
        page = js.with_suffix(".md").read_text()
        for v in json.loads(js.read_text())["verdicts"]:
            if v.get("rule"):
                text = RULES[v["rule"]].describe()
                assert v.get("rule_text") == text, f"{js.name}: {v['rule']} (run python -m validation.verdict_table)"
                assert text.replace("][", "]\\[") in page, f"{js.name}: {v['rule']} not printed on the page"
