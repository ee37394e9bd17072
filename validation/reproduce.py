"""``gva reproduce`` and ``gva validate``: run studies and write one report under ``runs/``.

Studies are registered by name in :data:`SECTIONS` (run by default) or :data:`OPT_IN_SECTIONS` (run
only when ``--only`` names them) and imported only when selected, so a theory-only install can run
the theory sections. :data:`VALIDATION_STUDIES` are the ones that hold a prediction of the theory
against real runs (``gva validate``). Each study module exposes
``run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section``.
"""

from __future__ import annotations

import importlib
import time
from datetime import datetime, timezone
from pathlib import Path

from gvaempirics.rundir import atomic_write_json

from .report import Section, write_report

# name -> module in validation.studies, in report order.
SECTIONS: dict[str, str] = {
    "averaging": "validation.studies.averaging",
    "cliff": "validation.studies.cliff",
    "prop31": "validation.studies.prop31",
    "linear-gva": "validation.studies.linear_gva",
    "bc": "validation.studies.bc",
    "lm": "validation.studies.lm",
    "noise-floor": "validation.studies.noise_floor",
    "local-model": "validation.studies.local_model",
    "reward-law": "validation.studies.reward_law",
}
# Opt-in studies: run only when named in ``--only``, after the default ones, because each trains
# runs of its own. The first three share one sweep of 21 behavior-cloning runs; ema-calms has its
# own of 20 quick runs with post-hoc EMA and flip curves.
OPT_IN_SECTIONS: dict[str, str] = {
    "algorithmic": "validation.studies.algorithmic",
    "landscape": "validation.studies.landscape",
    "ema-never-hurts": "validation.studies.ema_never_hurts",
    "ema-calms": "validation.studies.ema_calms",
}
ALL_SECTIONS: dict[str, str] = {**SECTIONS, **OPT_IN_SECTIONS}
# The studies that check a prediction of the theory against MuJoCo and LM runs, numbered as in
# the docs' results pages: `gva validate STUDY|all`.
VALIDATION_STUDIES: tuple[str, ...] = (
    "noise-floor",
    "local-model",
    "reward-law",
    "algorithmic",
    "landscape",
    "ema-never-hurts",
    "lm",
    "ema-calms",
)


def select_sections(only: list[str] | None, skip: list[str] | None) -> list[str]:
    """Resolve ``--only`` / ``--skip`` into an ordered list of section names: without ``--only``
    the default :data:`SECTIONS`; an opt-in section runs only when ``--only`` names it."""
    for flag, names in (("--only", only), ("--skip", skip)):
        unknown = sorted(set(names or ()) - set(ALL_SECTIONS))
        if unknown:
            raise ValueError(
                f"{flag} got unknown section(s) {', '.join(unknown)}: choose from {', '.join(ALL_SECTIONS)}"
            )
    pool = ALL_SECTIONS if only else SECTIONS
    chosen = [s for s in pool if (not only or s in only) and s not in (skip or ())]
    if not chosen:
        raise ValueError("--only/--skip leave no section to run")
    return chosen


def reproduce(
    outdir: Path,
    *,
    quick: bool,
    seed: int = 0,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    quiet: bool = False,
    command: str = "",
    title: str = "reproduction report",
) -> tuple[Path, list[Section]]:
    """Run the selected studies into ``outdir`` and write the report; return its path and sections.
    ``command`` (default: the ``gva reproduce`` one) and ``title`` head the report."""
    command = command or f"gva reproduce{' --quick' if quick else ''}"
    names = select_sections(only, skip)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    config = {
        "quick": quick,
        "seed": seed,
        "sections": names,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(outdir / "config.json", config)
    sections = []
    for name in names:
        if not quiet:
            print(f"[gva reproduce] {name} ...", flush=True)
        module = importlib.import_module(ALL_SECTIONS[name])
        start = time.perf_counter()
        section = module.run(outdir / name, quick=quick, seed=seed, quiet=quiet)
        section.seconds = time.perf_counter() - start
        section.command = section.command or f"gva reproduce {'--quick ' if quick else ''}--only {name}"
        sections.append(section)
        if not quiet:
            print(
                f"[gva reproduce] {name}: {section.tally()} verdicts pass ({section.seconds:.1f} s)",
                flush=True,
            )
    mode = "quick" if quick else "full"
    path = write_report(
        sections,
        outdir,
        title=f"GVA toolkit: {title} ({mode})",
        preamble=f"Made by `{command}` with seed {seed}.",
    )
    return path, sections
