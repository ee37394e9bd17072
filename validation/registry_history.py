"""The history of the verdict rules of :mod:`validation.registry`: what data each study's rules
were written after (:func:`_seen`), and the verdicts of the studies before the registry, whose
outcomes had been seen, kept with each rule that replaced one (:data:`_REPLACED`)."""

from __future__ import annotations

from .rule import Amendment


def _seen(key: str) -> str:
    """What had been seen of a rule's data when it was written (see the module docstring)."""
    study = key.split("/")[0]
    if study == "lm":
        return (
            "the per-seed numbers of the same three seeds on the 2026-12-01 page (the runs are deterministic and "
            "the regenerated page repeats them), among them EMA token accuracy 0.694 against raw 0.805"
        )
    if key in ("local-model/raw-11-20", "local-model/ema-11-20"):
        return ""  # registered before the full budget's first run; the quick budget has no group 11-20
    if study in ("local-model", "reward-law"):
        return (
            "the 2026-12-01 quick-budget page of the same rule (its fit, chains, ratios and intervals); the full "
            "budget's run, checkpoint and chains ran after the rule was fixed, unseen"
        )
    if study == "noise-floor":
        return (
            "the 2026-12-01 page at the quick sizes: its one-curvature verdicts (kept as amendments) and the drift "
            "and raw excess it printed, |drift| / raw excess 1.30, 0.81, 0.40 (BC SGD), 0.65, 0.45, 0.19 (BC "
            "Adam) and 9.2, 2.25, 0.66 (LM) at the three eta; the gate's limit 0.25 was chosen after those were "
            "seen (in the study's code before the quick run of this version, in this rule's text only after it). "
            "The full budget ran after the rule was fixed, unseen"
        )
    if study == "landscape":
        return (
            "the whole-grid quadratic fit, TV, jump fraction and fractal dimension of the 2026-12-03 landscapes "
            "(the local measure replaced the whole-grid fit after a review; its own values were computed after "
            "it was fixed)"
        )
    if study == "algorithmic":
        return "the H = 300 sweep's rows of 2026-12-02 (the H = 1000 sweep that decides them ran after)"
    if study == "ema-calms":
        seen = (
            "the trained-in EMA (alpha 0.5) against raw in docs/bc.md: quick Hopper and Walker2d over 3 seeds and "
            "Walker2d at the paper's size over 3 seeds (oscillation, flip rate); no post-hoc width, no "
            "flip-distance curve. The amendments say what of this study's own runs was seen before them (one "
            "run's post-hoc rows and its fitted exponent and movements; no verdict)"
        )
        if key.endswith("-paper"):
            seen += (
                ". The paper-size tables train seeds 4-8, not the 1-3 whose raw iterates docs/bc.md reports, and 5 "
                "seeds, not 3, sized on 2026-12-03 before their runs from the spread seen there (sd of the log "
                "EMA / raw ratio about 0.15 over seeds 1-3): at 3 seeds the interval at level 1 - 0.05/6 is "
                "about exp(+-0.94) wide and could not contradict"
            )
            seen += (
                "; and every quick verdict of this study (2026-12-03) before the amendments of 2026-12-04. The logs "
                "of seeds 4 and 5 up to about step 24000 (losses and the returns of the every-1000-step grid, no "
                "zoom iterate) were committed by mistake before the min_n amendment, not read"
            )
        if key == "ema-calms/filtered-demos/Walker2d-v5-paper":
            seen += (
                "; that the quick filter drops 1 of the 25 Walker2d demonstrations (1.1% of the training pairs), "
                "which is why this rule was added"
            )
        if key in ("ema-calms/sac-expert/Walker2d-v5-quick", "ema-calms/expert-ics/Walker2d-v5-sac-quick"):
            seen += (
                "; and, on 2026-12-04 before any verdict of the SAC table was computed: that the SAC expert, "
                "selected as the one checkpoint of 380k-510k without a fall on its 20 selection initial conditions "
                "(seed 0), falls on 10 of 100 held-out ones (seed 777; the PPO expert on 5) and on 4 of the table's "
                "10 (seed 12345); and the summary of a first run of this table whose run directories were lost "
                "(over all 10 initial conditions): raw oscillation mean 0.266 over the 5 seeds, and 0.138 for the "
                "sweep's default post-hoc width"
            )
        if key == "ema-calms/expert-ics/Walker2d-v5-sac-quick":
            seen += (
                ". Added on 2026-12-04 after a review found that the PPO table's restriction drops 1 of its 10 "
                "initial conditions (on a knife edge) and so cannot separate much, where the SAC expert's drops 4; "
                "its walked-subset numbers were not seen"
            )
        return seen
    return ""


