"""``mapbench tables``: the paper's LaTeX tables (and ablation, oracle) from a metrics table."""
from __future__ import annotations

import json


def load_options(text: str | None) -> dict:
    """``--options``: a JSON object (as the workflow passes it) or a path to a JSON/YAML file."""
    from pathlib import Path

    import yaml

    from mapbench.errors import UserError
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--options: not valid JSON ({e})") from None
    if not Path(text).is_file():
        raise UserError(f"--options: no such file {text}")
    return yaml.safe_load(Path(text).read_text()) or {}


def run(args) -> int:
    from mapbench import aggregate, tables

    opts = tables.Options.from_dict(load_options(args.options).get("tables"))
    df = aggregate.read(args.metrics)
    for path in tables.write_all(df, opts, args.out_dir):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("tables", help="write the LaTeX tables from results/metrics.parquet")
    p.add_argument("--metrics", required=True, help="aggregated metrics .parquet")
    p.add_argument("--options", help="JSON (or a JSON/YAML file) with a `tables:` section")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)
