# Config validation, registry checks, the job list and path helpers. Included first.
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from mapbench.errors import UserError
from mapbench.metrics import METRICS
from mapbench.metrics.fid import SET_METRICS
from mapbench.priors import ORACLE_KINDS
from mapbench.select import CELL, counted_cost, search_space

min_version("8.0")

RULES_DIR = Path(workflow.current_basedir)  # workflow/rules


def _fail(msg):
    raise WorkflowError(f"config error: {msg}")


def _check_schema():
    """One line naming the offending key; snakemake's validate then fills in the defaults."""
    import jsonschema
    import yaml

    schema = yaml.safe_load((RULES_DIR.parent / "schemas" / "config.schema.yaml").read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        _fail(f"{where}: {error.message} (see workflow/schemas/config.schema.yaml)")


_check_schema()
validate(config, schema="../schemas/config.schema.yaml")
R = config["results"].rstrip("/")

# The mapbench CLI: the Python that runs snakemake (a venv need not be on PATH), or, with
# --software-deployment-method conda, the environment's python (workflow/envs/mapbench.yaml).
_CONDA = "conda" in str(getattr(workflow.deployment_settings, "deployment_method", "")).lower()
MAPBENCH = "python -m mapbench.cli" if _CONDA else f"{shlex.quote(sys.executable)} -m mapbench.cli"


def _check_registries():
    """Every name in the config must be registered; fails before any job runs, naming it."""
    from mapbench.operators import ALIASES, TASKS
    from mapbench.priors import PRIORS
    from mapbench.solvers import SOLVERS, get_solver

    for task in config["tasks"]:
        if task not in TASKS and task not in ALIASES:
            _fail(f"tasks: unknown task {task!r}; registered: {', '.join(TASKS)}")
    config["tasks"] = list(dict.fromkeys(ALIASES.get(t, t) for t in config["tasks"]))
    for name, p in config["priors"].items():
        if p["kind"] != "gmm" and p["kind"] not in PRIORS:
            _fail(f"priors.{name}.kind: unknown prior kind {p['kind']!r}; "
                  f"registered: {', '.join(dict.fromkeys(['gmm', *PRIORS]))}")
        if p.get("dataset") and p["dataset"] not in config["datasets"]:
            _fail(f"priors.{name}.dataset: {p['dataset']!r} is not a configured dataset "
                  f"({', '.join(config['datasets'])})")
        if "tasks" in p:
            p["tasks"] = [ALIASES.get(t, t) for t in p["tasks"]]
        for key, allowed in (("solvers", config["solvers"]), ("tasks", config["tasks"])):
            unknown = [v for v in p.get(key, []) if v not in allowed]
            if unknown:
                _fail(f"priors.{name}.{key}: {unknown} not in the configured {key}")
        if p["kind"] == "checkpoint" and not (p.get("path") or p.get("denoiser")):
            _fail(f"priors.{name}: a checkpoint prior needs `denoiser` (and `consistency`) or `path`")
    for name, s in config["solvers"].items():
        if "rule" in s:
            if name in SOLVERS:
                _fail(f"solvers.{name}: `rule` given but {name!r} is a registered Python solver; "
                      "rename the rule solver")
            if not (RULES_DIR / s["rule"]).is_file():
                _fail(f"solvers.{name}.rule: no rule file workflow/rules/{s['rule']}")
        elif name not in SOLVERS:
            _fail(f"solvers: unknown solver {name!r}; registered: {', '.join(SOLVERS)} "
                  "(or give `rule:` for a solver provided by a rule file)")
        try:
            for setting in search_space(s):
                if "rule" not in s:
                    get_solver(name, setting.hp)
        except UserError as e:
            _fail(f"solvers.{name}: {e}")
        cap = config.get("budget_cap")
        for steps, iters in s["budgets"] if cap else []:
            if steps * iters > cap:
                _fail(f"solvers.{name}.budgets: [{steps}, {iters}] is steps x iters = "
                      f"{steps * iters}, over budget_cap {cap}")
        extra = set(s.get("sigma_y", [])) - set(config["sigma_y"])
        if extra:
            _fail(f"solvers.{name}.sigma_y: {sorted(extra)} not in the top-level sigma_y "
                  f"{config['sigma_y']}")


_check_registries()


def _check_mixture_nets():
    """A gmm_nets prior: the oracle of its `mixture`, a configured gmm prior (by default on that
    prior's dataset); its networks train under {R}/train/<mixture>/, a name no dataset may have.
    `settings_from` (any prior) names another prior that searches its own settings."""
    for name, p in config["priors"].items():
        source = p.get("settings_from")
        if source is not None and (source == name or source not in config["priors"]
                                   or "settings_from" in config["priors"][source]):
            _fail(f"priors.{name}.settings_from: {source!r} is not another configured prior "
                  "that searches its own settings")
        if p["kind"] != "gmm_nets":
            continue
        mixture = config["priors"].get(p.get("mixture"), {})
        if mixture.get("kind") != "gmm":
            _fail(f"priors.{name}.mixture: {p.get('mixture')!r} is not a configured gmm prior "
                  f"({', '.join(n for n, q in config['priors'].items() if q['kind'] == 'gmm')})")
        if p["mixture"] in config["datasets"]:
            _fail(f"priors.{name}.mixture: {p['mixture']!r} is also a dataset's name; rename the "
                  f"prior (their networks would share {R}/train/{p['mixture']}/)")
        if mixture.get("dataset"):
            p.setdefault("dataset", mixture["dataset"])


_check_mixture_nets()


def sy(value):
    """sigma_y as it appears in paths (the {sigma_y} wildcard): 0.0, 0.05, 0.1."""
    return repr(float(value))


# ---------------------------------------------------------------------------- the protocol
# Every cell (dataset, prior, task, sigma_y, start, solver) searches its solver's settings
# (budgets x grid, mapbench.select) on the validation images; the checkpoint `select`
# (select.smk) chooses one per cell; the test images run the chosen setting only.
PY_SOLVERS = [n for n, s in config["solvers"].items() if "rule" not in s]
RULE_SOLVERS = {n: s["rule"] for n, s in config["solvers"].items()
                if "rule" in s and s.get("enabled", True)}
COST = config["cost"]
SETTINGS = {name: {s.name: s for s in search_space(block)}
            for name, block in config["solvers"].items()}


def _cells():
    """Every cell of the config: dicts of strings, as in paths. A prior's and a solver's own
    `tasks` (and the solver's `sigma_y`, `starts`) restrict the cells of that prior and solver."""
    from mapbench.operators import ALIASES

    cells = []
    for solver, s in config["solvers"].items():
        tasks = [ALIASES.get(t, t) for t in s.get("tasks", config["tasks"])]
        unknown = [t for t in tasks if t not in config["tasks"]]
        if unknown:
            _fail(f"solvers.{solver}.tasks: {unknown} not in the configured tasks {config['tasks']}")
        if not s.get("enabled", True):
            continue
        for dataset in config["datasets"]:
            for prior, p in config["priors"].items():
                if p.get("dataset", dataset) != dataset or solver not in p.get("solvers", [solver]):
                    continue
                for task in (t for t in p.get("tasks", config["tasks"]) if t in tasks):
                    for sigma in s.get("sigma_y", config["sigma_y"]):
                        for start in s.get("starts", ["noise"]):
                            if start == "warm" and float(sigma) != 0:
                                continue  # the paper's Table 2 is noiseless only
                            cells.append(dict(dataset=dataset, prior=prior, task=task,
                                              sigma_y=sy(sigma), start=start, solver=solver))
    return cells


def _search(cell):
    """The settings a cell searches: its solver's (with `search.<prior>`, that prior's subset of
    them), at most cost.cap forward-equivalents each (on its prior: a learned prior without a
    distilled C pays its ODE's forwards per call of C)."""
    from mapbench.priors.learned import ODE_STEPS, c_forwards

    solver, prior = cell["solver"], cell["prior"]
    block, settings = config["solvers"][solver], list(SETTINGS[solver].values())
    own = block.get("search", {})
    if unknown := sorted(set(own) - set(config["priors"])):
        _fail(f"solvers.{solver}.search: {unknown} not in the configured priors")
    if prior in own:
        try:
            names = [s.name for s in search_space({**block, **own[prior]})]
        except UserError as e:
            _fail(f"solvers.{solver}.search.{prior}: {e}")
        if extra := [n for n in names if n not in SETTINGS[solver]]:
            _fail(f"solvers.{solver}.search.{prior}: {extra} not in the solver's budgets x grid")
        settings = [s for s in settings if s.name in names]
    if COST["cap"] is None or cell["solver"] in RULE_SOLVERS:
        return settings
    p = config["priors"][cell["prior"]]
    c = (c_forwards(bool(p.get("consistency")), p.get("ode_steps", ODE_STEPS))
         if p["kind"] in ("edm_unet", "gmm_nets") else 1)
    try:
        costs = {s.name: counted_cost(cell["solver"], s, float(cell["sigma_y"]), cell["start"],
                                      COST["vjp_weight"], c) for s in settings}
    except UserError as e:
        _fail(f"solvers.{cell['solver']}: {e}")
    kept = [s for s in settings if costs[s.name] <= COST["cap"]]
    if not kept:
        _fail(f"solvers.{cell['solver']}: every setting costs more than cost.cap {COST['cap']:g} "
              f"forward-equivalents per image on prior {cell['prior']} (C: {c} network forwards "
              f"per call) at sigma_y {cell['sigma_y']}, start {cell['start']} "
              f"(cheapest: {min(costs.values()):g})")
    return kept


def chosen_from(cell):
    """The cell whose chosen setting a cell runs (CELL values): its own, or for a prior with
    `settings_from` (no search of its own: the same algorithm on other networks) that prior's."""
    source = config["priors"][cell["prior"]].get("settings_from", cell["prior"])
    return tuple(source if k == "prior" else cell[k] for k in CELL)


CELLS = _cells()
SEARCH = {tuple(c[k] for k in CELL): _search(c) for c in CELLS
          if "settings_from" not in config["priors"][c["prior"]]}
for _c in CELLS:
    if chosen_from(_c) not in SEARCH:
        _fail(f"priors.{_c['prior']}.settings_from: no searched cell "
              f"{dict(zip(CELL, chosen_from(_c)))} to take the setting from (restrict this "
              "prior's tasks or solvers to those it has)")


def job(cell, split, setting, stem=None):
    """One solve run: its cell, split, setting (a mapbench.select.Setting) and the stem of its
    files (the setting's name; a grouped test process's tag, see test_jobs)."""
    return dict(cell, split=split, setting=setting.name, steps=str(setting.steps),
                iters=str(setting.iters), stem=stem or setting.name)


VAL_JOBS = [job(c, "val", s) for c in CELLS for s in SEARCH.get(tuple(c[k] for k in CELL), [])]

CELL_PATH = "{dataset}/{prior}/{task}/sy{sigma_y}/{start}/{solver}"
PATH = f"{CELL_PATH}/{{split}}/{{setting}}"
# The keys one process covers: `batch: group` / `task` / `prior` solve processes, and evaluate
# jobs (per (dataset, prior, task) with `batch: task` or `prior`, else per GROUP_KEYS).
GROUP_KEYS = ["dataset", "prior", "task", "sigma_y", "start"]
TASK_KEYS = ["dataset", "prior", "task"]
BATCH_KEYS = {"group": GROUP_KEYS, "task": TASK_KEYS, "prior": ["dataset", "prior"]}
EVAL_KEYS = TASK_KEYS if config["batch"] in ("task", "prior") else GROUP_KEYS


def key_path(keys):
    """The path pattern of a set of keys (sigma_y as `sy{sigma_y}`)."""
    return os.path.join(*("sy{sigma_y}" if k == "sigma_y" else f"{{{k}}}" for k in keys))


EVAL_PATH = key_path(EVAL_KEYS)
SHARD = f"{R}/shards/solve/{PATH}.parquet"
IMAGES = f"{R}/images/{PATH}.npz"
EVAL = f"{R}/shards/eval/{EVAL_PATH}/{{split}}.parquet"
CHOICES = f"{R}/selection/choices.parquet"
TABLES = [f"{R}/tables/{n}" for n in ["table1_noiseless.tex", "table2_warmstart.tex",
                                        "table3_noisy.tex", "ablation.tex", "oracle.tex",
                                        "all_tables.tex"]]
FIGURES = [f"{R}/plots/{n}.png" for n in ["masks", "restored_noiseless", "restored_noisy"]]
WEIGHTS_DIR = os.path.expanduser(config["evaluate"]["weights_dir"]).rstrip("/")
TAG = r"g[0-9a-f]{10}"   # the file stem of a grouped test process's shards


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in dict.fromkeys(values)) or "(?!x)x"


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    prior=_alternatives(config["priors"]),
    task=_alternatives(config["tasks"]),
    sigma_y=_alternatives(sy(s) for s in config["sigma_y"]),
    start="noise|warm",
    split="val|test",
    setting=r"s\d+_i\d+[A-Za-z0-9_.+-]*",


