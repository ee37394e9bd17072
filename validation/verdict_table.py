"""The verdict table of ``docs/validation.md``, generated from the registry and the committed results.

Every rule of :mod:`validation.registry` gets one row: its outcome and interval as the committed
results pages (``docs/results/<study>.json``, written by ``--pages``) recorded them, or "not run"
where no page holds it yet. A second table lists the rules decided at the full budget
(``docs/results/full/<study>.json``, from ``gva validate STUDY --budget full --pages
docs/results/full``). Nothing in the tables is typed by hand:

    python -m validation.verdict_table            # rewrite the table in docs/validation.md and the
                                                  # rule texts of the pages in docs/results
    python -m validation.verdict_table --check    # exit 1 if the doc's table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .registry import RULES

FULL = "full"  # the full budget's pages: this folder inside the pages folder
BEGIN, END = (
    "<!-- verdict-table:begin (generated: python -m validation.verdict_table) -->",
    "<!-- verdict-table:end -->",
)


def recorded(pages: Path) -> dict[str, dict]:
    """Rule key -> the verdict record of the committed results pages in ``pages``."""
    out = {}
    for path in sorted(Path(pages).glob("*.json")):
        for v in json.loads(path.read_text()).get("verdicts", []):
            if v.get("rule"):
                out[v["rule"]] = {**v, "page": path.with_suffix(".md").name}
    return out


def _interval(v: dict) -> str:
    def f(x) -> str:
        return f"{x:.3g}" if isinstance(x, (int, float)) and x == x and abs(x) != float("inf") else "n/a"

    def level(i: dict) -> str:  # 95% unless the rule corrects for a family (say, Bonferroni over widths)
        lv = i.get("level", 0.95)
        return "" if abs(lv - 0.95) < 1e-9 else f", {100 * lv:.3g}%"

    return "; ".join(
        f"{f(i['estimate'])} [{f(i['low'])}, {f(i['high'])}], n={i['n']}{level(i)}" for i in v["intervals"]
    )


def render(pages: Path, *, link_prefix: str = "results/") -> str:
    """The Markdown table: one row per registered rule, in registry order."""
    seen = recorded(pages)
    lines = [
        "| rule | claim | supports if the interval lies in | outcome | estimate [interval, 95% unless stated], units |",
        "| --- | --- | --- | --- | --- |",
    ]
    counts = {"supports": 0, "contradicts": 0, "inconclusive": 0, "not run": 0}
    for key, r in RULES.items():
        v = seen.get(key)
        region = ("outside " if r.outside else "") + r.region.describe()
        if v is None:
            counts["not run"] += 1
            lines.append(f"| `{key}` | {r.claim} | {region} | not run | - |")
            continue
        counts[v["outcome"]] += 1
        link = f"[{v['outcome']}]({link_prefix}{v['page']})"
        lines.append(f"| `{key}` | {r.claim} | {region} | {link} | {_interval(v)} |")
    tally = ", ".join(f"{n} {k}" for k, n in counts.items())
    amended = [
        f"- `{key}`, {a.date}: was {a.was}, which gave {a.outcome}; {a.reason}."
        for key, r in RULES.items()
        for a in r.amendments
    ]
    notes = ["", "Amendments (rules that replaced one whose outcome had been seen):", "", *amended] if amended else []
    return "\n".join([f"{len(RULES)} registered rules: {tally}.", "", *lines, *_full_table(pages, link_prefix), *notes])


def _full_table(pages: Path, link_prefix: str) -> list[str]:
    full = recorded(Path(pages) / FULL)
    if not full:
        return []
    lines = [
        "",
        f"At the full budget ({len(full)} rules decided so far; pages in `{link_prefix}{FULL}/`):",
        "",
        "| rule | outcome at the full budget | estimate [95% interval], units |",
        "| --- | --- | --- |",
    ]
    for key in RULES:
        if key in full:
            v = full[key]
            lines.append(f"| `{key}` | [{v['outcome']}]({link_prefix}{FULL}/{v['page']}) | {_interval(v)} |")
    return lines


_RULE_CELL = re.compile(r"\| `(?P<key>[\w\-/]+)`: .* \|$")


def refresh_rules(pages: Path) -> list[Path]:
    """Print each verdict's rule as the registry states it now (amendments and all) in the results
    pages of ``pages`` and their JSON records; the numbers are left as measured. Returns the files
    that changed."""
    changed = []
    for md in sorted([*Path(pages).glob("*.md"), *(Path(pages) / FULL).glob("*.md")]):
        lines = md.read_text().split("\n")
        new = [
            _RULE_CELL.sub(lambda m: f"| `{m['key']}`: " + RULES[m["key"]].describe().replace("][", "]\\[") + " |", ln)
            if _RULE_CELL.search(ln) and _RULE_CELL.search(ln)["key"] in RULES
            else ln
            for ln in lines
        ]
        if new != lines:
            md.write_text("\n".join(new))
            changed.append(md)
        js = md.with_suffix(".json")
        if js.is_file():
            record = json.loads(js.read_text())
            for v in record.get("verdicts", []):
                if v.get("rule") in RULES:
                    v["rule_text"] = RULES[v["rule"]].describe()
            text = json.dumps(record, indent=2)
            if text != js.read_text():
                js.write_text(text)
                changed.append(js)
    return changed


def update(doc: Path, pages: Path) -> bool:
    """Rewrite the table between the markers of ``doc``; True if the text changed."""
    text = Path(doc).read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no verdict-table markers: add {BEGIN!r} and {END!r} where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render(pages)}\n{END}{tail}"
    if new != text:
        Path(doc).write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m validation.verdict_table", description=__doc__.splitlines()[0])
    p.add_argument("--pages", default="docs/results", help="the committed results pages (default docs/results)")
    p.add_argument("--doc", default="docs/validation.md", help="the page that holds the table")
    p.add_argument("--check", action="store_true", help="exit 1 if the table is stale; change nothing")
    args = p.parse_args(argv)
    try:
        if args.check:
            text = Path(args.doc).read_text()
            stale = f"{BEGIN}\n{render(Path(args.pages))}\n{END}" not in text
            print(f"{args.doc}: verdict table {'stale' if stale else 'up to date'}")
            return int(stale)
        changed = update(Path(args.doc), Path(args.pages))
        pages = refresh_rules(Path(args.pages))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.doc}: verdict table {'rewritten' if changed else 'unchanged'}; rules refreshed in {len(pages)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
