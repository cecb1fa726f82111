# mapbench workflow: wiring only. The experiment is the config (config/README.md);
# the rules live in workflow/rules/. A --configfile replaces the default config as a whole
# (snakemake would otherwise deep-merge the two); --config key=value still overrides keys.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prior.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/solve.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/report.smk"


# Every shard and image file is a target too, so deleting one re-runs that job and what
# depends on it (snakemake ignores a missing intermediate file when its consumers are current).
# The test files come through the checkpoint `select`: the chosen settings' (common.smk).
rule all:
    input:
        solve_outputs(SHARD),
        solve_outputs(IMAGES),
        eval_outputs(),
        CHOICES,
        f"{R}/metrics.parquet",
        TABLES,
        PLOTS,
        FIGURES,
        sample_outputs(),
    default_target: True