def path_of(pattern, j):
    """The file of a run: ``pattern`` (SHARD, IMAGES) with the run's stem as its setting."""
    return pattern.format(**{**j, "setting": j["stem"]})


# ---------------------------------------------------------------------------- the choice
def select_metric(prior):
    """The per-image metric that chooses a prior's settings: `select.metric`, or with `auto` the
    exact oracle's log-posterior gap where it applies and LPIPS elsewhere."""
    metric = config["select"]["metric"]
    if metric == "auto":
        return "logpost_gap" if config["priors"][prior]["kind"] in ORACLE_KINDS else "lpips"
    return metric


def eval_selects(prior):
    """Whether a prior's selection metric comes from `mapbench evaluate` (psnr: solve has it too)."""
    return select_metric(prior) in METRICS and select_metric(prior) != "psnr"


def _check_selection():
    for prior in config["priors"]:
        metric = select_metric(prior)
        if metric in SET_METRICS:
            _fail(f"select.metric: {metric} is a set-level metric; settings are chosen by a "
                  "per-image metric (e.g. logpost_gap, lpips, psnr)")
        if eval_selects(prior) and not (config["evaluate"]["enabled"]
                                        and metric in config["evaluate"]["metrics"]):
            _fail(f"select.metric: prior {prior} is selected by {metric}, which `evaluate` does "
                  f"not compute (evaluate.enabled and evaluate.metrics)")


