# Aggregation, tables, plots and figures. Cheap: run on the submitting host.
localrules:
    all,
    prior_spec,
    require_file,
    aggregate_metrics,
    make_tables,
    make_plots,
    make_figures,
    tables,


rule aggregate_metrics:
    input:
        solve_outputs(SHARD) + eval_outputs(),
    output:
        f"{R}/metrics.parquet",
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/aggregate_metrics.log",
    script:
        "../scripts/aggregate.py"


rule make_tables:
    input:
        f"{R}/metrics.parquet",
    output:
        TABLES,
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_tables.log",
    shell:
        "{params.mb} tables --metrics {input} --options {params.options:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule make_plots:
    input:
        f"{R}/metrics.parquet",
    output:
        PLOTS,
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_plots.log",
    shell:
        "{params.mb} plots --metrics {input} --options {params.options:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule make_figures:
    input:
        metrics=f"{R}/metrics.parquet",
        images=figure_images(),
        data=[dataset_file(d) for d in config["datasets"]],
    output:
        FIGURES,
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_figures.log",
    shell:
        "{params.mb} figures --metrics {input.metrics} --images {input.images} "
        "--options {params.options:q} --out-dir {params.out_dir} > {log} 2>&1"


# `snakemake tables`: rebuild every table, plot and figure from the shards present (globbed),
# running no solver. It has no output, so it runs whenever it is asked for.
rule tables:
    params:
        mb=MAPBENCH,
        options=report_options(),
        shards=f"{R}/shards",
        images_root=f"{R}/images",
        metrics=f"{R}/metrics.parquet",
        tables=f"{R}/tables",
        plots=f"{R}/plots",
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/tables.log",
    shell:
        "( {params.mb} aggregate --root {params.shards} --out {params.metrics} && "
        "{params.mb} tables --metrics {params.metrics} --options {params.options:q} --out-dir {params.tables} && "
        "{params.mb} plots --metrics {params.metrics} --options {params.options:q} --out-dir {params.plots} && "
        "{params.mb} figures --metrics {params.metrics} --images-root {params.images_root} "
        "--options {params.options:q} --out-dir {params.plots} ) > {log} 2>&1"
