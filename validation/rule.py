"""A pre-registered verdict rule (:class:`Rule`) and the record of a change to one
(:class:`Amendment`); the rules themselves are declared in :mod:`validation.registry`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gvatheory.inference import Interval, Region, decide

from .report import Verdict

FIXED = "2026-12-03"  # the registry's first version; a rule's `seen` says what data it was written after


@dataclass(frozen=True)
class Amendment:
    """A rule that was changed after its data were seen: the old rule, what it gave, and why."""

    date: str  # when the old rule's outcome was seen
    was: str
    outcome: str
    reason: str


@dataclass(frozen=True)
class Rule:
    """One pre-registered verdict rule (see the module docstring)."""

    key: str
    claim: str
    prediction: str
    measure: str
    unit: str
    method: str
    region: Region
    min_n: int = 3
    outside: bool = False  # the claim is that the quantity lies outside the region
    gate: str = ""  # when the measurement cannot decide (the verdict is then inconclusive)
    seen: str = ""  # data already seen when the rule was written, if any
    any_of: str = ""  # a family of intervals (say, widths) of which one must support; see `decide`
    fixed: str = FIXED
    amendments: tuple[Amendment, ...] = ()

    @property
    def study(self) -> str:
        return self.key.split("/")[0]

    def describe(self) -> str:
        """The rule in one line, as printed beside the number, with its amendments."""
        inside, outside = ("wholly outside", "inside") if self.outside else ("inside", "wholly outside")
        text = (
            f"{self.measure}; interval: {self.method}, unit: {self.unit} (at least {self.min_n}); supports if the "
            f"{'' if self.any_of else '95% '}interval lies {inside} {self.region.describe()}, contradicts if {outside}, else inconclusive "
            f"(fixed {self.fixed}; prediction: {self.prediction})"
        )
        if self.any_of:
            text += (
                f". Family: one interval per {self.any_of}; supports if any one supports, contradicts if every one "
                "contradicts"
            )
        if self.gate:
            text += f". Gate: inconclusive when {self.gate}"
        if self.seen:
            text += f". Written after seeing: {self.seen}"
        for a in self.amendments:
            text += f". Amended after an outcome seen {a.date}: was {a.was}, which gave {a.outcome}; {a.reason}"
        return text

    def outcome(self, interval: Interval) -> str:
        """The outcome of this rule on one interval."""
        out = decide(interval, self.region, min_n=self.min_n)
        return {"supports": "contradicts", "contradicts": "supports"}.get(out, out) if self.outside else out

    def decide(self, interval: Interval | Sequence[Interval], detail: str = "", *, gate: str = "") -> Verdict:
        """The verdict of this rule on ``interval``, or on several intervals of one quantity (say, at
        several finite-difference steps) that must all give the same outcome, else inconclusive. A
        non-empty ``gate`` (why the measurement cannot decide, e.g. not stationary) makes it
        inconclusive and is said in the detail. A rule with ``any_of`` reads its intervals as a family
        (one per member, each at the rule's corrected level): it supports if any member supports and
        contradicts only if every member contradicts."""
        intervals = [interval] if isinstance(interval, Interval) else list(interval)
        each = [self.outcome(i) for i in intervals]
        if self.any_of:
            ungated = (
                "supports"
                if "supports" in each
                else ("contradicts" if set(each) == {"contradicts"} else "inconclusive")
            )
        else:
            ungated = each[0] if len(set(each)) == 1 else "inconclusive"
        outcome = "inconclusive" if gate else ungated
        text = "; ".join(f"{i} (n={i.n})" for i in intervals)
        if detail:
            text += f"; {detail}"
        if gate:
            text += f"; not decided: {gate} (without the gate: {ungated})"
        return Verdict.of(
            self.claim,
            outcome,
            text,
            rule=self.key,
            rule_text=self.describe(),
            intervals=[i.to_dict() for i in intervals],
        )