# The verdicts of the studies before this registry (pages of 2026-12-01/02, commit 9c59389 and
# before), whose outcomes were seen before the rules above were written: each rule that replaced
# one keeps it here, with the reason the old rule could not be trusted.
_TV = "a smooth dome scores a TV/range of 2 against a plane's 1, so a smooth surface passed it"
_UNIT_SWEEP = "percentile bootstrap over 3 seeds under-covers; raw and EMA of one run were treated as independent"
_NF = (
    "one fitted curvature cannot give the shallow EMA slope of a spread of curvatures; the 3 seeds shared one "
    "warm-up and validation set; no stationarity gate"
)
_LM = "needed only some change and a fluctuation under 1% of the decrease: near-automatic"
_BLOCKS = "time blocks within a chain are not independent units"
_PAIRS = "30 (window, IC) pairs sharing 5 ICs were resampled as independent units"


_Q_REASON = (
    "a review found that smooth surfaces which are not quadratics on the grid's scale score like noise on the "
    "whole-grid fit (a tanh ridge 0.16, white noise 0.18); the local fit separates them (at most 0.03 against "
    "0.11). The unit also moved to one base run per training seed (fresh-data s1 shared base s1's seed)"
)


def _was(date: str, was: str, outcome: str, reason: str) -> tuple[Amendment, ...]:
    return (Amendment(date, was, outcome, reason),)


_LANDSCAPE_Q = _was(
    "2026-12-03",
    "whole-grid quadratic-fit roughness, 4 runs (3 base, fresh-data s1)",
    "supports (0.144 [0.0868, 0.201]; EMA 0.137 [0.11, 0.164])",
    _Q_REASON,
)

_REPLACED: dict[str, tuple[Amendment, ...]] = {
    "landscape/raw-reward-rougher": _was(
        "2026-12-02", "mean over runs of reward TV / loss TV above 1", "supports (1.31 [1.22, 1.42], 4 runs)", _TV
    )
    + _LANDSCAPE_Q,
    "ema-never-hurts/no-loss": _was(
        "2026-12-02",
        "no run with (EMA - raw)/expert below -0.02, sweep at H = 300",
        "supports (0 exceptions of 21)",
        "at H = 300 20 of 21 runs sat at the ceiling and the 2% tolerance was not measured; the sweep now runs at "
        "H = 1000 (changed before its rerun)",
    ),
    "algorithmic/lr-cosine": _was(
        "2026-12-02",
        "ratio of means with P(osc < base) >= 0.8, percentile bootstrap, sweep at H = 300",
        "supports (0.092 [0.048, 0.41])",
        _UNIT_SWEEP,
    ),
    "algorithmic/averaging": _was(
        "2026-12-02",
        "ratio of means, groups resampled independently, sweep at H = 300",
        "supports (0.040 [0.026, 0.18])",
        _UNIT_SWEEP,
    ),
    **{
        f"algorithmic/{k}": _was(
            "2026-12-02", "ratio of means, percentile bootstrap, H = 300", "inconclusive", _UNIT_SWEEP
        )
        for k in ("fresh-data", "demos-100", "width-512", "wd-1e-4", "batch-256")
    },
    "landscape/ema-reward-rougher": _was(
        "2026-12-02", "the EMA's reward TV / loss TV (shown, not decided)", "1.06 [1.03, 1.09]", _TV
    )
    + _LANDSCAPE_Q,
    "lm/continuations-change": _was("2026-12-01", "every seed has a change fraction > 0", "supports", _LM),
    "lm/loss-barely-moves": _was("2026-12-01", "every seed's fluctuation < 1% of the decrease", "supports", _LM),
    "lm/ema-fewer-changes": _was(
        "2026-12-01", "EMA - raw < 0 (no margin)", "supports (-0.421 [-0.598, -0.243])", "no stated effect size"
    ),
    "lm/decay-fewer-changes": _was(
        "2026-12-01", "cosine - constant < 0 (no margin)", "supports (-0.448 [-0.698, -0.198])", "no stated effect size"
    ),
    **{
        f"local-model/{k}": _was("2026-12-01", "block bootstrap over time blocks", f"supports ({v})", _BLOCKS)
        for k, v in (
            ("raw-1-2", "0.964"),
            ("raw-3-5", "1.01"),
            ("raw-6-10", "1.12 [1.04, 1.20]"),
            ("ema-1-2", "1.12"),
            ("ema-3-5", "1.55 [1.15, 1.86]"),
            ("ema-6-10", "1.14"),
        )
    },
    "reward-law/raw-spread": _was("2026-12-01", "the same ratio", "supports (1.30 [0.87, 1.96])", _PAIRS),
    "reward-law/ema-spread": _was("2026-12-01", "the same ratio", "inconclusive (2.01 [1.25, 3.32])", _PAIRS),
    "reward-law/raw-flips": _was("2026-12-01", "the same ratio", "inconclusive (1.47 [1.01, 2.48])", _PAIRS),
    "reward-law/delta-short": (
        Amendment(
            "2026-12-01", "a 1-sd secant only", "supports (0.89 [0.78, 1.06] at H=50)", "the ratio depends on the step"
        ),
        Amendment("2026-12-01", "one step of 0.1 sd", "supports (1.09 [0.734, 1.54])", "the ratio depends on the step"),
    ),
    **{
        f"noise-floor/{k}": _was("2026-12-01", "slope or ratio of a one-curvature model, bootstrap", o, _NF)
        for k, o in (
            ("bc-sgd/raw-slope", "contradicts (1.116 [1.103, 1.125] against 1.046)"),
            ("bc-sgd/ema-slope", "contradicts (0.195 against 1.014)"),
            ("bc-sgd/ema-ratio", "contradicts (2.14 [2.01, 2.28])"),
            ("bc-adam/raw-slope", "contradicts (0.947 against 1.053)"),
            ("bc-adam/ema-slope", "contradicts (0.320 against 1.058)"),
            ("bc-adam/ema-ratio", "contradicts (1.64)"),
            ("lm-adam/raw-slope", "supports (1.161 [0.734, 1.589], one seed)"),
            ("lm-adam/ema-slope", "inconclusive (-0.740)"),
            ("lm-adam/ema-ratio", "inconclusive (7.93)"),
        )
    },
}


