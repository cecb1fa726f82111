"""``mapbench`` with timestamps, for bench_workflow.py: ``python timed_cli.py MARKS.json <mapbench
args>`` runs the command line as ``python -m mapbench.cli`` does and writes, in seconds since the
launch (env ``MAPBENCH_LAUNCH``: the parent's ``time.time()`` just before it started the job):
``main`` (interpreter up), ``run`` (command line parsed: every command module imported),
``first_step`` (the first solver call: data, prior and oracle MAPs loaded) and ``end``."""
import json
import os
import sys
import time

T0 = float(os.environ.get("MAPBENCH_LAUNCH", time.time()))
marks = {"main": time.time() - T0}

from mapbench.commands import solve  # noqa: E402  (the CLI imports it too)

solve_run = solve.run


def run(args):
    marks["run"] = time.time() - T0
    from mapbench import runner
    run_batch = runner.run_batch

    def first(*a, **kw):
        marks.setdefault("first_step", time.time() - T0)
        return run_batch(*a, **kw)

    runner.run_batch = first
    return solve_run(args)


solve.run = run
from mapbench import cli  # noqa: E402

rc = cli.main(sys.argv[2:])
marks["end"] = time.time() - T0
with open(sys.argv[1], "w") as f:
    json.dump(marks, f)
sys.exit(rc)