_check_selection()


def select_options():
    """`mapbench select --options`: the metric per prior, the cost cap, each setting's hp, and
    per prior with `settings_from` its source and its cells (their rows copy the source's)."""
    inherits = {p: {"prior": q["settings_from"],
                    "cells": [[c[k] for k in CELL if k != "prior"]
                              for c in CELLS if c["prior"] == p]}
                for p, q in config["priors"].items() if "settings_from" in q}
    return json.dumps({"metric": {p: select_metric(p) for p in config["priors"]},
                       "cap": COST["cap"],
                       "space": {name: {k: s.hp for k, s in settings.items()}
                                 for name, settings in SETTINGS.items()},
                       "settings_from": inherits})


def _read_choices(path):
    import pandas as pd

    frame = pd.read_parquet(path, columns=CELL + ["setting"])
    frame["sigma_y"] = [sy(v) for v in frame["sigma_y"]]
    return {tuple(r[:-1]): r[-1] for r in frame.itertuples(index=False, name=None)}


_CHOICES_READ = {}   # the choices file, read once per version (its mtime)


def chosen_settings(checkpoint=True):
    """Cell (CELL values, as strings) -> the chosen setting's name: the cell's row of the choices
    (for a prior with `settings_from`, the copy `select` makes of its source's row), the row its
    reported test rows are kept by. With ``checkpoint``, through the checkpoint `select`: until
    its output is current the caller waits for it, except in a dry run, which plans the test jobs
    from the choices on disk (and, where there are none yet, each cell's first setting), so
    `snakemake -n` lists them."""
    from snakemake.exceptions import IncompleteCheckpointException

    dry = False
    if checkpoint:
        try:
            checkpoints.select.get()
        except IncompleteCheckpointException:
            if not workflow.dryrun:
                raise
            dry = True
    chosen = {}
    if os.path.exists(CHOICES):
        stamp = os.stat(CHOICES).st_mtime_ns
        if _CHOICES_READ.get("stamp") != stamp:
            _CHOICES_READ.update(stamp=stamp, choices=_read_choices(CHOICES))
        chosen = _CHOICES_READ["choices"]
    out = {}
    for cell in CELLS:
        key = tuple(cell[k] for k in CELL)
        names = [s.name for s in SEARCH[chosen_from(cell)]]
        if chosen.get(key) in names:
            out[key] = chosen[key]
        elif dry:
            out[key] = names[0]
        else:
            raise WorkflowError(f"{CHOICES} has no choice among the searched settings for "
                                f"{dict(zip(CELL, key))}; delete it to choose again")
    return out


