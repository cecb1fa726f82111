"""``mapbench figures``: the masks figure (paper Fig. 1) and restored-image grids (Figs. 2-3)."""
from __future__ import annotations


def run(args) -> int:
    from pathlib import Path

    from mapbench import aggregate, figures
    from mapbench.commands.tables import load_choices, load_options

    options = load_options(args.options)
    paths = list(args.images or [])
    if args.images_root and Path(args.images_root).is_dir():
        paths += sorted(p for p in Path(args.images_root).rglob("*.npz") if not p.name.startswith("."))
    df, choices = None, None
    if args.metrics and Path(args.metrics).is_file():
        df, choices = aggregate.read(args.metrics), load_choices(None, args.metrics)
    for path in figures.write_all(df, paths, options, args.out_dir, choices):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("figures", help="write masks.png, restored_noiseless.png, restored_noisy.png")
    p.add_argument("--metrics", help="aggregated metrics .parquet (each solver at its chosen setting: "
                   "selection/choices.parquet beside it, when there)")
    p.add_argument("--images", nargs="*", help="restored-image .npz files")
    p.add_argument("--images-root", help="also every *.npz under this directory")
    p.add_argument("--options", required=True,
                   help="JSON (or a JSON/YAML file) with `datasets:`, `figures:`, `tables:`")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)
