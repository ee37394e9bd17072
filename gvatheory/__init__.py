"""Exact and Monte Carlo toy systems for gradient variance amplification (GVA).

Light by design: numpy, scipy, numba and sympy only. Never imports torch, gymnasium or mujoco.
Modules: ``schedules`` (step sizes and EMA weights), ``averagers`` (EMA / Polyak / BEMA update
rules), ``averaging`` (SGD with iterate averaging on quadratics), ``cliff`` (paper Eq. 4.2,
Prop. 4.1), ``linear`` (paper Prop. 3.1), ``gva`` (GVA in a linear closed loop), ``stats``.
"""

__version__ = "0.1.0"
