"""``mapbench list {solvers,tasks,priors}``: the registered names, one a line."""
from __future__ import annotations


def _names(kind: str) -> list[str]:
    if kind == "solvers":
        from mapbench.solvers import SOLVERS
        return list(SOLVERS)
    if kind == "tasks":
        from mapbench.operators import TASKS
        return list(TASKS)
    from mapbench.priors import PRIORS
    return list(PRIORS)


def run(args) -> int:
    print("\n".join(_names(args.kind)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("list", help="print registered names, one a line")
    p.add_argument("kind", choices=["solvers", "tasks", "priors"])
    p.set_defaults(func=run)
