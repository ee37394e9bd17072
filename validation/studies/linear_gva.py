"""Study: gradient variance amplification in a linear closed loop (paper Sec. 3).

Prediction: minibatch SGD on the BC loss of a linear policy leaves the loss almost unchanged
across seeds, while the rollout cost J_H of the same iterates fluctuates with an sd that grows
exponentially in H; the EMA of the iterates removes most of it. The Lyapunov covariance of the
gains and the delta method predict both sds while J_H is close to linear in K over the
fluctuation, and stop matching at large H (nonlinearity) and at marginal stability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validation.report import Section, Verdict, markdown_table


def _cov_check(exp) -> tuple[float, str]:
    """Largest |z| of the MC second moments of the final gains about the predicted mean, raw and EMA."""
    from gvatheory.stats import estimate

    worst, parts = 0.0, []
    for name, arr, mean, cov in (
        ("raw", exp.run.K[:, -1], exp.moments.mean_raw, exp.moments.cov_raw),
        ("ema", exp.run.ema[:, -1], exp.moments.mean_ema, exp.moments.cov_ema),
    ):
        dev = arr.reshape(len(arr), -1) - mean.reshape(-1)
        z = np.abs(estimate(dev[:, :, None] * dev[:, None, :]).z(cov)).max()
        worst = max(worst, float(z))
        parts.append(
            f"{name}: Var K MC {np.round(dev.var(axis=0), 9).tolist()} vs Lyapunov "
            f"{np.round(np.diag(cov), 9).tolist()}, max |z| = {z:.2f}"
        )
    return worst, "; ".join(parts)


def _first_break(exp) -> str:
    ratio = exp.final_sd("raw")[0] / exp.pred_raw.sd
    late = exp.H[ratio > 1.5]
    return str(int(late[0])) if len(late) else f"none up to {int(exp.H[-1])}"


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from gvatheory.linear_gva import LinearBC, double_integrator, gva_experiment
    from gvatheory.plots import plot_linear_gva
    from validation.report import save_figure

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seeds, steps = (200, 4000) if quick else (1000, 8000)
    H = [25, 50, 100, 200, 400, 800]
    sgd = dict(eta=0.01, gamma=0.01, batch_size=8, steps=steps, chains=seeds, H=H, seed=seed, quiet=quiet)
    A, B, K = double_integrator(0.995, 0.1)
    problem = LinearBC(A, B, K, label_noise=0.1, N=50, traj_len=100)
    exp = gva_experiment(problem, **sgd)
    sd_raw, se_raw = exp.final_sd("raw")
    sd_ema, se_ema = exp.final_sd("ema")
    verdicts = []

    growth = np.polyfit(exp.H[exp.H <= 200], np.log(sd_raw[exp.H <= 200]), 1)[0]
    verdicts.append(
        Verdict(
            "sd of J_H across SGD seeds grows exponentially with H while the BC loss barely moves "
            "(sd/mean of loss_bc < 0.1; sd J_H grows > 100x from H=25 to H=200)",
            bool(exp.loss_cv() < 0.1 and sd_raw[exp.H == 200][0] > 100 * sd_raw[0]),
            f"sd J_H at H={H}: {np.round(sd_raw, 3).tolist()}; log-slope (H<=200) {growth:.4f}/step; "
            f"loss_bc sd/mean {exp.loss_cv():.4f}",
        )
    )

    ratio = sd_ema / sd_raw
    verdicts.append(
        Verdict(
            "the EMA removes most of the fluctuation: sd J_H (EMA) / sd J_H (raw) < 0.5 for every H >= 50",
            bool(np.all(ratio[exp.H >= 50] < 0.5)),
            f"ratio at H={H}: {np.round(ratio, 4).tolist()}",
        )
    )

    zmax, detail = _cov_check(exp)
    verdicts.append(
        Verdict(
            "Lyapunov (linear-noise) covariance of K_t and of the EMA matches Monte Carlo within 4 SE",
            zmax <= 4.0,
            detail,
        )
    )

    # where the delta method should hold: the quadratic term is a small part of the variance
    lin_raw = exp.pred_raw.var_first / exp.pred_raw.var > 0.8
    lin_ema = exp.pred_ema.var_first / exp.pred_ema.var > 0.8
    z_raw = (sd_raw - exp.pred_raw.sd) / se_raw
    z_ema = (sd_ema - exp.pred_ema.sd) / se_ema
    verdicts.append(
        Verdict(
            "delta-method sd of J_H matches Monte Carlo within 4 SE where J_H is near-linear in K over the "
            "fluctuation (first-order term > 80% of the predicted variance)",
            bool(np.all(np.abs(z_raw[lin_raw]) <= 4) and np.all(np.abs(z_ema[lin_ema]) <= 4) and lin_raw.any()),
            f"raw: z = {np.round(z_raw, 2).tolist()}, regime {lin_raw.tolist()}; "
            f"ema: z = {np.round(z_ema, 2).tolist()}, regime {lin_ema.tolist()}",
        )
    )

    quiet_problem = LinearBC(A, B, K, label_noise=0.0, N=50, traj_len=100)
    flat = gva_experiment(quiet_problem, **{**sgd, "chains": 8, "steps": 200})
    verdicts.append(
        Verdict(
            "realizable noiseless labels: the gradient noise vanishes at K*, so there is nothing to amplify",
            # rounding alone (1e-16 relative) may move the iterates
            bool(
                np.abs(quiet_problem.gradient_noise_cov(K)).max() < 1e-20
                and np.all(flat.final_sd("raw")[0] <= 1e-10 * flat.J_raw[:, -1].mean(axis=0))
            ),
            f"max |C| = {np.abs(quiet_problem.gradient_noise_cov(K)).max():.2g}, sd J_H = {flat.final_sd('raw')[0].tolist()}",
        )
    )

    marginal = gva_experiment(
        LinearBC(*double_integrator(1.0, 0.1), label_noise=0.1, N=50, traj_len=100), **{**sgd, "chains": seeds // 2}
    )
    fig_path = outdir / "linear_gva.png"
    save_figure(plot_linear_gva(exp), fig_path)
    fig_marg = outdir / "linear_gva_marginal.png"
    save_figure(plot_linear_gva(marginal), fig_marg)
    body = "\n\n".join(
        [
            f"Double integrator (dt = 0.1) with expert poles at rho = 0.995, 50 demonstrations of 100 steps, label "
            f"noise 0.1; SGD eta = 0.01, batch 8, EMA gamma = 0.01, {steps} steps from K*, {seeds} seeds. J_H is the "
            "exact quadratic cost sum |x_h|^2 + |u_h|^2 from x0 ~ N(0, I); see `docs/linear_gva.md`.",
            markdown_table(
                [
                    {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
                    for r in exp.rows()
                ]
            ),
            f"loss_bc sd/mean: raw {exp.loss_cv():.4f}, EMA {exp.loss_cv('ema'):.5f}.",
            "Where the prediction stops matching: at large H the cost is strongly nonlinear in K (an iterate whose "
            "closed loop crosses radius 1 grows exponentially in H), so the Monte Carlo sd of the raw iterates "
            f"exceeds the delta method: first H with MC/predicted sd > 1.5: {_first_break(exp)} (rho = 0.995). "
            f"The same comparison at marginal stability, rho = 1 ({seeds // 2} seeds), breaks at H = "
            f"{_first_break(marginal)}:",
            markdown_table(
                [
                    {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
                    for r in marginal.rows()
                ]
            ),
        ]
    )
    return Section(
        key="linear-gva",
        title="GVA in a linear closed loop: SGD noise amplified by the rollout, removed by EMA",
        body=body,
        verdicts=verdicts,
        figures=[fig_path, fig_marg],
    )