TEST_GROUPS = {}   # (rule name, tag) -> the runs of a grouped test process (see test_jobs)


def test_group_name(cell):
    """The grouped test process of a cell (None: the cell's test run is a job of its own)."""
    mode = batch_of(cell["prior"])
    if cell["solver"] not in PY_SOLVERS or mode == "job":
        return None
    return re.sub(r"\W", "_", "_".join(["solve_test", *(cell[k] for k in BATCH_KEYS[mode])]))


def test_jobs(chosen):
    """The test runs of the chosen settings. A cell whose test run is a job of its own writes
    ``.../{solver}/test/{setting}.parquet``. The cells of a grouped test process (`batch` group,
    task or prior: one process, one start-up) write ``.../{solver}/test/{tag}.parquet``, where the
    tag fingerprints the choices of all of its cells: a changed choice re-runs that process only."""
    runs, groups = [], {}
    for cell in CELLS:
        key = tuple(cell[k] for k in CELL)
        run = job(cell, "test", SETTINGS[cell["solver"]][chosen[key]])
        runs.append(run)
        if name := test_group_name(cell):
            groups.setdefault(name, []).append(run)
    for name, members in groups.items():
        digest = hashlib.sha1(json.dumps(sorted((path_of(CELL_PATH, r), r["setting"])
                                                for r in members)).encode()).hexdigest()
        for r in members:
            r["stem"] = f"g{digest[:10]}"
        TEST_GROUPS[(name, members[0]["stem"])] = members
    return runs


