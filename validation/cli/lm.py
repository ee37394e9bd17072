"""``gva lm``: language-model experiments (paper Section 4.2, Figure 4).

* ``gva lm data``      fetch / verify a corpus and print its size and vocabulary (:class:`LMData`);
* ``gva lm train``     train a run (:class:`~gvaempirics.lm.config.LMConfig`; ``--preset`` picks a size);
* ``gva lm generate``  greedy continuations of prompts from a run's raw or averaged weights (:class:`LMGenerate`);
* ``gva lm plot``      Figure-4-style loss figure and the bifurcation table of a run (:class:`LMPlot`);
* ``gva lm posthoc``   sweep the EMA length after training, for runs trained with ``--stabilizer posthoc``
  (:class:`LMPosthoc`).

Every setting of every subcommand is a field of a frozen dataclass, so it is a flag and a
``--config`` file key at once, checked by the same declarations (:mod:`validation.cli._args`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from gvaempirics.lm.config import CorpusOptions
from gvatheory.config import Config, option, to_dict
from validation.report import save_figure

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument, check_work, emit


@dataclass(frozen=True)
class LMData(CorpusOptions):
    """``gva lm data``: the corpus fields of a run, and where downloads are cached."""

    cache: str = option("", "download cache (default: $GVA_CACHE, else ~/.cache/gva)", metavar="DIR")


@dataclass(frozen=True)
class LMGenerate(Config):
    """``gva lm generate RUN``: greedy continuations of ``prompts`` by a run's latest weights."""

    prompts: tuple[str, ...] = option((), "prompt texts to continue (at least one)", metavar="TEXT")
    H: int | None = option(None, "continuation length (none: the run's H)", low=1)
    weights: str = option("avg", "the raw iterate or the run's averaged weights", choices=("raw", "avg"))

    def check(self) -> None:
        if not self.prompts:
            raise ValueError("prompts=() is not valid: give at least one prompt (--prompts TEXT ...)")
        if any(not p for p in self.prompts):
            raise ValueError("prompts='' is not valid: a prompt needs at least one character")


@dataclass(frozen=True)
class LMPlot(Config):
    """``gva lm plot RUN``: the loss figure and the bifurcation table of a run."""

    decayed: str = option("", "a decayed-LR run directory to overlay", metavar="RUN")
    out: str = option(
        "", "figure prefix: writes PREFIX_loss.png and PREFIX_bifurcations.png (default RUN/lm)", metavar="PREFIX"
    )


@dataclass(frozen=True)
class LMPosthoc(Config):
    """``gva lm posthoc RUN``: synthesize and evaluate EMAs of other relative widths after training."""

    sigma_rels: tuple[float, ...] = option(
        (0.01, 0.02, 0.05, 0.1, 0.2), "relative EMA widths to synthesize", low=0.0, high=12**-0.5, low_open=True
    )  # 12**-0.5: the uniform average
    all_snapshots: bool = option(False, "evaluate at every snapshot time, not only the last")
    plot: str = option("", "also write the sweep figure to this PNG", metavar="PATH")

    def check(self) -> None:
        if not self.sigma_rels:
            raise ValueError("sigma_rels=() is not valid: give at least one relative width")


def register(subparsers) -> None:
    from gvaempirics.lm.config import PRESETS, LMConfig

    p = subparsers.add_parser("lm", help="language-model experiments: butterfly effects in greedy generation")
    sub = p.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", required=True)

    d = sub.add_parser("data", help="fetch and verify a corpus; print its size and vocabulary")
    d.add_argument("--json", action="store_true", help="print JSON")
    add_quiet_argument(d)
    add_config_arguments(d, LMData)
    d.set_defaults(func=_data)

    t = sub.add_parser(
        "train",
        help="train a run into a run directory",
        description="Train a language model with raw and averaged weights evaluated side by side. Settings: "
        "class defaults < --preset < --config file < flags. Running the same command again (same --out, or the "
        "same settings without --out) continues the run; another configuration in an --out that already has a "
        "checkpoint is refused.",
    )
    t.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="start from a named configuration (--config and flags override it)",
    )
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run directory (default runs/lm/CORPUS__PRESET__sSEED__DIGEST: one per configuration)",
    )
    t.add_argument(
        "--max-tokens",
        type=_positive,
        default=1e12,
        metavar="N",
        help="refuse a run whose forward passes would process more token positions than this (training plus "
        "evaluation; the paper-scale presets need < 1e10); default 1e12",
    )
    add_quiet_argument(t)
    add_config_arguments(t, LMConfig)
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="greedy continuations from a run's weights")
    g.add_argument("run", type=Path, help="run directory")
    g.add_argument("--json", action="store_true", help="print JSON")
    add_config_arguments(g, LMGenerate)
    g.set_defaults(func=_generate)

    pl = sub.add_parser("plot", help="loss figure and bifurcation table of a run")
    pl.add_argument("run", type=Path, help="run directory (constant LR, raw and averaged weights)")
    add_config_arguments(pl, LMPlot)
    pl.set_defaults(func=_plot)

    ph = sub.add_parser("posthoc", help="synthesize and evaluate EMAs of other lengths after training (post-hoc EMA)")
    ph.add_argument("run", type=Path, help="run directory trained with --stabilizer posthoc")
    ph.add_argument("--json", action="store_true", help="print JSON")
    add_config_arguments(ph, LMPosthoc)
    ph.set_defaults(func=_posthoc)


