"""How far learned networks are from a mixture's exact ``D`` and ``C`` (``mapbench.priors.gmm``),
per noise level: the network's part of a solver's error, measured where it is known.

At each ``sigma`` of the grid, ``n`` exact draws ``x0`` of the mixture are noised to
``x = x0 + sigma z`` and both networks are compared with the exact ones on the same ``x``:

- ``rel_rms = rms(N(x) - E(x)) / rms(E(x))``: the learned output's error relative to the exact
  output's size, for ``N, E`` = the learned and exact ``D`` (and ``C``);
- ``rel_mmse`` (``D`` only) ``= rms(D_learned - D_exact) / rms(D_exact - x0)``: the excess error
  relative to the Bayes error of denoising (the exact ``D`` is the posterior mean: any denoiser's
  mean squared error is the exact one's plus ``rms(D - D_exact)^2``).

The exact ``C`` integrates the PF-ODE with ``EXACT_ODE_STEPS`` RK4 steps (within 1e-4 of the
ODE's solution, ``GMMPrior``), whatever the prior file's ``ode_steps``.
"""
from __future__ import annotations

import torch

SIGMAS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
EXACT_ODE_STEPS = 32


def rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


@torch.no_grad()
def network_error(mixture, networks, sigmas=SIGMAS, n: int = 256, seed: int = 0,
                  batch_size: int = 128) -> list[dict]:
    """One row per sigma: ``sigma``, ``d_rel_rms``, ``d_rel_mmse`` and, where ``networks`` has a
    consistency model, ``c_rel_rms`` (see module docstring)."""
    import dataclasses
    exact = dataclasses.replace(mixture, ode_steps=EXACT_ODE_STEPS)
    g = torch.Generator().manual_seed(seed)
    x0 = exact.sample(n, g)
    noise = torch.randn(len(sigmas), *x0.shape, generator=g, dtype=torch.float64)
    rows = []
    for sigma, z in zip(sigmas, noise):
        x = x0 + sigma * z
        parts = {k: [] for k in ("d_exact", "d_learned", "c_exact", "c_learned")}
        for lo in range(0, n, batch_size):
            xb = x[lo:lo + batch_size]
            parts["d_exact"].append(exact.denoise(xb, sigma))
            parts["d_learned"].append(networks.denoise(xb, sigma))
            if networks.consistency_model is not None:
                parts["c_exact"].append(exact.consistency(xb, sigma))
                parts["c_learned"].append(networks.consistency(xb, sigma))
        out = {k: torch.cat(v) for k, v in parts.items() if v}
        row = {"sigma": sigma,
               "d_rel_rms": rms(out["d_learned"] - out["d_exact"]) / rms(out["d_exact"]),
               "d_rel_mmse": rms(out["d_learned"] - out["d_exact"]) / rms(out["d_exact"] - x0)}
        if "c_exact" in out:
            row["c_rel_rms"] = rms(out["c_learned"] - out["c_exact"]) / rms(out["c_exact"])
        rows.append(row)
    return rows


def plot(rows: list[dict], path, title: str) -> None:
    """Relative RMS error against sigma (log-log), one line per measure (an exact 0, C at
    ``sigma_min``, is left out of the log axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mapbench.io import atomic_path
    labels = {"d_rel_rms": "D: rms(D - D*) / rms(D*)", "d_rel_mmse": "D: rms(D - D*) / rms(D* - x0)",
              "c_rel_rms": "C: rms(C - C*) / rms(C*)"}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sigmas = [r["sigma"] for r in rows]
    for key, label in labels.items():
        if key in rows[0]:
            ax.plot(sigmas, [r[key] if r[key] > 0 else float("nan") for r in rows],  # 0: C at sigma_min
                    marker="o", ms=3, label=label)
    ax.set(xscale="log", yscale="log", xlabel="sigma", ylabel="relative RMS error", title=title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