def test_group_runs(name):
    """The `--runs` JSON of a grouped test process, for its tag (wildcard)."""

    def runs(wildcards):
        members = TEST_GROUPS.get((name, wildcards.tag))
        if members is None:   # a fresh process (a cluster job): from the choices on disk
            test_jobs(chosen_settings(checkpoint=False))
            members = TEST_GROUPS.get((name, wildcards.tag))
        if members is None:
            raise WorkflowError(f"{name}: no test runs with tag {wildcards.tag}; the choices in "
                                f"{CHOICES} changed since it was planned: run the workflow again")
        return runs_json(members)

    return runs


def test_files(pattern, keep=None):
    """A function (an input of rules) giving the files of the chosen test runs (through the
    checkpoint), optionally only those ``keep(run)`` accepts."""
    return lambda wildcards: [path_of(pattern, r) for r in test_jobs(chosen_settings())
                              if keep is None or keep(r)]


def solve_outputs(pattern):
    """Every run's file: the validation search's, and (a function, through the checkpoint) the
    chosen test runs'."""
    return [path_of(pattern, j) for j in VAL_JOBS] + [test_files(pattern)]


def val_eval_priors():
    """The priors whose validation images are evaluated: those searching their own settings by
    an evaluate metric."""
    return [p for p, q in config["priors"].items() if eval_selects(p) and "settings_from" not in q]


def eval_outputs(splits=("val", "test")):
    """One evaluate shard per EVAL_KEYS group and split of the job list."""
    if not config["evaluate"]["enabled"]:
        return []
    groups = dict.fromkeys(tuple(c[k] for k in EVAL_KEYS) for c in CELLS)
    return [EVAL.format(split=split, **dict(zip(EVAL_KEYS, g))) for split in splits for g in groups
            if split == "test" or g[EVAL_KEYS.index("prior")] in val_eval_priors()]


def group_images(wildcards):
    """Every restored-image file of one evaluate group and split."""
    def mine(j):
        return all(j[k] == getattr(wildcards, k) for k in EVAL_KEYS)

    if wildcards.split == "val":
        return [path_of(IMAGES, j) for j in VAL_JOBS if mine(j)]
    return test_files(IMAGES, mine)(wildcards)


# ---------------------------------------------------------------------------- user-supplied files
# A file the config names (a dataset, a checkpoint) is a real input when it exists. When it does
# not, the job depends on a `require_file` marker instead: the dry run still lists every job, and
# the run stops at the first job that needs the file, with a message naming it and the config key.
MISSING = {}


