"""Counting network evaluations (mapbench.nfe.Counted) where C is built from an ODE of D: what a
run counts is what the networks themselves see (forward hooks), and what the search plans
(mapbench.select.counted_calls with the prior's c_forwards) is what the run counts."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from mapbench.operators import get_operator
from mapbench.priors.learned import LearnedPrior
from mapbench.runner import Job, run_batch
from mapbench.select import counted_calls
from mapbench.train.networks import ARCHS, build


def network_calls(net) -> Counter:
    """Forward calls of ``net`` and backward passes through their outputs, counted by hooks."""
    calls = Counter()

    def hook(module, args, out):
        calls["forward"] += 1
        if out.requires_grad:
            out.register_hook(lambda grad: calls.update(["backward"]))

    net.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("distilled", [False, True], ids=["ode_C", "distilled_C"])
def test_counted_forwards_and_vjps_are_the_network_calls(distilled, one_thread):
    """MAP-GA (C with VJPs, D for the prior term) on a tiny edm_unet prior: with the "ode" C of
    two Heun steps every call of C is four denoiser forwards (and a VJP through it four), with a
    distilled C one forward of its own network."""
    torch.manual_seed(0)
    nets = [build(n, ARCHS["tiny"]).eval().requires_grad_(False)
            for n in ("denoiser", "consistency")[:1 + distilled]]
    prior = LearnedPrior(nets[0], nets[1] if distilled else None, ode_steps=2)
    assert prior.c_forwards == (1 if distilled else 4)
    hooks = [network_calls(net) for net in nets]
    job = Job("map_ga", "half", 0.0, 2, 2, "noise", 0, {})
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, m = run_batch(prior, get_operator("half", 8), x0, ["00000", "00001"], job, oracle=False)
    calls = sum(hooks, Counter())
    measured = (calls["forward"], calls["backward"])
    assert (int(m["nfe"][0]), int(m["vjp"][0])) == measured
    assert counted_calls("map_ga", 2, 2, 0.0, "noise", "{}", prior.c_forwards) == measured
