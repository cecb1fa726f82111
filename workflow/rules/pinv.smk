# A solver as a rule: the pseudo-inverse baseline x_hat = H^+ y (for the masks: the observed
# pixels, zeros elsewhere). Switched on by a config block with `rule: pinv.smk`:
#
#   solvers:
#     pinv: {rule: pinv.smk, budgets: [[1, 1]], starts: [noise]}
#
# Any command can stand here (another repository's code, another language) as long as it writes
# the two outputs in the contract of `mapbench solve` (README, "Adding a solver"): a Parquet shard
# of tidy per-image rows (mapbench.shards.COLUMNS) and an .npz of the restored images, for the
# images of split {split} (mapbench.data.split_ids) at setting {setting} (its steps and iters:
# SETTINGS in common.smk), with the per-image cost rows nfe, vjp, cost.


rule solve_pinv:
    input:
        unpack(solve_inputs),
    output:
        shard=SHARD.replace("{solver}", "pinv"),
        images=IMAGES.replace("{solver}", "pinv"),
    params:
        n_val=lambda w: config["datasets"][w.dataset]["n_val"],
        n_images=lambda w: config["datasets"][w.dataset]["n_images"],
        steps=lambda w: SETTINGS["pinv"][w.setting].steps,
        iters=lambda w: SETTINGS["pinv"][w.setting].iters,
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=resource("solve", "mem_mb", 2000),
        runtime=resource("solve", "runtime", 30),
        gpu=0,
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/solve/{PATH}.log".replace("{solver}", "pinv"),
    benchmark:
        f"{R}/benchmarks/solve/{PATH}.tsv".replace("{solver}", "pinv")
    script:
        "../scripts/pinv.py"
