"""Tutorial 2: detect GVA in your own training run with ``gva diagnose``.

A plain torch training loop (yours) saves a state dict every few steps; ``gva diagnose`` rolls
out every checkpoint from the same seeded initial conditions and says how much the return swings
between neighbours, how many initial conditions it takes to rank them, and what averaging the
last checkpoints' weights scores. Run: python docs/tutorials/detect_gva.py [WORKDIR]
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


# --8<-- [start:factory]
def make_policy(*, observation_space, action_space) -> nn.Module:
    """The factory `gva diagnose` calls: build the module that the checkpoints' state dicts fit."""
    return nn.Linear(int(np.prod(observation_space.shape)), int(action_space.n))  # CartPole: 4 -> 2


# --8<-- [end:factory]


# --8<-- [start:train]
def train(folder: Path, steps: int = 40, every: int = 4) -> None:
    """Your training run: minibatch SGD of a linear CartPole policy that imitates a controller
    (push towards the side the pole falls to) on random states; a state dict every 4 steps."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    policy = nn.Linear(4, 2)
    nn.init.normal_(policy.weight, std=0.1, generator=g)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    scale = torch.tensor([2.0, 2.0, 0.2, 2.0])  # x, x_dot, theta, theta_dot
    for step in range(steps + 1):
        if step % every == 0:
            torch.save(policy.state_dict(), folder / f"step_{step}.pt")  # ordered by the integer
        s = (torch.rand(16, 4, generator=g) * 2 - 1) * scale
        target = (s[:, 2] + 0.5 * s[:, 3] > 0).long()
        loss = nn.functional.cross_entropy(policy(s), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


# --8<-- [end:train]


def main(work: Path) -> dict:
    train(work / "ckpts")
    # --8<-- [start:diagnose]
    # The command line, as you would type it (`gva` is `python -m validation`); the factory is
    # imported as MODULE:FUNCTION, so this file's folder goes on PYTHONPATH.
    cmd = [sys.executable, "-m", "validation", "diagnose", str(work / "ckpts"),
           "--factory", "detect_gva:make_policy", "--env", "CartPole-v1",
           "--ics", "20", "--H", "200", "--seed", "0", "--average", "2", "4", "8",
           "--out", str(work / "out"), "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, check=True, env=env)  # prints the table; writes diagnosis.json and .png
    d = json.loads((work / "out" / "diagnosis.json").read_text())
    # --8<-- [end:diagnose]
    # --8<-- [start:read]
    osc, flips = d["oscillation_index"], d["flip_rate"]
    print(f"oscillation index {osc['estimate']:.3f} [{osc['low']:.3f}, {osc['high']:.3f}]")
    print(f"flip rate {flips['estimate']:.2f} [{flips['low']:.2f}, {flips['high']:.2f}]")
    # GVA: neighbouring checkpoints' mean returns differ, on average, by more than 5% of the
    # range of all returns, and that is resolved (the CI excludes 5%) with 20 initial conditions.
    assert osc["low"] > 0.05, osc
    # --8<-- [end:read]
    return d


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="gva-diagnose-")))
