import json

import pytest

from validation.report import Section, Verdict, write_pages, write_report
from validation.reproduce import SECTIONS, select_sections


def test_write_report_lists_sections_verdicts_and_figures(tmp_path):
    fig = tmp_path / "a" / "fig.png"
    fig.parent.mkdir()
    fig.write_bytes(b"png")
    s = Section(
        "a",
        "Section A",
        "body text",
        [Verdict("claim 1", True, "z=0.1"), Verdict("claim 2", False, "z=9")],
        [fig],
        command="gva reproduce --only a",
        seconds=1.5,
    )
    path = write_report([s], tmp_path, title="T", preamble="pre")
    text = path.read_text()
    assert "| [Section A](#a) | 1/2 | 1.5 |" in text
    assert "| claim 2 | FAIL | z=9 |" in text
    assert "| [a](#a) | claim 2 | z=9 | contradicts |" in text  # the summary table: prediction, measurement, verdict
    assert "![fig](a/fig.png)" in text and "gva reproduce --only a" in text
    assert not s.passed
    saved = json.loads((tmp_path / "verdicts.json").read_text())
    assert saved["a"]["verdicts"][0] == {"claim": "claim 1", "passed": True, "detail": "z=0.1"}


def test_select_sections_keeps_report_order():
    names = list(SECTIONS)
    assert select_sections(None, None) == names
    assert select_sections([names[-1], names[0]], None) == [names[0], names[-1]]
    assert select_sections(None, [names[0]]) == names[1:]
    with pytest.raises(ValueError, match="leave no section"):
        select_sections([names[0]], [names[0]])


def test_write_pages_one_standalone_page_per_section_with_its_figures(tmp_path):
    fig = tmp_path / "run" / "a" / "fig.png"
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"png")
    sections = [
        Section("a", "Section A", "body A", [Verdict.of("claim", "inconclusive", "n=3")], [fig], "gva validate a"),
        Section("b", "Section B", "body B", [Verdict("claim b", True, "z=1")]),
    ]
    pages = write_pages(sections, tmp_path / "pages", preamble="made by a test")
    assert [p.name for p in pages] == ["a.md", "b.md"]
    text = pages[0].read_text()
    assert text.startswith("# Section A\n\nmade by a test") and "| claim | INCONCLUSIVE | n=3 |" in text
    assert "![fig](figures/a/fig.png)" in text and "gva validate a" in text
    assert (tmp_path / "pages" / "figures" / "a" / "fig.png").read_bytes() == b"png"