# Amendments of the averaging study (ema-calms) rules, shared by several rules of validation.registry
EXPERT_THREADS = (
    Amendment(
        "2026-12-03",
        "the expert rolled out with the process's torch threads (2 in `gva validate`)",
        "Walker2d: gated inconclusive (the expert fell on none of the 10 initial conditions); Hopper: gated",
        "an implementation fix after that result was seen: the runs rolled the expert out with their own 1 "
        "thread, and on Walker2d initial condition 9 the expert falls with 1 thread and walks with 2 (the "
        "float rounding of a matmul); the rule's 'expert rollout' is now the run's own",
    ),
)
SAC_CLAIM = (
    Amendment(
        "2026-12-04",
        "the claim read 'imitating a SAC expert that walks all 20 evaluation initial conditions'",
        "none (no verdict had been computed)",
        "the expert walks those 20 because it was chosen on them, as the one checkpoint of 380k-510k without a "
        "fall; held out it falls on 10 of 100 (the PPO expert on 5) and on 4 of the table's 10, so the claim "
        "named a robustness the expert lacks. Measure, region and family are unchanged",
    ),
)
PAPER_TRACKED = (
    Amendment(
        "2026-12-04",
        "each width synthesized after training from snapshots of two tracked widths (0.05, 0.1) taken every "
        "100 steps and at every zoom iterate",
        "none (no paper-size run had started)",
        "a measurement method, changed before any data: a run's snapshots (about 1.3 GB) cannot be committed, "
        "so a run could not continue on another machine; the six widths are now tracked and each rolled out at "
        "every zoom iterate during training (exact, fit error 0; the same measure, region and family)",
    ),
)
PAPER_N = (
    Amendment(
        "2026-12-04",
        "min_n 3 (the default) for tables designed as 5 runs",
        "none (no paper-size verdict computed; no zoom iterate of seeds 4-8 seen)",
        "a cold review before the zoom data: with 3 or 4 finished runs the interval is too wide to contradict "
        "while it can still support, so lost runs would lean the verdict; fewer than the 5 registered runs now "
        "leave it inconclusive. The measure's text now spells out how the two windows combine (the computation "
        "is unchanged)",
    ),
)
