# One job per (dataset, prior, task, sigma_y, start, solver, steps, iters): `mapbench solve` on
# the first n test images, writing a Parquet shard and the restored images. With `batch: group`
# one job per (dataset, prior, task, sigma_y, start), with `batch: task` one per (dataset, prior,
# task), with `batch: prior` one per (dataset, prior), runs all of its Python-solver keys in one
# process (`mapbench solve --runs`; the same shards, less start-up cost on small runs). A prior's
# own `batch` overrides the top-level one for its jobs.
# Solvers provided by a rule file (config `solvers.<name>.rule`) are included at the end; they
# write the same two files for their own solver name.


rule oracle:
    input:
        data=lambda w: dataset_file(w.dataset),
        prior=lambda w: prior_file(w.prior),
    output:
        ORACLE,
    params:
        mb=MAPBENCH,
        n_images=lambda w: config["datasets"][w.dataset]["n_images"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    wildcard_constraints:
        prior=_alternatives(fit_priors()),
    threads: resource("solve", "threads", 1)
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
        n_images=lambda w: config["datasets"][w.dataset]["n_images"],
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
        "--sigma-y {wildcards.sigma_y} --solver {wildcards.solver} --steps {wildcards.steps} "
        "--iters {wildcards.iters} --start {wildcards.start} --n-images {params.n_images} "
        "--batch-size {params.batch_size} --seed {params.seed} --device {params.device} "
        "--threads {threads} {params.oracle} {params.hp} --out {output.shard} --images-out {output.images} "
        "> {log} 2>&1"


for _w, _jobs in python_groups():
    _name = re.sub(r"\W", "_", "_".join(["solve_group", *_w.values()]))
    _path = key_path(_w).format(**_w)

    rule:
        name:
            _name
        input:
            **group_inputs(_jobs),
        output:
            [SHARD.format(**j) for j in _jobs] + [IMAGES.format(**j) for j in _jobs],
        params:
            mb=MAPBENCH,
            w=_w,
            runs=runs_json(_jobs),
            n_images=config["datasets"][_w["dataset"]]["n_images"],
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
            f"{R}/logs/solve_group/{_path}.log",
        benchmark:
            f"{R}/benchmarks/solve_group/{_path}.tsv"
        shell:
            "{params.mb} solve --data {input.data} --dataset {params.w[dataset]} "
            "--prior {input.prior} --prior-name {params.w[prior]} --prior-kind {params.kind} "
            "--n-images {params.n_images} --batch-size {params.batch_size} "
            "--seed {params.seed} --device {params.device} --threads {threads} "
            "--runs {params.runs:q} > {log} 2>&1"


for _rule_file in dict.fromkeys(RULE_SOLVERS.values()):
    include: _rule_file
