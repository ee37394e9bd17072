"""The pieces of a report: verdicts, sections, and the Markdown writer.

A *study* (one module in ``validation.studies``) states a prediction of the theory, measures the
same quantity, and returns a :class:`Section` holding its verdicts, a Markdown body and the
figures it saved. :func:`write_report` assembles sections into ``report.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gvaempirics.rundir import atomic_write, atomic_write_bytes, check_creatable


@dataclass(frozen=True)
class Verdict:
    """One checked claim: what was predicted, whether the measurement agrees, and the numbers."""

    claim: str
    passed: bool
    detail: str


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
        return all(v.passed for v in self.verdicts)


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


def write_report(sections: list[Section], outdir: Path, *, title: str, preamble: str = "") -> Path:
    """Write ``outdir/report.md`` and ``outdir/verdicts.json``; return the Markdown path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += ["| section | verdicts passed | time (s) |", "| --- | --- | --- |"]
    for s in sections:
        ok = sum(v.passed for v in s.verdicts)
        lines.append(f"| [{s.title}](#{s.key}) | {ok}/{len(s.verdicts)} | {s.seconds:.1f} |")
    lines.append("")
    for s in sections:
        lines += [f'<a id="{s.key}"></a>', f"## {s.title}", ""]
        if s.command:
            lines += ["Reproduce this section alone:", "", f"    {s.command}", ""]
        lines += [s.body.strip(), ""]
        if s.verdicts:
            lines += ["| claim | verdict | numbers |", "| --- | --- | --- |"]
            for v in s.verdicts:
                lines.append(f"| {v.claim} | {'PASS' if v.passed else 'FAIL'} | {v.detail} |")
            lines.append("")
        for fig in s.figures:
            lines += [f"![{Path(fig).stem}]({_relative(fig, outdir)})", ""]
    path = outdir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    atomic_write_bytes(
        outdir / "verdicts.json",
        json.dumps(
            {
                s.key: {"title": s.title, "seconds": s.seconds, "verdicts": [asdict(v) for v in s.verdicts]}
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