def user_file(path, where):
    path = os.path.expanduser(str(path))
    if os.path.exists(path):
        return path
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", where)
    MISSING[name] = (path, where)
    return f"{R}/missing/{name}.txt"


def dataset_file(dataset):
    """A dataset's .npz: the configured file when it exists; else, with a `fetch:` block, the one
    rule fetch_data makes; else a `require_file` marker."""
    d = config["datasets"][dataset]
    if d.get("fetch") and not os.path.exists(os.path.expanduser(d["path"])):
        return f"{R}/data/{dataset}.npz"
    return user_file(d["path"], f"datasets.{dataset}.path")


def fetched_datasets():
    return [n for n, d in config["datasets"].items() if d.get("fetch")]


def prior_dataset(prior):
    return config["priors"][prior].get("dataset") or next(iter(config["datasets"]))


def fit_priors():
    return [n for n, p in config["priors"].items() if p["kind"] == "gmm" and not p.get("path")]


def spec_priors():
    return [n for n, p in config["priors"].items() if p["kind"] != "gmm" and not p.get("path")]


def prior_file(prior):
    """What `mapbench solve --prior` gets: a fitted .pt, a user file, or a checkpoint spec."""
    p = config["priors"][prior]
    if p.get("path"):
        return user_file(p["path"], f"priors.{prior}.path")
    if p["kind"] == "gmm":
        return f"{R}/priors/{prior}.pt"
    return f"{R}/priors/{prior}.json"


# ---------------------------------------------------------------------------- trained priors
# The workflow trains the networks of edm_unet priors on their dataset's images and those of
# gmm_nets priors on exact draws of their mixture (rule sample_mixture). A network's `source`
# names its training set (the dataset, or the mixture prior) and its directory {R}/train/<source>/.
TRAINED_KINDS = ("edm_unet", "gmm_nets")
TRAINED = f"{R}/train/{{source}}/{{network}}.pt"
DRAWS = f"{R}/train/{{source}}/draws.npz"
SAMPLES = f"{R}/priors/{{prior}}/samples"
NETWORK_ERROR = f"{R}/priors/{{prior}}/network_error"


def learned_priors():
    return [n for n, p in config["priors"].items() if p["kind"] == "edm_unet"]


def trained_priors():
    return [n for n, p in config["priors"].items() if p["kind"] in TRAINED_KINDS]


def network_source(prior):
    """What a prior's networks are trained on: its mixture's draws (gmm_nets), else its dataset."""
    p = config["priors"][prior]
    return p["mixture"] if p["kind"] == "gmm_nets" else prior_dataset(prior)


def network_sources():
    return list(dict.fromkeys(network_source(n) for n in trained_priors()))


def mixture_sources():
    return list(dict.fromkeys(p["mixture"] for p in config["priors"].values()
                              if p["kind"] == "gmm_nets"))


def network_file(prior, key):
    """A prior's `denoiser` / `consistency` file: the configured file when it exists. For an
    edm_unet or gmm_nets prior, a configured file that is missing (and an unset `denoiser`) is
    trained by the workflow into {R}/train/<source>/; for other kinds a missing file stops the
    run, named."""
    p = config["priors"][prior]
    path = p.get(key)
    missing = not os.path.exists(os.path.expanduser(path)) if path else key == "denoiser"
    if p["kind"] in TRAINED_KINDS and missing:
        return TRAINED.format(source=network_source(prior), network=key)
    return user_file(path, f"priors.{prior}.{key}") if path else None


def training_data(source):
    """A source's training set: the mixture's draws, or the dataset's file."""
    return DRAWS.format(source=source) if source in mixture_sources() else dataset_file(source)


def train_settings(source, network):
    """A source's training settings of `network` (denoiser, consistency): `train.gmm_nets.<network>`
    for a mixture's draws, else `train.<network>`."""
    return (config["train"]["gmm_nets"] if source in mixture_sources() else config["train"])[network]


def teacher(source):
    """The denoiser a source's consistency model is distilled from: its first prior's."""
    return next(network_file(n, "denoiser") for n in trained_priors() if network_source(n) == source)