def _data(args: argparse.Namespace) -> int:
    cfg = config_from_args(LMData, args)
    from gvaempirics.lm.corpus import load_corpus

    c = load_corpus(
        cfg.corpus,
        path=cfg.data_path,
        cache=Path(cfg.cache) if cfg.cache else None,
        val_fraction=cfg.val_fraction,
        size=cfg.corpus_size,
        seed=cfg.corpus_seed,
        tokenizer=cfg.tokenizer,
        bpe_vocab=cfg.bpe_vocab,
        quiet=args.quiet,
    )
    emit(
        [
            {
                "corpus": c.name,
                "train_tokens": len(c.train),
                "val_tokens": len(c.val),
                "vocab_size": c.tokenizer.vocab_size,
                "teacher": type(c.teacher).__name__ if c.teacher is not None else "-",
            }
        ],
        as_json=args.json,
        title="corpus",
        extra={"vocab": c.tokenizer.chars}
        if cfg.tokenizer == "char"
        else {"first 40 tokens": c.tokenizer.decode(c.train[:40])},
    )
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: must be a finite number > 0")
    return value


def _train(args: argparse.Namespace) -> int:
    from gvaempirics.lm.config import PRESETS, LMConfig

    cfg = config_from_args(LMConfig, args, PRESETS[args.preset] if args.preset else None)  # checked before any work
    train, evals = cfg.token_positions()
    check_work(  # on any device its own speed: an amount, not a time
        float(train + evals),
        what=f"training (steps={cfg.steps}) and evaluation (H={cfg.H}, {2 * len(cfg.eval_steps())} evaluations)",
        unit="token positions",
        limit=args.max_tokens,
        flag="--max-tokens",
        announce=1e10,
        quiet=args.quiet,
    )
    from gvaempirics.lm.train import train
    from gvaempirics.rundir import default_run_dir

    out = args.out or default_run_dir("lm", f"{cfg.corpus}__{args.preset or 'default'}__s{cfg.seed}", to_dict(cfg))
    summary = train(cfg, out, quiet=args.quiet)
    rows = [
        {"weights": w, **{k: v for k, v in summary[w].items() if not isinstance(v, list)}}
        for w in summary.get("weights", [])
        if w in summary
    ]
    emit(rows, as_json=False, title=f"run {out}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    cfg = config_from_args(LMGenerate, args)
    from gvaempirics.lm.train import generate

    rows = generate(args.run, list(cfg.prompts), H=cfg.H, weights=cfg.weights)
    emit([{"prompt": p, "continuation": c} for p, c in rows], as_json=args.json, title=f"{cfg.weights} weights")
    return 0


def _plot(args: argparse.Namespace) -> int:
    cfg = config_from_args(LMPlot, args)
    from gvaempirics.lm.plots import bifurcations, plot_bifurcations, plot_losses
    from gvaempirics.lm.results import load_result
    from gvaempirics.rundir import check_creatable

    prefix = Path(cfg.out) if cfg.out else Path(args.run) / "lm"
    loss_path = check_creatable(prefix.with_name(prefix.name + "_loss.png"), "figure")
    bif_path = prefix.with_name(prefix.name + "_bifurcations.png")
    res = load_result(args.run)
    if len(res.eval_steps) < 2:
        raise ValueError(f"{args.run} has fewer than 2 evaluated iterates: nothing to plot yet")
    decayed = load_result(cfg.decayed) if cfg.decayed else None
    save_figure(plot_losses(res, decayed=decayed), loss_path)
    save_figure(plot_bifurcations(bifurcations(res)), bif_path)
    print(f"wrote {loss_path} and {bif_path}")
    return 0


def _posthoc(args: argparse.Namespace) -> int:
    cfg = config_from_args(LMPosthoc, args)
    from gvaempirics.lm.posthoc import plot_posthoc, posthoc_sweep
    from gvaempirics.rundir import check_creatable

    if cfg.plot:
        check_creatable(Path(cfg.plot), "plot")
    rows = posthoc_sweep(args.run, list(cfg.sigma_rels), all_snapshots=cfg.all_snapshots)
    emit(rows, as_json=args.json, title=f"post-hoc EMA of {args.run}")
    if cfg.plot:
        save_figure(plot_posthoc(rows), Path(cfg.plot))
        if not args.json:
            print(f"wrote {cfg.plot}")
    return 0
