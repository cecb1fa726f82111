"""``mapbench list {solvers,tasks,priors}``: the registered names; for solvers also the paper each
implements and its cost, measured here.

Cost: a run with ``steps`` S and ``iters`` I is taken to cost ``fixed + per_step S + per_iter S I``
network forward evaluations, and likewise VJPs (``per_iter`` counts each of the S x I inner
iterations). The coefficients are solved from the counts of runs at the budgets (2, 1), (3, 1) and
(2, 2), and checked at (4, 1) and (3, 2); a count not of this form is listed as such, not fitted.
A solver that takes only ``iters = 1`` (its budget is its steps) gets ``fixed + per_step S``. The
counts are those the protocol caps compute with (``mapbench.select.counted_calls``: each solver
run on one image with ``mapbench.nfe.Counted`` around a stand-in network) at sigma_y = 0.1.
"""
from __future__ import annotations

import textwrap

from mapbench.errors import UserError

SIGMA_Y = 0.1

DESCRIPTION = ("The registered solvers (with the paper each implements and its cost in network "
               "forward evaluations and VJPs), tasks (measurement operators) or priors.")
COST_NOTE = ("Cost of a run with S steps and I iters, per image, at sigma_y > 0: per step, per "
             "inner iteration (S x I of them) and fixed. Measured when listed: each solver is run "
             "at a few budgets on one image, its network calls counted (mapbench.nfe.Counted).")


def _fit(n21: int, n31: int, n22: int | None) -> tuple[float, float, float | None]:
    """(fixed, per_step, per_iter) through the counts at (2, 1), (3, 1) and (2, 2) (``n22`` None:
    a solver of ``iters = 1`` only, whose per-iteration cost is part of its per-step cost)."""
    per_iter = None if n22 is None else (n22 - n21) / 2
    per_step = n31 - n21 - (per_iter or 0)
    return n21 - 2 * per_step - 2 * (per_iter or 0), per_step, per_iter


def cost(name: str) -> dict[str, tuple | None]:
    """``{"nfe": (fixed, per_step, per_iter), "vjp": ...}`` of solver ``name`` as measured (see the
    module docstring): ``per_iter`` None where the solver takes only ``iters = 1``; a whole entry
    None where the counts do not follow the form."""
    from mapbench.select import counted_calls

    def counts(steps, iters):
        return counted_calls(name, steps, iters, SIGMA_Y, "noise")

    runs = {b: counts(*b) for b in [(2, 1), (3, 1)]}
    try:
        runs[(2, 2)] = counts(2, 2)
    except UserError as e:       # "iters must be 1": its budget is its steps
        if "iters must be 1" not in str(e):
            raise
    runs.update({b: counts(*b) for b in [(4, 1), (3, 2)] if (2, 2) in runs or b[1] == 1})
    out = {}
    for k, key in enumerate(("nfe", "vjp")):
        n = {b: r[k] for b, r in runs.items()}
        fixed, per_step, per_iter = coef = _fit(n[(2, 1)], n[(3, 1)], n.get((2, 2)))
        predicted = {b: fixed + per_step * b[0] + (per_iter or 0) * b[0] * b[1] for b in n}
        exact = all(c is None or float(c).is_integer() for c in coef)
        out[key] = (tuple(None if c is None else int(c) for c in coef)
                    if exact and predicted == n else None)
    return out


def formula(coef: tuple | None) -> str:
    """``a/step + b/iter + c fixed`` (zero terms left out)."""
    if coef is None:
        return "irregular"
    fixed, per_step, per_iter = coef
    terms = [f"{per_step}/step" if per_step else "", f"{per_iter}/iter" if per_iter else "",
             f"{fixed} fixed" if fixed else ""]
    return " + ".join(t for t in terms if t) or "0"


def solver_table() -> str:
    from mapbench.solvers import SOLVERS
    rows = [("solver", "forward evaluations", "VJPs", "paper")]
    for name, spec in SOLVERS.items():
        c = cost(name)
        rows.append((name, formula(c["nfe"]), formula(c["vjp"]), spec.paper or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join(lines + ["", textwrap.fill(COST_NOTE, 100)])


def run(args) -> int:
    if args.kind == "solvers" and not args.names:
        print(solver_table())
    elif args.kind == "solvers":
        from mapbench.solvers import SOLVERS
        print("\n".join(SOLVERS))
    elif args.kind == "tasks":
        from mapbench.operators import TASKS
        print("\n".join(TASKS))
    else:
        from mapbench.priors import PRIORS
        print("\n".join(PRIORS))
    return 0


def register(sub) -> None:
    p = sub.add_parser("list", help="registered solvers (paper, measured cost), tasks or priors",
                       description=DESCRIPTION, epilog=COST_NOTE)
    p.add_argument("kind", choices=["solvers", "tasks", "priors"])
    p.add_argument("--names", action="store_true", help="names only, one a line (solvers)")
    p.set_defaults(func=run)
