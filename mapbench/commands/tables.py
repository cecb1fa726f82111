"""``mapbench tables``: the papers' LaTeX tables (and the validation search, the oracle table) from
a metrics table, each with an HTML page beside it (``mapbench.tables``)."""
from __future__ import annotations

import json
from pathlib import Path


def load_options(text: str | None) -> dict:
    """``--options``: a JSON object (as the workflow passes it) or a path to a JSON/YAML file."""
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


def load_choices(choices: str | None, metrics: str):
    """``--choices``, else ``selection/choices.parquet`` beside the metrics file (the workflow's
    layout) when it is there, else None."""
    from mapbench.select import read_choices

    default = Path(metrics).parent / "selection" / "choices.parquet"
    if choices or default.is_file():
        return read_choices(choices or default)
    return None


def table_options(args):
    """``--options``' `tables:` section as ``mapbench.tables.Options``."""
    from mapbench import tables
    return tables.Options.from_dict(load_options(args.options).get("tables"))


def add_selection_args(p) -> None:
    """``--choices`` and ``--options``, which every report command reads."""
    p.add_argument("--choices", help="the chosen settings (default: selection/choices.parquet "
                   "beside the metrics file, when there)")
    p.add_argument("--options", help="JSON (or a JSON/YAML file) with a `tables:` section")


def print_and_write(markdown: str, write, out_dir) -> None:
    """Print a report table's Markdown; with ``out_dir``, ``write(out_dir)`` and the paths."""
    print(markdown, end="")
    for path in write(out_dir) if out_dir else []:
        print(path)


def run(args) -> int:
    from mapbench import aggregate, tables

    opts = table_options(args)
    df = aggregate.read(args.metrics)
    for path in tables.write_all(df, opts, args.out_dir, load_choices(args.choices, args.metrics)):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("tables", help="write the LaTeX (and HTML) tables from results/metrics.parquet")
    p.add_argument("--metrics", required=True, help="aggregated metrics .parquet")
    add_selection_args(p)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)