def trained_networks():
    """(source, network) of every network the priors with trained networks name (`snakemake
    train` makes them)."""
    return list(dict.fromkeys((network_source(n), key) for n in trained_priors()
                              for key in ("denoiser", "consistency")
                              if key == "denoiser" or config["priors"][n].get("consistency")))


def cli_flags(settings, keys=None):
    """Config settings as `mapbench` CLI flags: `--key value`, a bare `--key` for true; keys whose
    value is null or false are left out (the command's default applies)."""
    flags = []
    for key, value in settings.items():
        if (keys is not None and key not in keys) or value is None or value is False:
            continue
        text = value if isinstance(value, str) else json.dumps(value)   # a dict as JSON
        flags.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {shlex.quote(text)}"))
    return " ".join(flags)


def sample_inputs(wildcards):
    return {"prior": prior_file(wildcards.prior), "data": dataset_file(prior_dataset(wildcards.prior)),
            "weights": f"{WEIGHTS_DIR}/manifest.json"}


def sample_outputs():
    """The checks of trained networks: the sample check of edm_unet priors, the network error
    against the exact networks of gmm_nets priors."""
    return ([f"{SAMPLES.format(prior=n)}.{ext}" for n in learned_priors() for ext in ("png", "json")]
            + [f"{NETWORK_ERROR.format(prior=n)}.{ext}" for n in mixture_net_priors() for ext in ("png", "json")])


def mixture_net_priors():
    return [n for n, p in config["priors"].items() if p["kind"] == "gmm_nets"]


def has_oracle(prior, task):
    """The exact oracle covers Gaussian-mixture priors and networks trained on one (every
    registered operator)."""
    return config["priors"][prior]["kind"] in ORACLE_KINDS


ORACLE = f"{R}/oracle/{{dataset}}/{{prior}}/{{task}}/sy{{sigma_y}}.npz"


def oracle_file(dataset, prior, task, sigma_y, **_):
    """The exact MAPs of one (task, sigma_y), shared by all solvers and by the gmm_nets priors of
    the mixture (the same measurements, the same MAPs); None where no oracle applies."""
    if has_oracle(prior, task):
        p = config["priors"][prior]
        mixture = p["mixture"] if p["kind"] == "gmm_nets" else prior
        return ORACLE.format(dataset=dataset, prior=mixture, task=task, sigma_y=sigma_y)
    return None


def inputs_of(dataset, prior, task, sigma_y, **_):
    """data, prior, and (where the oracle applies) the exact MAPs shared by all solvers."""
    inputs = {"data": dataset_file(dataset), "prior": prior_file(prior)}
    if oracle := oracle_file(dataset, prior, task, sigma_y):
        inputs["oracle_map"] = oracle
    return inputs


def solve_inputs(wildcards):
    return inputs_of(**dict(wildcards.items()))


def batch_of(prior):
    """A prior's batch mode: its own `batch`, else the top-level one."""
    return config["priors"][prior].get("batch", config["batch"])


def batch_groups(runs):
    """[(keys -> values, runs)]: the Python-solver runs of priors not batched per job, by the keys
    of their batch mode (group, task or prior); each group is one `mapbench solve --runs` process."""
    out = {}
    for j in runs:
        mode = batch_of(j["prior"])
        if j["solver"] in PY_SOLVERS and mode != "job":
            out.setdefault(tuple((k, j[k]) for k in BATCH_KEYS[mode]), []).append(j)
    return [(dict(group), members) for group, members in out.items()]


def group_inputs(jobs):
    """data and prior (one per group) and the exact MAPs of every (task, sigma_y) of one `--runs`
    process (each run names its own in the `--runs` JSON)."""
    oracles = list(dict.fromkeys(f for job in jobs if (f := oracle_file(**job))))
    return {"data": dataset_file(jobs[0]["dataset"]), "prior": prior_file(jobs[0]["prior"]),
            "oracle_maps": oracles}


def runs_json(jobs):
    """The `--runs` JSON of one process: each run's solver, setting, task, sigma_y, start, split,
    files."""
    return json.dumps([{"solver": j["solver"], "steps": int(j["steps"]), "iters": int(j["iters"]),
                        "task": j["task"], "sigma_y": float(j["sigma_y"]), "start": j["start"],
                        "split": j["split"], "setting": j["setting"],
                        "hp": SETTINGS[j["solver"]][j["setting"]].hp,
                        "oracle_map": oracle_file(**j),
                        "out": path_of(SHARD, j), "images_out": path_of(IMAGES, j)} for j in jobs])


