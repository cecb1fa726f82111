# Image-quality metrics of the restored images: one job per split and (dataset, prior, task) with
# `batch: task`, else per (dataset, prior, task, sigma_y, start) (EVAL_KEYS), so the networks and
# reference features load once per group. Per-image rows (psnr, ssim, lpips) and, on the test
# images only, set-level rows (fid, fid_n; image_id "") for every restored set of the group. The
# validation images are evaluated where a prior's settings are chosen by an evaluate metric
# (select.metric; LPIPS on a learned prior), per-image metrics only.


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
        metrics=lambda w: " ".join(m for m in config["evaluate"]["metrics"]
                                   if w.split == "test" or m not in SET_METRICS),
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
        f"{R}/logs/evaluate/{EVAL_PATH}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{EVAL_PATH}/{{split}}.tsv"
    shell:
        "{params.mb} evaluate --data {input.data} --images {input.images} "
        "--metrics {params.metrics} --weights-dir {params.weights} "
        "--reference-cache {params.reference_cache} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"
