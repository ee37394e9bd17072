"""Time one EMA update: our foreach EMA vs ema-pytorch vs our per-parameter reference loop.

The module is a transformer encoder (default: 6 layers, d_model 256, 72 tensors, 4.7M
parameters), the size of the language models the toolkit trains. Every method does the same
work per call, ``ema <- (1 - gamma) ema + gamma theta`` over all parameters: ema-pytorch is set
to ``update_every=1, update_after_step=0`` so that each call averages.

Run from the repository root::

    python -m benchmarks.bench_stabilizers [--layers 6] [--d-model 256] [--device cpu]

Prints microseconds per update (median over repeats) and the ratio to our foreach update.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from gvaempirics.stabilizers import EMA


def time_updates(updates: dict, *, number: int, repeats: int, sync) -> dict[str, float]:
    """Median over ``repeats`` of the mean seconds per call of ``number`` calls, per method.

    The methods take turns within each repeat, so a change in machine load hits all of them.
    """
    for update in updates.values():
        for _ in range(3):
            update()
    sync()
    runs: dict[str, list[float]] = {name: [] for name in updates}
    for _ in range(repeats):
        for name, update in updates.items():
            start = time.perf_counter()
            for _ in range(number):
                update()
            sync()
            runs[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(r) for name, r in runs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--number", type=int, default=20, help="updates per timed run")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    from ema_pytorch import EMA as EMAPytorch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(args.d_model, nhead=4, dim_feedforward=4 * args.d_model, dropout=0.0)
    model = nn.TransformerEncoder(layer, num_layers=args.layers, enable_nested_tensor=False).to(args.device)
    n_tensors = sum(1 for _ in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    gamma = 1e-3
    ours = EMA(model, gamma)
    ours.update()  # t = 0 copies; the timed calls lerp
    reference = EMA(model, gamma, foreach=False)
    reference.update()
    theirs = EMAPytorch(model, beta=1 - gamma, update_after_step=0, update_every=1, inv_gamma=1e-9, power=1.0)
    theirs_foreach = EMAPytorch(
        model, beta=1 - gamma, update_after_step=0, update_every=1, inv_gamma=1e-9, power=1.0, use_foreach=True
    )
    for e in (theirs, theirs_foreach):
        e.update()
        e.update()  # past ema-pytorch's initial copies

    timed = {
        "ours (torch._foreach_lerp_)": ours.update,
        "ema-pytorch (use_foreach=False, default)": theirs.update,
        "ema-pytorch (use_foreach=True)": theirs_foreach.update,
        "ours, reference loop (foreach=False)": reference.update,
    }
    seconds = time_updates(timed, number=args.number, repeats=args.repeats, sync=sync)
    base = seconds["ours (torch._foreach_lerp_)"]
    print(
        f"EMA update, transformer encoder {args.layers}x{args.d_model}: {n_tensors} tensors, "
        f"{n_params / 1e6:.2f}M params, device={args.device}, threads={args.threads}, torch {torch.__version__}"
    )
    print(f"{'method':<44}{'us/update':>12}{'ratio to ours':>16}")
    for name, sec in seconds.items():
        print(f"{name:<44}{sec * 1e6:>12.1f}{sec / base:>16.2f}")


if __name__ == "__main__":
    main()
