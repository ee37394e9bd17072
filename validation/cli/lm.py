"""``gva lm``: language-model experiments (paper Section 4.2, Figure 4).

* ``gva lm data``      fetch / verify a corpus and print its size and vocabulary;
* ``gva lm train``     train a run (flags generated from ``LMConfig``; ``--preset`` picks a size);
* ``gva lm generate``  greedy continuations of prompts from a run's raw or EMA weights;
* ``gva lm plot``      Figure-4-style loss figure and the bifurcation table of a run;
* ``gva lm posthoc``   sweep the EMA length after training (runs trained with ``--stabilizer posthoc``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_quiet_argument, emit, save_figure


def register(subparsers) -> None:
    from gvaempirics.config import add_config_arguments
    from gvaempirics.lm.config import LMConfig

    p = subparsers.add_parser("lm", help="language-model experiments: butterfly effects in greedy generation")
    sub = p.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", required=True)

    d = sub.add_parser("data", help="fetch and verify a corpus; print its size and vocabulary")
    d.add_argument("--corpus", default="shakespeare", choices=("shakespeare", "tinystories", "teacher", "flipflop"))
    d.add_argument("--data-path", default="", help="TinyStories .txt file or directory")
    d.add_argument("--size", type=int, default=200_000, help="characters kept / tokens generated")
    d.add_argument("--tokenizer", default="char", choices=("char", "bpe"), help="character level or byte-level BPE (text corpora)")
    d.add_argument("--bpe-vocab", type=int, default=512, help="BPE vocabulary size (>= 257)")
    d.add_argument("--cache", type=Path, default=None, help="download cache (default $GVA_CACHE or ~/.cache/gva)")
    d.add_argument("--json", action="store_true", help="print JSON")
    add_quiet_argument(d)
    d.set_defaults(func=_data)

    t = sub.add_parser("train", help="train a run into a run directory")
    t.add_argument("--preset", default=None, choices=("tiny", "reproduce", "quick", "shakespeare"),
                   help="start from a named configuration (flags and --config override it)")
    t.add_argument("--out", type=Path, default=None, help="run directory (default runs/lm/CORPUS__SCHEDULE__SEED__TIME)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_quiet_argument(t)
    add_config_arguments(t, LMConfig)
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="greedy continuations from a run's weights")
    g.add_argument("run", type=Path, help="run directory")
    g.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable)")
    g.add_argument("--H", type=int, default=None, help="continuation length (default: the run's H)")
    g.add_argument("--weights", default="avg", choices=("raw", "avg"),
                   help="raw iterate or the run's averaged weights (default avg)")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.set_defaults(func=_generate)

    pl = sub.add_parser("plot", help="loss figure and bifurcation table of a run")
    pl.add_argument("run", type=Path, help="run directory (constant LR, raw and EMA weights)")
    pl.add_argument("--decayed", type=Path, default=None, help="a decayed-LR run directory to overlay")
    pl.add_argument("--out", type=Path, required=True, help="figure prefix: writes PREFIX_loss.png and PREFIX_bifurcations.png")
    pl.set_defaults(func=_plot)

    ph = sub.add_parser("posthoc", help="synthesize and evaluate EMAs of other lengths after training (post-hoc EMA)")
    ph.add_argument("run", type=Path, help="run directory trained with --stabilizer posthoc")
    ph.add_argument("--sigma-rel", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2],
                    help="relative EMA widths to synthesize, each in (0, 0.2887] (default 0.01 0.02 0.05 0.1 0.2)")
    ph.add_argument("--all-snapshots", action="store_true", help="evaluate at every snapshot time, not only the last")
    ph.add_argument("--plot", type=Path, default=None, help="write the sweep figure to this PNG")
    ph.add_argument("--json", action="store_true", help="print JSON")
    ph.set_defaults(func=_posthoc)


def _data(args: argparse.Namespace) -> int:
    from gvaempirics.lm.corpus import load_corpus

    c = load_corpus(args.corpus, path=args.data_path, cache=args.cache, size=args.size, tokenizer=args.tokenizer,
                    bpe_vocab=args.bpe_vocab, quiet=args.quiet)
    emit([{"corpus": c.name, "train_tokens": len(c.train), "val_tokens": len(c.val), "vocab_size": c.tokenizer.vocab_size,
           "teacher": type(c.teacher).__name__ if c.teacher is not None else "-"}],
         as_json=args.json, title="corpus",
         extra={"vocab": c.tokenizer.chars} if args.tokenizer == "char" else {"first 40 tokens": c.tokenizer.decode(c.train[:40])})
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    from gvaempirics.config import config_from_args
    from gvaempirics.lm.config import LMConfig, preset
    from gvaempirics.lm.train import train

    cfg = config_from_args(LMConfig, args, preset(args.preset) if args.preset else None)
    out = args.out or Path("runs/lm") / f"{cfg.corpus}__{cfg.lr_schedule}__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    summary = train(cfg, out, resume=args.resume, quiet=args.quiet)
    rows = [{"weights": w, **{k: v for k, v in summary[w].items() if not isinstance(v, list)}}
            for w in summary.get("weights", []) if w in summary]
    emit(rows, as_json=False, title=f"run {out}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from gvaempirics.lm.train import generate

    rows = generate(args.run, args.prompt, H=args.H, weights=args.weights)
    emit([{"prompt": p, "continuation": c} for p, c in rows], as_json=args.json, title=f"{args.weights} weights")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from gvaempirics.lm.plots import bifurcations, plot_bifurcations, plot_losses
    from gvaempirics.lm.train import load_result

    res = load_result(args.run)
    decayed = load_result(args.decayed) if args.decayed else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    loss_path = args.out.with_name(args.out.name + "_loss.png")
    bif_path = args.out.with_name(args.out.name + "_bifurcations.png")
    save_figure(plot_losses(res, decayed=decayed), loss_path)
    save_figure(plot_bifurcations(bifurcations(res)), bif_path)
    print(f"wrote {loss_path} and {bif_path}")
    return 0


def _posthoc(args: argparse.Namespace) -> int:
    from gvaempirics.lm.posthoc import plot_posthoc, posthoc_sweep

    rows = posthoc_sweep(args.run, args.sigma_rel, all_snapshots=args.all_snapshots)
    emit(rows, as_json=args.json, title=f"post-hoc EMA of {args.run}")
    if args.plot:
        save_figure(plot_posthoc(rows), args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0
