r"""GVA diagnostics for anyone's checkpoints (``gva diagnose``).

Gradient variance amplification (Block et al., ICLR 2024, Section 3) makes the rollout return
:math:`J_H` of neighbouring training checkpoints swing although their training loss barely
moves, so "pick the best checkpoint" and "how many evaluation episodes" have no obvious
answer. Given a folder of checkpoints of any torch policy, a factory for its ``nn.Module`` and
a gymnasium environment (or a rollout function), :func:`diagnose` rolls out every checkpoint
from the same seeded initial conditions and measures

* the oscillation index and flip rate of the returns between consecutive checkpoints, with
  bootstrap CIs over initial conditions;
* for each consecutive pair, the number of initial conditions a paired test needs to tell them
  apart at 95%, :math:`n^\star = (1.96\, s_D / |\bar D|)^2`;
* what a uniform average of the last ``k`` checkpoints' weights scores (post-hoc averaging,
  no retraining), on the same initial conditions.

``plot_diagnosis`` draws a :class:`Diagnosis`; ``docs/diagnose.md`` has the factory contract.
"""

from .bc import ClosedLoopImitator, bc_imitator
from .evaluate import diagnose
from .plots import plot_diagnosis
from .result import AveragedCheckpoint, Diagnosis, Interval, analyze, ics_needed
from .sources import GymRollout, average_state_dicts, find_checkpoints, load_state_dict

__all__ = [
    "AveragedCheckpoint",
    "ClosedLoopImitator",
    "Diagnosis",
    "GymRollout",
    "Interval",
    "analyze",
    "average_state_dicts",
    "bc_imitator",
    "diagnose",
    "find_checkpoints",
    "ics_needed",
    "load_state_dict",
    "plot_diagnosis",
]
