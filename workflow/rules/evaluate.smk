# Image-quality metrics of the restored images: one job per (dataset, prior, task) with
# `batch: task`, else per (dataset, prior, task, sigma_y, start) (EVAL_KEYS), so the networks and
# reference features load once per group. Per-image rows (psnr, ssim, lpips) and
# set-level rows (fid, fid_n; image_id "") for every (solver, steps, iters) set of the group.


rule fetch_weights:
    output:
        f"{WEIGHTS_DIR}/manifest.json",
    params:
        mb=MAPBENCH,
        dir=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/fetch_weights.log",
    shell:
        "{params.mb} fetch-weights --dir {params.dir} > {log} 2>&1"


rule evaluate:
    input:
        images=group_images,
        data=lambda w: dataset_file(w.dataset),
        weights=f"{WEIGHTS_DIR}/manifest.json",
    output:
        EVAL,
    params:
        mb=MAPBENCH,
        metrics=" ".join(config["evaluate"]["metrics"]),
        reference_cache=f"{R}/cache/fid_reference",
        weights=lambda w, input: os.path.dirname(input.weights),
        device=config["device"],
    threads: resource("evaluate", "threads", 1)
    resources:
        mem_mb=resource("evaluate", "mem_mb", 4000),
        runtime=resource("evaluate", "runtime", 60),
        gpu=resource("evaluate", "gpu", 0),
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/evaluate/{EVAL_PATH}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{EVAL_PATH}.tsv"
    shell:
        "{params.mb} evaluate --data {input.data} --images {input.images} "
        "--metrics {params.metrics} --weights-dir {params.weights} "
        "--reference-cache {params.reference_cache} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"
