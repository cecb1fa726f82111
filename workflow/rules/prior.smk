# Priors: the Gaussian mixture is fitted from the dataset's training split; other kinds
# (checkpoint: published weights the user supplies; edm_unet: trained by workflow/rules/train.smk;
# gmm_nets: a fitted mixture's oracle with networks trained on its draws, train.smk) get a small
# spec file naming their files.


rule fit_prior:
    input:
        data=lambda w: dataset_file(prior_dataset(w.prior)),
    output:
        f"{R}/priors/{{prior}}.pt",
    params:
        mb=MAPBENCH,
        components=lambda w: config["priors"][w.prior]["components"],
        rank=lambda w: config["priors"][w.prior]["rank"],
        seed=lambda w: config["priors"][w.prior]["seed"],
        extra=lambda w: cli_flags(config["priors"][w.prior], ("limit", "iters", "ode_steps")),
    wildcard_constraints:
        prior=_alternatives(fit_priors()),
    threads: resource("fit_prior", "threads", 2)
    resources:
        mem_mb=resource("fit_prior", "mem_mb", 4000),
        runtime=resource("fit_prior", "runtime", 30),
        gpu=resource("fit_prior", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/fit_prior/{{prior}}.log",
    benchmark:
        f"{R}/benchmarks/fit_prior/{{prior}}.tsv"
    shell:
        "{params.mb} fit-prior --data {input.data} --threads {threads} "
        "--components {params.components} --rank {params.rank} --seed {params.seed} "
        "{params.extra} --out {output} > {log} 2>&1"


rule prior_spec:
    input:
        lambda w: list(spec_files(w.prior).values()),
    output:
        f"{R}/priors/{{prior}}.json",
    params:
        spec=lambda w: prior_spec(w.prior),
    wildcard_constraints:
        prior=_alternatives(spec_priors()),
    priority: 2  # the learned prior's search (the run's longest chain) waits for it
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/prior_spec/{{prior}}.log",
    shell:
        "printf '%s\\n' {params.spec:q} > {output} 2> {log}"


rule require_file:
    output:
        f"{R}/missing/{{name}}.txt",
    params:
        path=lambda w: MISSING[w.name][0],
        where=lambda w: MISSING[w.name][1],
    wildcard_constraints:
        name=_alternatives(MISSING) if MISSING else "(?!x)x",
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/missing/{{name}}.log",
    shell:
        "echo 'mapbench: missing input file {params.path} (named in the config at {params.where}); "
        "provide it or change the config' | tee {log} >&2; exit 1"
