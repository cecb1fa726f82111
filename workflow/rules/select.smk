# The selection: every cell's setting, chosen on the validation images alone (mapbench.select).
# aggregate_val gathers the validation search (and, where a prior is selected by an evaluate
# metric such as LPIPS, its validation evaluate shards); the checkpoint `select` writes
# choices.parquet (.json, .md), where a prior with `settings_from` (no search of its own) has a
# copy of its source prior's row per cell (select_options passes its cells). The test runs
# (solve.smk) are planned from it, but none takes it as an input: a new choice file re-runs only
# the test runs whose choice changed (their files are named by it), and test results cannot reach
# the choice.


localrules:
    aggregate_val,
    select,


rule aggregate_val:
    input:
        [path_of(SHARD, j) for j in VAL_JOBS],
        eval_outputs(["val"]),
    output:
        f"{R}/selection/val_metrics.parquet",
    message:
        "aggregate: the validation search into {output}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/aggregate_val.log",
    script:
        "../scripts/aggregate.py"


checkpoint select:
    input:
        f"{R}/selection/val_metrics.parquet",
    output:
        parquet=CHOICES,
        json=CHOICES.replace(".parquet", ".json"),
        md=CHOICES.replace(".parquet", ".md"),
    params:
        mb=MAPBENCH,
        options=select_options(),
    message:
        "select: each cell's setting on the validation images -> {output.md}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/select.log",
    shell:
        "{params.mb} select --metrics {input} --options {params.options:q} "
        "--out {output.parquet} > {log} 2>&1"
