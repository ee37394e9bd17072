"""The pieces of a report: verdicts, sections, and the Markdown writer.

A *study* (one module in ``validation.studies``) states a prediction of the theory, measures the
same quantity, and returns a :class:`Section` holding its verdicts, a Markdown body and the
figures it saved. :func:`write_report` assembles sections into ``report.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gvaempirics.rundir import atomic_write, atomic_write_bytes, check_creatable

OUTCOMES = ("supports", "contradicts", "inconclusive")
# How each outcome shows in the report tables (PASS / FAIL: the labels of the boolean verdicts).
OUTCOME_LABELS = {"supports": "PASS", "contradicts": "FAIL", "inconclusive": "INCONCLUSIVE"}


@dataclass(frozen=True)
class Verdict:
    """One checked claim: what was predicted, what the measurement says, and the numbers.

    ``outcome`` is ``"supports"``, ``"contradicts"`` or ``"inconclusive"`` (the data cannot decide,
    e.g. too few seeds: a result, not a failure). A boolean study gives ``passed`` alone and the
    outcome follows from it (supports / contradicts); a three-way study builds its verdicts with
    :meth:`of`. ``passed`` is always ``outcome == "supports"``.
    """

    claim: str
    passed: bool
    detail: str
    outcome: str = ""
    rule: str = ""  # the key of its rule in validation.registry
    rule_text: str = ""  # that rule in words, printed beside the number
    intervals: tuple[dict, ...] = ()  # the intervals it was decided on (Interval.to_dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(self.passed))  # a numpy bool would not serialize
        if not self.outcome:
            object.__setattr__(self, "outcome", "supports" if self.passed else "contradicts")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome={self.outcome!r} is not valid: choose one of {', '.join(OUTCOMES)}")
        if bool(self.passed) != (self.outcome == "supports"):
            raise ValueError(f"passed={self.passed!r} does not fit outcome={self.outcome!r}")

    @classmethod
    def of(cls, claim: str, outcome: str, detail: str, *, rule: str = "", rule_text: str = "", intervals=()) -> Verdict:
        """A verdict with one of the three outcomes (``rule``: its registry key and text)."""
        return cls(claim, outcome == "supports", detail, outcome, rule, rule_text, tuple(intervals))

    @property
    def contradicts(self) -> bool:
        return self.outcome == "contradicts"

    @property
    def label(self) -> str:
        return OUTCOME_LABELS[self.outcome]

    def to_json(self) -> dict:
        """``claim``, ``passed``, ``detail``; plus ``outcome`` where ``passed`` does not imply it
        (an inconclusive verdict), so the boolean studies' records stay as they were."""
        d = {"claim": self.claim, "passed": self.passed, "detail": self.detail}
        if self.outcome == "inconclusive":
            d["outcome"] = self.outcome
        if self.rule:
            d.update(rule=self.rule, rule_text=self.rule_text, outcome=self.outcome, intervals=list(self.intervals))
        return d


@dataclass
class Section:
    """A report section produced by one study."""

    key: str
    title: str
    body: str
    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    command: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Every verdict supports its claim."""
        return all(v.passed for v in self.verdicts)

    @property
    def contradicted(self) -> bool:
        """Some verdict contradicts its claim (what makes ``gva reproduce`` exit 1)."""
        return any(v.contradicts for v in self.verdicts)

    def tally(self) -> str:
        """``supported/total``, with the inconclusive ones counted where there are any."""
        ok = sum(v.passed for v in self.verdicts)
        unsure = sum(v.outcome == "inconclusive" for v in self.verdicts)
        return f"{ok}/{len(self.verdicts)}" + (f" ({unsure} inconclusive)" if unsure else "")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of ``rows`` (dicts sharing keys); floats with 4 significant digits."""
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _section_lines(s: Section, root: Path, *, level: str) -> list[str]:
    """A section in Markdown: heading, command, body, verdict table, figures (relative to ``root``)."""
    lines = [f"{level} {s.title}", ""]
    if s.command:
        lines += ["Reproduce this section alone:", "", f"    {s.command}", ""]
    lines += [s.body.strip(), ""]
    if s.verdicts:
        if any(v.rule for v in s.verdicts):
            lines += ["| claim | verdict | numbers | rule |", "| --- | --- | --- | --- |"]
            lines += [f"| {v.claim} | {v.label} | {v.detail} | `{v.rule}`: {v.rule_text} |" for v in s.verdicts]
        else:
            lines += ["| claim | verdict | numbers |", "| --- | --- | --- |"]
            lines += [f"| {v.claim} | {v.label} | {v.detail} |" for v in s.verdicts]
        lines.append("")
    for fig in s.figures:
        lines += [f"![{Path(fig).stem}]({_relative(fig, root)})", ""]
    return lines


def write_pages(sections: list[Section], pages: Path, *, preamble: str = "") -> list[Path]:
    """One standalone Markdown page per section, ``pages/<key>.md``, with its figures copied to
    ``pages/figures/<key>/``: the documentation's results pages, generated from a report."""
    pages = check_creatable(Path(pages), "pages", folder=True)
    written = []
    for s in sections:
        copies = []
        for fig in s.figures:
            dest = pages / "figures" / s.key / Path(fig).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, Path(fig).read_bytes())
            copies.append(dest)
        page = Section(s.key, s.title, s.body, s.verdicts, copies, s.command, s.seconds)
        # "x][0]" would read as a Markdown reference link on a documentation site
        lines = [line.replace("][", "]\\[") for line in _section_lines(page, pages, level="#")]
        if preamble:
            lines[1:1] = ["", preamble]
        path = pages / f"{s.key}.md"
        atomic_write_bytes(path, "\n".join(lines).encode())
        # the page's verdicts as data: docs/validation.md's table and the docs' numbers test read them
        record = {"title": s.title, "command": s.command, "verdicts": [v.to_json() for v in s.verdicts]}
        atomic_write_bytes(pages / f"{s.key}.json", json.dumps(record, indent=2).encode())
        written.append(path)
    return written


def write_report(sections: list[Section], outdir: Path, *, title: str, preamble: str = "") -> Path:
    """Write ``outdir/report.md`` and ``outdir/verdicts.json``; return the Markdown path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += ["| section | verdicts passed | time (s) |", "| --- | --- | --- |"]
    for s in sections:
        lines.append(f"| [{s.title}](#{s.key}) | {s.tally()} | {s.seconds:.1f} |")
    lines += ["", "Every prediction, its measurement and the verdict:", ""]
    lines += ["| study | prediction | measurement | verdict |", "| --- | --- | --- | --- |"]
    for s in sections:
        for v in s.verdicts:
            lines.append(f"| [{s.key}](#{s.key}) | {v.claim} | {v.detail} | {v.outcome} |")
    lines.append("")
    for s in sections:
        lines += [f'<a id="{s.key}"></a>', *_section_lines(s, outdir, level="##")]
    path = outdir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    atomic_write_bytes(
        outdir / "verdicts.json",
        json.dumps(
            {
                s.key: {"title": s.title, "seconds": s.seconds, "verdicts": [v.to_json() for v in s.verdicts]}
                for s in sections
            },
            indent=2,
        ).encode(),
    )
    return path


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure (format from the suffix), creating parent folders, and close it."""
    import matplotlib.pyplot as plt

    path = check_creatable(path, "figure")
    try:
        fmt = path.suffix.lstrip(".").lower() or "png"
        atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=130, bbox_inches="tight"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot save figure {path}: {str(err).splitlines()[0]}") from None
    finally:
        plt.close(fig)
    return path