def split_flags(dataset):
    """`mapbench solve` flags: a dataset's splits and the cost's VJP weight."""
    d = config["datasets"][dataset]
    return f"--n-val {d['n_val']} --n-images {d['n_images']} --vjp-weight {COST['vjp_weight']}"


def oracle_flag(wildcards, input):
    return f"--oracle-map {shlex.quote(input.oracle_map)}" if "oracle_map" in input.keys() else ""


def spec_files(prior):
    """The files a prior's spec names: its networks and, for gmm_nets, its mixture's fitted file."""
    p = config["priors"][prior]
    files = {"mixture": prior_file(p["mixture"])} if p["kind"] == "gmm_nets" else {}
    files.update((key, f) for key in ("denoiser", "consistency") if (f := network_file(prior, key)))
    return files


def prior_spec(prior):
    """The JSON spec `mapbench solve --prior` reads for a checkpoint, learned or gmm_nets prior
    (absolute paths; networks without `consistency` get `ode_steps` Heun steps of the PF-ODE as C)."""
    p = config["priors"][prior]
    spec = {"kind": p["kind"], **{key: os.path.abspath(os.path.expanduser(f))
                                  for key, f in spec_files(prior).items()}}
    if p["kind"] in TRAINED_KINDS and p.get("ode_steps"):
        spec["ode_steps"] = p["ode_steps"]
    return json.dumps(spec)


def resource(rule_name, key, default):
    return config.get("resources", {}).get(rule_name, {}).get(key, default)


def report_options():
    """The layout options the report commands read (tables, plots, figures, display names).
    ``figures.image_index`` counts test images: the image shown is test-array image n_val + index."""
    tables = dict(config["tables"])
    display = {n: s["display"] for n, s in config["solvers"].items() if "display" in s}
    tables["display"] = {**display, **tables.get("display", {})}
    tables.setdefault("tasks", list(config["tasks"]))
    datasets = {n: {k: d[k] for k in ("path", "n_val", "n_images")} for n, d in config["datasets"].items()}
    first = next(iter(config["datasets"].values()))
    figures = {**config["figures"], "image_index": first["n_val"] + config["figures"]["image_index"]}
    return json.dumps({"tables": tables, "plots": config["plots"], "figures": figures,
                       "datasets": datasets, "seed": config["seed"],
                       "select": {p: select_metric(p) for p in config["priors"]}})


def hp_args(wildcards):
    hp = SETTINGS[wildcards.solver][wildcards.setting].hp
    if not hp:
        return ""
    return "--hp " + " ".join(shlex.quote(f"{k}={json.dumps(v)}") for k, v in hp.items())


# Ablation plots (a metric against (steps, iters)) and Pareto plots (against the cost), both of
# the validation search. `mapbench plots` writes the Pareto PNGs too (PARETO_PNGS: report items).
PLOTS = [f"{R}/plots/ablation_{m}.{ext}" for m in config["plots"]["metrics"] for ext in ("png", "pdf")]
PLOTS += [f"{R}/plots/pareto_{m}.pdf" for m in config["plots"]["metrics"]]
PARETO_PNGS = [f"{R}/plots/pareto_{m}.png" for m in config["plots"]["metrics"]]


def figure_images(wildcards=None):
    """A function giving the restored test images the figures show (configured solvers and tasks
    that are in the run, at their chosen settings)."""
    figs = config["figures"]
    want = [(t, s, sy(figs[k]["sigma_y"])) for k in ("noiseless", "noisy")
            for t in figs[k]["tasks"] for s in figs[k]["solvers"]]
    return test_files(IMAGES, lambda j: j["start"] == "noise"
                      and (j["task"], j["solver"], j["sigma_y"]) in want)


# Register every user-supplied file now, so rule require_file knows them at parse time.
for _d in config["datasets"]:
    dataset_file(_d)
for _p in config["priors"]:
    prior_file(_p)
    for _k in ("denoiser", "consistency"):
        network_file(_p, _k)
