"""The solver registry. A solver is a plain function

    solve(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None, **hp) -> x_hat

with ``sigmas`` the runner's Karras schedule (``steps + 1`` points, float64), ``generators`` one
``torch.Generator`` per image (all randomness), ``iters`` the inner iterations per step and
``x_init`` the starting point at ``sigmas[0]`` (the paper's Table 2 warm start) or None (pure noise).
Adding a solver: one file in this package, one line in ``SOLVERS``, one block in the config.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from mapbench.errors import UserError
from mapbench.solvers.daps import daps
from mapbench.solvers.ddnm import ddnm
from mapbench.solvers.ddrm import ddrm
from mapbench.solvers.diffpir import diffpir
from mapbench.solvers.dmplug import dmplug
from mapbench.solvers.dps import dps
from mapbench.solvers.map_ga import map_ga
from mapbench.solvers.map_ga_pgdm import map_ga_pgdm
from mapbench.solvers.pgdm import pgdm
from mapbench.solvers.pnp_dm import pnp_dm
from mapbench.solvers.red_diff import red_diff
from mapbench.solvers.vml_map import vml_map


@dataclass(frozen=True)
class Solver:
    fn: Callable
    hp: dict = field(default_factory=dict)   # fixed settings that define this registry entry
    paper: str = ""                          # the paper (and algorithm) it implements


MAP_GA = "MAP-GA: Gutha, Vinuesa & Azizpour, WACV 2025"
SOLVERS: dict[str, Solver] = {
    "map_ga": Solver(map_ga, paper=f"{MAP_GA}, Alg. 2"),
    "map_ga_np": Solver(map_ga, {"use_prior": False},
                        paper=f"{MAP_GA}, Alg. 2 without the prior term"),
    "map_ga_d": Solver(map_ga, {"network": "denoiser"}, paper=f"{MAP_GA}, Alg. 2 with D as C"),
    "map_ga_d_np": Solver(map_ga, {"network": "denoiser", "use_prior": False},
                          paper=f"{MAP_GA}, Alg. 2 with D as C, without the prior term"),
    "map_ga_pgdm": Solver(map_ga_pgdm, paper=f"{MAP_GA}, Alg. 3 (MAP-GA-PGDM)"),
    "map_ga_pgdm_d": Solver(map_ga_pgdm, {"network": "denoiser"},
                            paper=f"{MAP_GA}, Alg. 3 (MAP-GA-PGDM) with D as C"),
    "pgdm": Solver(pgdm, paper="PGDM: Song, Vahdat, Mardani & Kautz, ICLR 2023, Alg. 1"),
    "map_ga_momentum": Solver(map_ga, {"optimizer": "momentum"},
                              paper=f"{MAP_GA}, Alg. 2 with heavy-ball momentum (Polyak 1964)"),
    "map_ga_adam": Solver(map_ga, {"optimizer": "adam"},
                          paper=f"{MAP_GA}, Alg. 2 with Adam (Kingma & Ba 2015)"),
    "vml_map": Solver(vml_map, paper="VML-MAP: Gutha, Vinuesa & Azizpour, arXiv 2512.10524"),
    "dps": Solver(dps, paper="DPS: Chung, Kim, McCann, Klasky & Ye, ICLR 2023, Alg. 1"),
    "ddrm": Solver(ddrm, paper="DDRM: Kawar, Elad, Ermon & Song, NeurIPS 2022, Eqs. 7-8"),
    "diffpir": Solver(diffpir, paper="DiffPIR: Zhu et al., CVPR 2023 workshops, Alg. 1"),
    "red_diff": Solver(red_diff,
                       paper="RED-diff: Mardani, Song, Kautz & Vahdat, ICLR 2024, Alg. 1"),
    "dmplug": Solver(dmplug, paper="DMPlug: Wang et al., NeurIPS 2024, Alg. 1"),
    "daps": Solver(daps, paper="DAPS: Zhang, Chu, Berner, Meng, Anandkumar & Song, CVPR 2025, Alg. 1"),
    "ddnm": Solver(ddnm, paper="DDNM+: Wang, Yu & Zhang, ICLR 2023, SVD form (DDNM at sigma_y = 0)"),
    "pnp_dm": Solver(pnp_dm, paper="PnP-DM: Wu, Sun, Chen, Zhang, Yue & Bouman, NeurIPS 2024, Alg. 1"),
}

RUNNER_ARGS = {"prior", "op", "y", "sigmas", "sigma_y", "generators", "iters", "x_init"}


def get_solver(name: str, hp: dict | None = None) -> Callable:
    """The registered solver ``name`` with its fixed settings and the user's ``hp`` bound;
    an unknown name or hyper-parameter raises UserError naming it."""
    if name not in SOLVERS:
        raise UserError(f"unknown solver {name!r}; registered: {', '.join(SOLVERS)}")
    spec = SOLVERS[name]
    params = set(inspect.signature(spec.fn).parameters) - RUNNER_ARGS
    for key in hp or {}:
        if key not in params:
            raise UserError(f"solver {name}: unknown hyper-parameter {key!r}; "
                            f"accepted: {', '.join(sorted(params)) or 'none'}")
    bound = {**spec.hp, **(hp or {})}

    def solve(prior, op, y, sigmas, **kwargs):
        return spec.fn(prior, op, y, sigmas, **kwargs, **bound)

    return solve
