# Solvers from another library as a rule: deepinv's DPS and DiffPIR (deepinv.sampling.DPS,
# deepinv.sampling.DiffPIR; pip install 'mapbench[peer]'), run with deepinv's own settings on the
# prior's denoiser (workflow/scripts/deepinv_solver.py). Switched on by config blocks naming this
# file:
#
#   solvers:
#     deepinv_dps: {rule: deepinv.smk, budgets: [[20, 1]], display: "DPS (deepinv)"}
#     deepinv_diffpir: {rule: deepinv.smk, budgets: [[60, 1]], display: "DiffPIR (deepinv)"}
#
# A setting's steps is deepinv's number of steps (DPS num_steps, default 1000; DiffPIR max_iter,
# default 100), its iters must be 1, its hp (a block's hp or grid) are keyword arguments of
# deepinv's class (e.g. grid: {weight: [0.5, 1.0]} for DPS). Like every solver it writes a Parquet
# shard of per-image rows (mapbench.shards.COLUMNS, with nfe, vjp, cost counted around the prior)
# and an .npz of the restored images, for the images of split {split} at setting {setting}.

DEEPINV = ("deepinv_dps", "deepinv_diffpir")
_DEEPINV_NAMES = [n for n, f in RULE_SOLVERS.items() if f == "deepinv.smk"]
for _n in _DEEPINV_NAMES:
    if _n not in DEEPINV:
        _fail(f"solvers.{_n}: deepinv.smk provides {', '.join(DEEPINV)}, not {_n!r}")
    if [s for s in SETTINGS[_n].values() if s.iters != 1]:
        _fail(f"solvers.{_n}.budgets: deepinv's algorithms have no inner iterations: "
              "iters must be 1")
    if config["solvers"][_n].get("starts", ["noise"]) != ["noise"]:
        _fail(f"solvers.{_n}.starts: deepinv's algorithms start from noise only")


rule solve_deepinv:
    input:
        unpack(solve_inputs),
    output:
        shard=SHARD,
        images=IMAGES,
    params:
        n_val=lambda w: config["datasets"][w.dataset]["n_val"],
        n_images=lambda w: config["datasets"][w.dataset]["n_images"],
        steps=lambda w: SETTINGS[w.solver][w.setting].steps,
        iters=lambda w: SETTINGS[w.solver][w.setting].iters,
        hp=lambda w: SETTINGS[w.solver][w.setting].hp,
        kind=lambda w: config["priors"][w.prior]["kind"],
        vjp_weight=COST["vjp_weight"],
        seed=config["seed"],
    wildcard_constraints:
        solver=_alternatives(_DEEPINV_NAMES),
    threads: 1
    resources:
        mem_mb=resource("solve", "mem_mb", 2000),
        runtime=resource("solve", "runtime", 30),
        gpu=0,
    conda:
        "../envs/mapbench.yaml"
    log:
        f"{R}/logs/solve/{PATH}.log",
    benchmark:
        f"{R}/benchmarks/solve/{PATH}.tsv"
    script:
        "../scripts/deepinv_solver.py"
