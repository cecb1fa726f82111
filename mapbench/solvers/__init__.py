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
from mapbench.solvers.ddrm import ddrm
from mapbench.solvers.diffpir import diffpir
from mapbench.solvers.dmplug import dmplug
from mapbench.solvers.dps import dps
from mapbench.solvers.map_ga import map_ga
from mapbench.solvers.map_ga_pgdm import map_ga_pgdm
from mapbench.solvers.pgdm import pgdm
from mapbench.solvers.red_diff import red_diff
from mapbench.solvers.vml_map import vml_map


@dataclass(frozen=True)
class Solver:
    fn: Callable
    hp: dict = field(default_factory=dict)   # fixed settings that define this registry entry


SOLVERS: dict[str, Solver] = {
    "map_ga": Solver(map_ga),
    "map_ga_np": Solver(map_ga, {"use_prior": False}),
    "map_ga_d": Solver(map_ga, {"network": "denoiser"}),
    "map_ga_d_np": Solver(map_ga, {"network": "denoiser", "use_prior": False}),
    "map_ga_pgdm": Solver(map_ga_pgdm),
    "map_ga_pgdm_d": Solver(map_ga_pgdm, {"network": "denoiser"}),
    "pgdm": Solver(pgdm),
    "map_ga_momentum": Solver(map_ga, {"optimizer": "momentum"}),
    "map_ga_adam": Solver(map_ga, {"optimizer": "adam"}),
    "vml_map": Solver(vml_map),
    "dps": Solver(dps),
    "ddrm": Solver(ddrm),
    "diffpir": Solver(diffpir),
    "red_diff": Solver(red_diff),
    "dmplug": Solver(dmplug),
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
