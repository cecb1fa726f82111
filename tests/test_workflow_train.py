"""The learned prior through the workflow: with its checkpoints missing, the workflow trains the
EDM denoiser and distils the consistency model (a few steps: a smoke-train), checks the prior by
sampling (grid + FID per sampler), and runs solvers on it with both the distilled and the "ode"
consistency function; with the checkpoints present, nothing is trained."""
from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest

from tests.test_workflow import ROOT, job_counts, snakemake, tiny_config, write_config

WEIGHTS = os.environ.get("MAPBENCH_WEIGHTS") or str(ROOT / ".cache" / "weights")


def learned_config(work, denoiser, consistency):
    return tiny_config(
        priors={"edm": {"kind": "edm_unet", "denoiser": str(denoiser), "consistency": str(consistency)},
                "edm_ode": {"kind": "edm_unet", "denoiser": str(denoiser), "ode_steps": 2,
                            "solvers": ["map_ga"]}},
        solvers={"map_ga": {"budgets": [[2, 1]], "sigma_y": [0.0]}, "dps": {"budgets": [[3, 1]]}},
        sigma_y=[0.0, 0.1],
        train={"denoiser": {"steps": 3, "batch_size": 8, "warmup": 1, "limit": 64, "checkpoint_every": 2},
               "consistency": {"steps": 2, "batch_size": 8, "limit": 64, "N": 4},
               "sample": {"n_samples": 4, "heun_steps": 2}},
        evaluate={"enabled": False, "weights_dir": WEIGHTS},
        select={"metric": "psnr"},   # without evaluate there is no LPIPS to select a learned prior's setting by
        cost={"cap": 40},   # map_ga s2_i1 on edm_ode: C is 2 ode_steps = 4 network forwards (34 per image)
        tables={"metrics": ["psnr", "ssim"], "bootstrap_resamples": 50},
        figures={"noiseless": {"tasks": ["box50"], "solvers": ["map_ga"]},
                 "noisy": {"tasks": ["box50"], "solvers": ["dps"]}},
        results=str(work / "results"))


@pytest.mark.slow
def test_missing_checkpoints_are_trained_then_used(tmp_path):
    missing = tmp_path / "ckpt"
    path = write_config(tmp_path, learned_config(tmp_path, missing / "denoiser.pt", missing / "consistency.pt"))
    r = snakemake("--cores", "2", "--configfile", str(path), cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-5000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train_denoiser"] == 1 and counts["distill_consistency"] == 1  # once, shared by both priors
    assert counts["sample_prior"] == 2
    results = tmp_path / "results"
    trained = results / "train" / "fm"
    log = json.loads((trained / "denoiser.json").read_text())["training"]
    assert log["config"]["steps"] == 3 and math.isfinite(log["final_loss"])
    assert json.loads((trained / "consistency.json").read_text())["training"]["N"] == 4
    spec = json.loads((results / "priors" / "edm.json").read_text())
    assert spec == {"kind": "edm_unet", "denoiser": str(trained / "denoiser.pt"),
                    "consistency": str(trained / "consistency.pt")}
    assert json.loads((results / "priors" / "edm_ode.json").read_text())["ode_steps"] == 2
    samples = json.loads((results / "priors" / "edm" / "samples.json").read_text())["samplers"]
    assert set(samples) == {"heun", "cm1", "cm2"}
    assert all(math.isfinite(s["fid"]) and s["n"] == 4 for s in samples.values())
    assert set(json.loads((results / "priors" / "edm_ode" / "samples.json").read_text())["samplers"]) == {"heun"}
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert set(zip(metrics["prior"], metrics["solver"])) == {
        ("edm", "map_ga"), ("edm", "dps"), ("edm_ode", "map_ga")}
    assert metrics.loc[metrics["metric"] == "psnr", "value"].notna().all()

    # the same config with the trained files in place as its checkpoints: nothing is trained
    path = write_config(tmp_path, learned_config(tmp_path, trained / "denoiser.pt", trained / "consistency.pt"))
    r = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert "train_denoiser" not in counts and "distill_consistency" not in counts
