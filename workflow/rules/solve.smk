# One job per (dataset, prior, task, sigma_y, start, solver, steps, iters): `mapbench solve` on
# the first n test images, writing a Parquet shard and the restored images.
# Solvers provided by a rule file (config `solvers.<name>.rule`) are included at the end; they
# write the same two files for their own solver name.


rule solve:
    input:
        data=lambda w: dataset_file(w.dataset),
        prior=lambda w: prior_file(w.prior),
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
        kind=lambda w: config["priors"][w.prior]["kind"],
    wildcard_constraints:
        solver=_alternatives(PY_SOLVERS),
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
        "--threads {threads} {params.hp} --out {output.shard} --images-out {output.images} "
        "> {log} 2>&1"


for _rule_file in dict.fromkeys(RULE_SOLVERS.values()):
    include: _rule_file
