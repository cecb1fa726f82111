"""Rule aggregate_metrics: every shard of the run into results/metrics.parquet (in-process, so
the list of ~830 shards of the paper's grid never meets the shell's argument-length limit)."""
from mapbench import aggregate

frame = aggregate.collect(snakemake.input)  # noqa: F821
aggregate.write(frame, snakemake.output[0])  # noqa: F821
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(f"{len(snakemake.input)} shards, {len(frame)} rows -> {snakemake.output[0]}", file=log)  # noqa: F821
