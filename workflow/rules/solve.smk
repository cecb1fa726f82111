# `mapbench solve` runs, each writing a Parquet shard and the restored images of one cell
# (dataset, prior, task, sigma_y, start, solver), split and setting (common.smk):
# - the validation search: every setting of every cell on the validation images,
#   .../{solver}/val/{setting}.parquet;
# - the test runs, planned through the checkpoint `select` (select.smk): each cell's chosen
#   setting on the test images.
# With `batch: job` each run is a job (rule solve), its test file .../{solver}/test/{setting}.parquet.
# With `batch: group`, `task` or `prior` one `mapbench solve --runs` process per (dataset, prior,
# task, sigma_y, start), (dataset, prior, task) or (dataset, prior) runs all of its Python-solver
# runs (the same shards, one start-up: `import torch` alone is ~2.5 s): one for the search
# (solve_val_*) and one for the test runs (solve_test_*). A grouped test process writes
# .../{solver}/test/{tag}.parquet, its tag a fingerprint of the choices of all its cells, so
# a changed choice re-runs the test process that holds it and no other; the price of the
# grouping is that the other cells of that process run again too. A prior's own `batch` overrides
# the top-level one for its runs.
# Solvers provided by a rule file (config `solvers.<name>.rule`) are included at the end; they
# write the same two files for their own solver name, one job per run.


rule oracle:
    input:
        data=lambda w: dataset_file(w.dataset),
        prior=lambda w: prior_file(w.prior),
    output:
        ORACLE,
    params:
        mb=MAPBENCH,
        n_images=lambda w: config["datasets"][w.dataset]["n_val"] + config["datasets"][w.dataset]["n_images"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    wildcard_constraints:
        prior=_alternatives(fit_priors()),
    threads: resource("solve", "threads", 1)
    priority: 1  # the mixture prior's search waits for all of them
    resources:
        mem_mb=resource("solve", "mem_mb", 2000),
        runtime=resource("solve", "runtime", 30),
        gpu=0,
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/oracle/{{dataset}}/{{prior}}/{{task}}/sy{{sigma_y}}.log",
    benchmark:
        f"{R}/benchmarks/oracle/{{dataset}}/{{prior}}/{{task}}/sy{{sigma_y}}.tsv"
    shell:
        "{params.mb} oracle --data {input.data} --prior {input.prior} --task {wildcards.task} "
        "--sigma-y {wildcards.sigma_y} --n-images {params.n_images} --batch-size {params.batch_size} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule solve:
    input:
        unpack(solve_inputs),
    output:
        shard=SHARD,
        images=IMAGES,
    params:
        mb=MAPBENCH,
        splits=lambda w: split_flags(w.dataset),
        steps=lambda w: SETTINGS[w.solver][w.setting].steps,
        iters=lambda w: SETTINGS[w.solver][w.setting].iters,
        batch_size=config["batch_size"],
        seed=config["seed"],
        device=config["device"],
        hp=hp_args,
        oracle=oracle_flag,
        kind=lambda w: config["priors"][w.prior]["kind"],
    wildcard_constraints:
        solver=_alternatives(PY_SOLVERS),
        prior=_alternatives(p for p in config["priors"] if batch_of(p) == "job"),
    threads: resource("solve", "threads", 1)
    resources:
        mem_mb=resource("solve", "mem_mb", 2000),
        runtime=resource("solve", "runtime", 30),
        gpu=resource("solve", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/solve/{PATH}.log",
    benchmark:
        f"{R}/benchmarks/solve/{PATH}.tsv"
    shell:
        "{params.mb} solve --data {input.data} --dataset {wildcards.dataset} "
        "--prior {input.prior} --prior-name {wildcards.prior} --prior-kind {params.kind} --task {wildcards.task} "
        "--sigma-y {wildcards.sigma_y} --solver {wildcards.solver} --steps {params.steps} "
        "--iters {params.iters} --setting {wildcards.setting} --start {wildcards.start} "
        "--split {wildcards.split} {params.splits} "
        "--batch-size {params.batch_size} --seed {params.seed} --device {params.device} "
        "--threads {threads} {params.oracle} {params.hp} --out {output.shard} --images-out {output.images} "
        "> {log} 2>&1"


# The runs reach the process on stdin (printf is a shell builtin): the mixture prior's search is
# ~500 runs, a JSON longer than one command-line argument may be (128 KiB on Linux).
SOLVE_GROUP = ("printf '%s' {params.runs:q} | {params.mb} solve --data {input.data} "
               "--dataset {params.w[dataset]} --prior {input.prior} --prior-name {params.w[prior]} "
               "--prior-kind {params.kind} {params.splits} --batch-size {params.batch_size} "
               "--seed {params.seed} --device {params.device} --threads {threads} "
               "--runs - > {log} 2>&1")

# The validation search: one process per batch group, its files known now.
for _w, _jobs in batch_groups(VAL_JOBS):
    _name = re.sub(r"\W", "_", "_".join(["solve_val", *_w.values()]))
    _path = key_path(_w).format(**_w)

    rule:
        name:
            _name
        input:
            **group_inputs(_jobs),
        output:
            [path_of(SHARD, j) for j in _jobs] + [path_of(IMAGES, j) for j in _jobs],
        params:
            mb=MAPBENCH,
            w=_w,
            runs=runs_json(_jobs),
            splits=split_flags(_w["dataset"]),
            batch_size=config["batch_size"],
            seed=config["seed"],
            device=config["device"],
            kind=config["priors"][_w["prior"]]["kind"],
        threads: resource("solve", "threads", 1)
        priority: 1  # the long solve processes first; evaluate and the sample check fill the gaps
        resources:
            mem_mb=resource("solve", "mem_mb", 2000),
            runtime=resource("solve", "runtime", 30) * len(_jobs),
            gpu=resource("solve", "gpu", 0),
        conda:
            "../envs/mapbench.yaml"
        log:
            f"{R}/logs/solve_val/{_path}.log",
        benchmark:
            f"{R}/benchmarks/solve_val/{_path}.tsv"
        shell:
            SOLVE_GROUP


# The test runs: one process per batch group, its files named by the tag of its choices
# (wildcard; the runs come from the choices, see test_group_runs in common.smk).
for _w, _cells in batch_groups(CELLS):
    _name = re.sub(r"\W", "_", "_".join(["solve_test", *_w.values()]))
    _path = key_path(_w).format(**_w)

    rule:
        name:
            _name
        input:
            **group_inputs(_cells),
        output:
            [f"{R}/{kind}/{CELL_PATH.format(**c)}/test/{{tag}}.{ext}" for kind, ext in
             (("shards/solve", "parquet"), ("images", "npz")) for c in _cells],
        params:
            mb=MAPBENCH,
            w=_w,
            runs=test_group_runs(_name),
            splits=split_flags(_w["dataset"]),
            batch_size=config["batch_size"],
            seed=config["seed"],
            device=config["device"],
            kind=config["priors"][_w["prior"]]["kind"],
        wildcard_constraints:
            tag=TAG,
        threads: resource("solve", "threads", 1)
        priority: 1
        resources:
            mem_mb=resource("solve", "mem_mb", 2000),
            runtime=resource("solve", "runtime", 30) * len(_cells),
            gpu=resource("solve", "gpu", 0),
        conda:
            "../envs/mapbench.yaml"
        log:
            f"{R}/logs/solve_test/{_path}/{{tag}}.log",
        benchmark:
            f"{R}/benchmarks/solve_test/{_path}/{{tag}}.tsv"
        shell:
            SOLVE_GROUP


for _rule_file in dict.fromkeys(RULE_SOLVERS.values()):
    include: _rule_file
