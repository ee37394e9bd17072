"""Numbers the docs quote come from committed results: a number typed into a page that no result
holds fails here. Durations (minutes, seconds) are measured by the command beside them and are
not in the results pages, so they are exempt."""

from __future__ import annotations

import re
from pathlib import Path

from validation.verdict_table import BEGIN, END

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# references (arXiv 2310.11428, Prop. 3.1, Sec. 4.3, Eq. 4.2) are not results
NUMBER = re.compile(
    r"(?<!/)(?<!arXiv )(?<!Prop\. )(?<!Sec\. )(?<!Eq\. )(?<![\w.])-?\d+\.\d+(?![\w.])(?!\s*(?:CPU-)?(?:minutes|min|s\b|seconds))"
)


def numbers(text: str) -> set[str]:
    return {n.lstrip("-") for n in NUMBER.findall(text)}


def results_text() -> str:
    pages = DOCS / "results"
    return "".join(p.read_text() for p in sorted(pages.rglob("*.md")) + sorted(pages.rglob("*.json")))


def test_sweeps_results_quote_only_committed_results():
    section = (DOCS / "sweeps.md").read_text().split("## Results", 1)[1]
    held = results_text()
    missing = sorted(n for n in numbers(section) if n not in held)
    assert not missing, f"docs/sweeps.md quotes numbers no committed results page holds: {missing}"


def test_validation_page_quotes_only_the_generated_table_and_the_measured_coverage():
    text = (DOCS / "validation.md").read_text()
    prose = text.split(BEGIN, 1)[0] + text.split(END, 1)[1]
    measured = (ROOT / "gvatheory" / "inference.py").read_text()  # the coverage figures, re-run by tests
    missing = sorted(n for n in numbers(prose) if n not in measured)
    assert not missing, f"docs/validation.md quotes numbers that are neither in its table nor measured: {missing}"


def test_headlines_quote_the_per_environment_measurements():
    held = (DOCS / "bc.md").read_text() + results_text()
    for page in ("README.md", "docs/index.md"):
        head = (ROOT / page).read_text().split("## The two commands", 1)[0]
        missing = sorted(n for n in numbers(head) if n not in held)
        assert not missing, f"{page}'s headline quotes numbers neither docs/bc.md nor a results page holds: {missing}"
