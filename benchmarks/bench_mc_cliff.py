"""Monte Carlo of 1-D SGD + one EMA on the cliff problem: our numba kernel vs a numpy baseline.

The model is the cliff problem's (paper Eq. 4.2, :math:`h = 1`,
:math:`\\ell_{bc} = |\\theta-\\mu|^2/2`): ``theta <- theta - eta ((theta - mu) + sigma xi)``,
``ema <- (1 - gamma) ema + gamma theta``, for ``--chains`` chains and ``--steps`` steps. The
baseline is what a numpy user would write: vectorized over chains, a Python loop over steps,
normals from ``numpy.random.Generator`` written into a preallocated buffer, updates in place.
Ours is :func:`gvatheory.averaging.simulate_scalar` (numba, parallel over chains, per-chain
xoshiro256** + ziggurat). Both run in the same process, taking turns within each repeat.

Also times the exact path, :func:`gvatheory.averaging.scalar_moments`, on a grid of
``--points`` parameter points at step ``--steps``.

Run from the repository root::

    python -m benchmarks.bench_mc_cliff [--chains 10000] [--steps 10000] [--threads 2]

Prints chain-steps/s for both Monte Carlo methods and their ratio (median over repeats), and
parameter points/s for the exact path.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from gvatheory.averaging import scalar_moments, simulate_scalar

ETA, GAMMA, SIGMA, THETA0, MU = 0.05, 0.01, 1.0, 0.0, 0.0


def numpy_baseline(n_chains: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Same model, vectorized over chains with numpy."""
    rng = np.random.default_rng(seed)
    theta = np.full(n_chains, THETA0)
    ema = theta.copy()
    xi = np.empty(n_chains)
    grad = np.empty(n_chains)
    for _ in range(T):
        rng.standard_normal(out=xi)
        np.subtract(theta, MU, out=grad)
        grad += SIGMA * xi
        theta -= ETA * grad
        ema *= 1.0 - GAMMA
        ema += GAMMA * theta
    return theta, ema


def ours(n_chains: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return simulate_scalar(n_chains, T, ETA, GAMMA, SIGMA, THETA0, MU, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    parser.add_argument("--points", type=int, default=100_000, help="grid size for the exact path")
    args = parser.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)

    ours(10, 10, 0)  # compile (or load the cache) outside the timing
    times: dict[str, list[float]] = {"numba kernel (ours)": [], "numpy baseline": []}
    for rep in range(args.repeats):
        for name, fn in (("numba kernel (ours)", ours), ("numpy baseline", numpy_baseline)):
            start = time.perf_counter()
            theta, ema = fn(args.chains, args.steps, rep)
            times[name].append(time.perf_counter() - start)
    work = args.chains * args.steps
    rate = {name: work / statistics.median(t) for name, t in times.items()}
    print(
        f"Monte Carlo, {args.chains} chains x {args.steps} steps, numba threads {numba.get_num_threads()}, "
        f"median of {args.repeats}:"
    )
    for name, r in rate.items():
        print(f"  {name:22s} {r:12.4g} chain-steps/s")
    print(f"  ratio ours / numpy     {rate['numba kernel (ours)'] / rate['numpy baseline']:12.3g}")
    # Sanity check that both simulate the same law: stationary-ish variance of theta.
    print(
        f"  (var theta_T: ours {np.var(ours(args.chains, args.steps, 0)[0]):.4g}, "
        f"numpy {np.var(numpy_baseline(args.chains, args.steps, 0)[0]):.4g}, "
        f"exact {scalar_moments(1.0, SIGMA, ETA, GAMMA, args.steps).var_theta:.4g})"
    )

    rng = np.random.default_rng(0)
    eta = rng.uniform(0.001, 1.9, args.points)
    gamma = rng.uniform(1e-4, 1.0, args.points)
    scalar_moments(1.0, SIGMA, eta[:10], gamma[:10], args.steps)
    exact_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scalar_moments(1.0, SIGMA, eta, gamma, args.steps, theta0=1.0)
        exact_times.append(time.perf_counter() - start)
    print(
        f"Exact path scalar_moments, {args.points} parameter points at T={args.steps}: "
        f"{args.points / statistics.median(exact_times):.4g} points/s"
    )


if __name__ == "__main__":
    main()
