"""Tutorial 1: import a toy system and verify a bound, exact next to Monte Carlo.

The cliff problem of the paper (Eq. 4.2): SGD's last iterate falls off the cliff, its EMA does
not (Prop. 4.1). The exact expectations come from the Gaussian law of (theta_T, ema_T); the
Monte Carlo twin simulates the chains. Run: python docs/tutorials/verify_a_bound.py
"""

from gvatheory import CliffProblem, agreement_z, sgd_monte_carlo

# --8<-- [start:problem]
problem = CliffProblem(mu=[0.0, 0.0, 0.0], eps=0.5, C=1.0)  # d = 3, cliff radius 0.5, drop 1
eta, gamma, sigma, T = 0.5, 0.01, 1.0, 500  # step size, EMA weight, gradient noise, steps

exact = problem.sgd(eta=eta, gamma=gamma, sigma=sigma, T=T)  # closed form, no sampling
mc = sgd_monte_carlo(problem, eta=eta, gamma=gamma, sigma=sigma, T=T, chains=20_000, seed=0)
# --8<-- [end:problem]

# --8<-- [start:compare]
print(f"{'iterate':8} {'quantity':8} {'exact':>9} {'Monte Carlo':>18} {'z':>6}")
worst = 0.0
for name in ("theta", "ema"):
    ex, est = getattr(exact, name), getattr(mc, name)
    z = agreement_z(est, ex)  # (MC - exact) / SE per quantity
    for q in ("gap", "loss_bc", "p_off"):
        e = getattr(est, q)
        print(f"{name:8} {q:8} {float(getattr(ex, q)):9.3g} {e.mean:9.3g} +- {e.se:6.2g} {z[q]:6.2f}")
        worst = max(worst, abs(z[q]))
print(f"largest |z| = {worst:.2f}")
# --8<-- [end:compare]

# --8<-- [start:bound]
# Prop. 4.1's shape: the last iterate's expected reward gap is large (it falls off the cliff
# often), its EMA's is O(gamma) (it stays on the plateau).
gap_theta, gap_ema = float(exact.theta.gap), float(exact.ema.gap)
print(f"E[J* - J(theta_T)] = {gap_theta:.3f}   E[J* - J(ema_T)] = {gap_ema:.3g}")
assert gap_theta > 0.5 * problem.C > 10 * gap_ema
assert worst < 4, "exact and Monte Carlo disagree by more than 4 standard errors"
# --8<-- [end:bound]
