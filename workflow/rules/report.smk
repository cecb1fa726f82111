# Aggregation, tables, plots and figures (cheap: run on the submitting host), and what the HTML
# report shows: `snakemake --report results/report.html` (`make report`) collects every output
# marked report(...) here and in train.smk, with its caption from workflow/report/, and Snakemake's
# own runtime statistics of every job (its Statistics panel).
report: "../report/workflow.rst"


from mapbench.html import fid_summary  # the sample check's report labels (train.smk)


# The report items of the tables and figures: name -> labels (captions: workflow/report/<name>.rst).
# Each table's item is its HTML page, written beside its .tex (mapbench.html.write_beside). Another
# table of `mapbench tables` is one more line here; the claims table and the decomposition are
# made by rules of their own.
REPORT_TABLES = {
    "table1_noiseless": {"table": "Table 1: noiseless", "sigma_y": "0", "start": "noise"},
    "table2_warmstart": {"table": "Table 2: warm start", "sigma_y": "0", "start": "warm"},
    "table3_noisy": {"table": "Table 3: noisy", "sigma_y": "> 0", "start": "noise"},
    "oracle": {"table": "Exact oracle", "sigma_y": "all", "start": "noise"},
    "ablation": {"table": "Ablation: the validation search", "sigma_y": "all",
                 "start": "noise, warm"},
}
# The decomposition (mapbench.decomposition): each gmm_nets prior against its mixture's exact D, C.
PAIRS = " ".join(f"--pair {n}={p['mixture']}" for n, p in config["priors"].items()
                 if p["kind"] == "gmm_nets")
DECOMPOSITION = [f"{R}/tables/decomposition.{ext}" for ext in ("tex", "md")] if PAIRS else []
REPORT_FIGURES = {
    "masks": {"figure": "masks", "sigma_y": "-"},
    **{f"restored_{k}": {"figure": "restored images",
                         "sigma_y": f"{config['figures'][k]['sigma_y']:g}"}
       for k in ("noiseless", "noisy")},
}


localrules:
    all,
    prior_spec,
    require_file,
    aggregate_metrics,
    make_tables,
    make_claims,
    make_decomposition,
    make_plots,
    make_figures,
    tables,


rule aggregate_metrics:
    input:
        solve_outputs(SHARD) + eval_outputs(),
    output:
        f"{R}/metrics.parquet",
    message:
        "aggregate: every shard into {output}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/aggregate_metrics.log",
    script:
        "../scripts/aggregate.py"


# Tables 1-3 and the oracle table: the test images at the chosen settings (choices.parquet); the
# ablation table: the validation search. all_tables.tex inputs claims.tex (and the
# decomposition, where a gmm_nets prior runs) too.
rule make_tables:
    input:
        metrics=f"{R}/metrics.parquet",
        choices=CHOICES,
        claims=f"{R}/tables/claims.tex",
        decomposition=DECOMPOSITION,
    output:
        TABLES,
        [report(f"{R}/tables/{name}.html", caption=f"../report/{name}.rst", category="Tables",
                labels=labels) for name, labels in REPORT_TABLES.items()],
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    message:
        "tables: LaTeX and HTML under {params.out_dir}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_tables.log",
    shell:
        "{params.mb} tables --metrics {input.metrics} --choices {input.choices} "
        "--options {params.options:q} --out-dir {params.out_dir} > {log} 2>&1"


# The papers' claims (mapbench.claims), each confirmed, refuted or inconclusive on the test images.
rule make_claims:
    input:
        metrics=f"{R}/metrics.parquet",
        choices=CHOICES,
    output:
        f"{R}/tables/claims.tex",
        f"{R}/tables/claims.md",
        report(f"{R}/tables/claims.html", caption="../report/claims.rst", category="Tables",
               labels={"table": "Claims of the papers", "sigma_y": "all", "start": "noise, warm"}),
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    message:
        "claims: the papers' claims checked, under {params.out_dir}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_claims.log",
    shell:
        "{params.mb} claims {input.metrics} --choices {input.choices} "
        "--options {params.options:q} --out-dir {params.out_dir} > {log} 2>&1"


# The network's part of the oracle's gap: each gmm_nets prior's test runs against its mixture's
# at the same settings, on the same images (mapbench.decomposition).
rule make_decomposition:
    input:
        metrics=f"{R}/metrics.parquet",
        choices=CHOICES,
    output:
        DECOMPOSITION,
        report(f"{R}/tables/decomposition.html", caption="../report/decomposition.rst",
               category="Tables", labels={"table": "Decomposition: algorithm and network",
                                          "sigma_y": "all", "start": "noise, warm"}),
    params:
        mb=MAPBENCH,
        pairs=PAIRS,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    message:
        "decomposition: the algorithm's and the network's part of the oracle's gap, under {params.out_dir}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_decomposition.log",
    shell:
        "{params.mb} decomposition {input.metrics} {params.pairs} --choices {input.choices} "
        "--options {params.options:q} --out-dir {params.out_dir} > {log} 2>&1"


rule make_plots:
    input:
        f"{R}/metrics.parquet",
    output:
        [p for p in PLOTS if p.endswith(".pdf")],
        [report(f"{R}/plots/ablation_{m}.png", caption="../report/ablation_plot.rst",
                category="Ablation plots", labels={"metric": m})
         for m in config["plots"]["metrics"]],
        [report(p, caption="../report/pareto_plot.rst", category="Pareto plots",
                labels={"metric": m}) for p, m in zip(PARETO_PNGS, config["plots"]["metrics"])],
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    message:
        "plots: the ablation and Pareto plots of the validation search under {params.out_dir}"
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
        choices=CHOICES,
        images=figure_images(),
        data=[dataset_file(d) for d in config["datasets"]],
    output:
        [report(f"{R}/plots/{name}.png", caption=f"../report/{name}.rst", category="Figures",
                labels=labels) for name, labels in REPORT_FIGURES.items()],
    params:
        mb=MAPBENCH,
        options=report_options(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    message:
        "figures: masks and restored images under {params.out_dir}"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/make_figures.log",
    shell:
        "{params.mb} figures --metrics {input.metrics} --images {input.images} "
        "--options {params.options:q} --out-dir {params.out_dir} > {log} 2>&1"


# `snakemake tables`: rebuild every table, the claims, plot and figure from the shards present
# (globbed), running no solver; the commands read the choices beside the metrics. It has no
# output, so it runs whenever it is asked for.
rule tables:
    params:
        mb=MAPBENCH,
        options=report_options(),
        shards=f"{R}/shards",
        images_root=f"{R}/images",
        metrics=f"{R}/metrics.parquet",
        tables=f"{R}/tables",
        plots=f"{R}/plots",
        decomposition=(f"{MAPBENCH} decomposition {R}/metrics.parquet {PAIRS} --options "
                       f"{shlex.quote(report_options())} --out-dir {R}/tables && ") if PAIRS else "",
    message:
        "tables, claims, the decomposition, plots and figures from the shards present"
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/tables.log",
    shell:
        "( {params.mb} aggregate --root {params.shards} --out {params.metrics} && "
        "{params.mb} claims {params.metrics} --options {params.options:q} --out-dir {params.tables} && "
        "{params.decomposition}"
        "{params.mb} tables --metrics {params.metrics} --options {params.options:q} --out-dir {params.tables} && "
        "{params.mb} plots --metrics {params.metrics} --options {params.options:q} --out-dir {params.plots} && "
        "{params.mb} figures --metrics {params.metrics} --images-root {params.images_root} "
        "--options {params.options:q} --out-dir {params.plots} ) > {log} 2>&1"
