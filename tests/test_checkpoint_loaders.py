"""Loaders for the published priors, on tiny random networks of the same architectures saved in the
published formats: an EDM-style persistence pickle (written here by our own writer, with the record
layout of torch_utils.persistence) and a plain state dict for the consistency model."""
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from mapbench.errors import UserError
from mapbench.nets import edm_unet
from mapbench.nets.edm_unet import EDMPrecond
from mapbench.nets.openai_unet import ConsistencyModel, UNetModel
from mapbench.priors import PRIORS, load_prior
from mapbench.priors.checkpoint import CheckpointPrior
from mapbench.priors.edm_adm import load_edm_pickle
from mapbench.priors.openai_cd import load_cd_state_dict

TINY_EDM = dict(img_resolution=8, img_channels=3, label_dim=10, use_fp16=True, sigma_min=0,
                sigma_max=float("inf"), sigma_data=0.5, model_type="DhariwalUNet", model_channels=16,
                channel_mult=[1, 4], num_blocks=1, attn_resolutions=[4], dropout=0.1)
TINY_CD = dict(image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=[4],
               channel_mult=[1, 2], num_classes=10, num_head_channels=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-zero weights everywhere (the zero-initialised output layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


@pytest.fixture
def reconstruct(monkeypatch):
    """A stand-in ``torch_utils.persistence._reconstruct_persistent_obj`` (importable, so pickle
    can name it); it must never be called by the loader."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader called the file's reconstruction function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return _reconstruct_persistent_obj


def write_edm_pickle(path, net, init_kwargs, reconstruct, protocol=4, module_src="# module source\n"):
    """Pickle ``{'ema': net, ...}`` as EDM does: every network module a persistence record
    ``_reconstruct_persistent_obj(dict(type='class', version=6, module_src, class_name, state))``
    with ``state`` its ``__dict__`` plus ``_init_args`` / ``_init_kwargs``; torch containers and
    tensors pickled normally; sub-modules' init kwargs carry numpy scalars, as EDM's do."""
    class Writer(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, nn.Module) and type(obj).__module__ == edm_unet.__name__:
                state = dict(obj.__dict__)
                state["_init_args"] = ()
                state["_init_kwargs"] = (dict(init_kwargs) if obj is net
                                         else {"init": {"init_weight": np.float64(np.sqrt(1 / 3))}})
                meta = dict(type="class", version=6, module_src=module_src,
                            class_name=type(obj).__name__, state=state)
                return reconstruct, (meta,)
            return NotImplemented

    data = dict(ema=net, loss_fn=None, augment_pipe=None,
                dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", use_labels=True))
    with open(path, "wb") as f:
        Writer(f, protocol=protocol).dump(data)


@pytest.fixture(scope="module")
def tiny_edm():
    torch.manual_seed(0)
    return randomize(EDMPrecond(**TINY_EDM))


@pytest.fixture(scope="module")
def tiny_cd():
    torch.manual_seed(0)
    return randomize(UNetModel(**TINY_CD))


def images(B=2, seed=1):
    return torch.randn(B, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.5


# --- EDM pickle ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4])
def test_edm_pickle_roundtrip_is_exact(tmp_path, tiny_edm, reconstruct, protocol):
    path = tmp_path / "net.pkl"
    write_edm_pickle(path, tiny_edm, TINY_EDM, reconstruct, protocol)
    loaded = load_edm_pickle(path)
    want, got = tiny_edm.state_dict(), loaded.state_dict()
    assert list(want) == list(got)
    assert all(torch.equal(want[k], got[k]) for k in want)
    x, labels = images(), torch.eye(10)[[3, 7]]
    for sigma in (0.05, 1.0, 40.0):
        assert torch.equal(loaded(x, sigma, labels), tiny_edm(x, sigma, labels))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_edm_pickle_module_source_is_never_executed(tmp_path, tiny_edm, reconstruct):
    marker = tmp_path / "pwned"
    path = tmp_path / "net.pkl"
    write_edm_pickle(path, tiny_edm, TINY_EDM, reconstruct,
                     module_src=f"open({str(marker)!r}, 'w').write('pwned')\n")
    load_edm_pickle(path)
    assert not marker.exists()


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _Exec:
    def __init__(self, src):
        self.src = src

    def __reduce__(self):
        return exec, (self.src,)


class _EvilStorage:
    """A storage record whose bytes are themselves a pickle that runs a command."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return torch.storage._load_from_bytes, (pickle.dumps(_System(self.cmd)),)


@pytest.mark.parametrize("payload", ["system", "exec", "storage", "hook"])
def test_malicious_pickle_is_refused_without_running(tmp_path, tiny_edm, reconstruct, payload):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    path = tmp_path / "evil.pkl"
    if payload == "system":
        obj = {"ema": _System(cmd)}
    elif payload == "exec":
        obj = {"ema": _Exec(f"open({str(marker)!r}, 'w').write('x')")}
    elif payload == "storage":
        obj = {"ema": _EvilStorage(cmd)}
    else:                                   # a command hidden in a persistent module's state
        net = EDMPrecond(**TINY_EDM)
        net.model.out_conv._forward_hooks[0] = _System(cmd)
        write_edm_pickle(path, net, TINY_EDM, reconstruct)
    if payload != "hook":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(UserError) as err:
        load_edm_pickle(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    expect = {"system": f"refusing global {os.system.__module__}.system", "exec": "refusing global builtins.exec",
              "storage": "storage record is not plain tensor data",
              "hook": f"refusing global {os.system.__module__}.system"}[payload]
    assert expect in msg and "nothing from the file was run" in msg
    assert not marker.exists()


def test_edm_pickle_wrong_shape_and_names(tmp_path, reconstruct):
    net = randomize(EDMPrecond(**TINY_EDM))
    with torch.no_grad():
        net.model.map_layer0.weight = nn.Parameter(torch.zeros(64, 15))
    path = tmp_path / "shape.pkl"
    write_edm_pickle(path, net, TINY_EDM, reconstruct)
    with pytest.raises(UserError) as err:
        load_edm_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "model.map_layer0.weight" in msg
    assert "expected shape [64, 16] vs got [64, 15]" in msg and "\n" not in msg

    net = randomize(EDMPrecond(**TINY_EDM))
    net.model.extra = edm_unet.Linear(2, 2)
    del net.model.map_label
    net.model.map_label = None
    path = tmp_path / "names.pkl"
    write_edm_pickle(path, net, TINY_EDM, reconstruct)
    with pytest.raises(UserError) as err:
        load_edm_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "expected" in msg and " vs got " in msg and "\n" not in msg
    assert "missing model.map_label.weight" in msg and "model.extra.weight" in msg


def test_edm_pickle_wrong_structure(tmp_path, reconstruct):
    path = tmp_path / "other.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ema": {"weights": [1, 2]}}, f)
    with pytest.raises(UserError, match="expected an EDM pickle whose 'ema' is an EDMPrecond vs got dict"):
        load_edm_pickle(path)
    net = EDMPrecond(**TINY_EDM)
    write_edm_pickle(path, net, {**TINY_EDM, "bogus": 1}, reconstruct)
    with pytest.raises(UserError, match=r"init arguments \['bogus'\] are not supported"):
        load_edm_pickle(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="not loaded: invalid load key"):
        load_edm_pickle(path)
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_edm_pickle(tmp_path / "missing.pkl")


# --- consistency model state dict ----------------------------------------------------------------
def test_cd_state_dict_roundtrip_is_exact(tmp_path, tiny_cd):
    path = tmp_path / "cd.pt"
    torch.save(tiny_cd.state_dict(), path)
    loaded = load_cd_state_dict(path, TINY_CD)
    assert all(torch.equal(a, b) for a, b in zip(tiny_cd.state_dict().values(), loaded.unet.state_dict().values()))
    x, y = images(), torch.tensor([3, 7])
    ref = ConsistencyModel(tiny_cd)
    for sigma in (0.01, 1.0, 80.0):
        assert torch.equal(loaded(x, sigma, y), ref(x, sigma, y))


def test_cd_state_dict_errors(tmp_path, tiny_cd):
    state = dict(tiny_cd.state_dict())
    state["out.2.weight"] = torch.zeros(3, 32, 3, 1)
    path = tmp_path / "cd.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        load_cd_state_dict(path, TINY_CD)
    msg = str(err.value)
    assert str(path) in msg and "out.2.weight: expected shape [3, 32, 3, 3] vs got [3, 32, 3, 1]" in msg

    state = {f"module.{k}": v for k, v in tiny_cd.state_dict().items()}
    torch.save(state, path)
    with pytest.raises(UserError, match=r"tensor names: expected \d+ vs got \d+; missing time_embed.0.weight"):
        load_cd_state_dict(path, TINY_CD)
    with pytest.raises(UserError, match="unknown consistency_arch keys"):
        load_cd_state_dict(path, {"channels": 3})

    with open(path, "wb") as f:
        pickle.dump({"w": _System(f"touch {tmp_path / 'pwned'}")}, f)
    with pytest.raises(UserError, match="not a loadable state dict") as err:
        load_cd_state_dict(path, TINY_CD)
    assert "\n" not in str(err.value) and not (tmp_path / "pwned").exists()


# --- the prior contract --------------------------------------------------------------------------
@pytest.fixture
def spec_prior(tmp_path, tiny_edm, tiny_cd, reconstruct):
    write_edm_pickle(tmp_path / "edm.pkl", tiny_edm, TINY_EDM, reconstruct)
    torch.save(tiny_cd.state_dict(), tmp_path / "cd.pt")
    spec = tmp_path / "prior.json"
    # as the workflow's prior_spec rule writes it (gmm defaults included), plus the tiny architecture
    spec.write_text(json.dumps({"kind": "checkpoint", "denoiser": "edm.pkl", "consistency": str(tmp_path / "cd.pt"),
                                "components": 16, "rank": 16, "seed": 0, "limit": None, "iters": 10,
                                "ode_steps": 32, "consistency_arch": TINY_CD}))
    return spec


def test_checkpoint_prior_contract(spec_prior, tiny_edm, tiny_cd):
    assert "checkpoint" in PRIORS
    prior = load_prior(spec_prior, "checkpoint")
    assert isinstance(prior, CheckpointPrior) and prior.num_classes == 10
    x, labels = images(3), torch.tensor([0, 4, 9])
    with pytest.raises(UserError, match="class-conditional .* bind the dataset's labels"):
        prior.denoise(x, 1.0)
    bound = prior.conditioned(labels)
    D, C = bound.denoise(x, 1.0), bound.consistency(x, 1.0)
    assert D.shape == C.shape == x.shape and D.dtype == C.dtype == x.dtype
    assert torch.equal(D, tiny_edm(x, 1.0, torch.eye(10)[labels]))
    assert torch.equal(C, ConsistencyModel(tiny_cd)(x, 1.0, labels))
    # EDM preconditioning: D(x, sigma) -> x as sigma -> 0
    errs = [(bound.denoise(x, s) - x).abs().max().item() for s in (1e-1, 1e-2, 1e-3)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 5e-3
    # consistency boundary condition at sigma_min, through the network (not the shortcut)
    assert torch.equal(bound.consistency_model(x, 0.002, labels), x)
    assert torch.equal(bound.consistency(x, 0.002), x)
    # per-image labels matter; float64 inputs come back as float64
    assert not torch.equal(prior.conditioned(torch.tensor([1, 4, 9])).denoise(x, 1.0)[0], D[0])
    assert bound.denoise(x.double(), 0.5).dtype == torch.float64
    with pytest.raises(UserError, match="3 class labels bound for a batch of 2"):
        bound.denoise(x[:2], 1.0)
    with pytest.raises(UserError, match=r"class labels must lie in \[0, 10\)"):
        prior.conditioned(torch.tensor([10]))


def test_checkpoint_prior_vjp_and_fixed_label(spec_prior, tmp_path):
    spec = json.loads(spec_prior.read_text())
    spec["class_label"] = 4
    spec_prior.write_text(json.dumps(spec))
    prior = load_prior(spec_prior, "checkpoint")
    x = images(2).requires_grad_(True)
    out = prior.denoise(x, 2.0).square().sum() + prior.consistency(x, 2.0).square().sum()
    (g,) = torch.autograd.grad(out, x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    fixed = prior.denoise(x.detach(), 2.0)
    assert torch.equal(fixed, prior.conditioned([4, 4]).denoise(x.detach(), 2.0))


def test_checkpoint_single_files_and_spec_errors(tmp_path, spec_prior):
    D_only = load_prior(tmp_path / "edm.pkl", "checkpoint")
    with pytest.raises(UserError, match="no consistency model given"):
        D_only.consistency(images(), 1.0)
    assert D_only.conditioned([1, 2]).denoise(images(), 1.0).shape == (2, 3, 8, 8)
    for bad, match in [({"denoiser": "edm.pkl", "typo": 1}, r"unknown prior spec keys \['typo'\]"),
                       ({"kind": "gmm", "denoiser": "edm.pkl"}, "kind: expected 'checkpoint' vs got 'gmm'"),
                       ({"denoiser": "edm.pkl", "class_label": "cat"}, "class_label: expected an integer"),
                       ({"denoiser": "edm.pkl", "class_label": 10}, r"class_label 10 is outside \[0, 10\)"),
                       ({"kind": "checkpoint"}, "needs `denoiser` and/or `consistency`"),
                       ({"denoiser": "nope.pkl"}, "checkpoint file not found")]:
        spec = tmp_path / "bad.json"
        spec.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=match) as err:
            load_prior(spec, "checkpoint")
        assert "\n" not in str(err.value)
    yaml_spec = tmp_path / "prior.yaml"
    yaml_spec.write_text("denoiser: edm.pkl\nclass_label: 3\n")
    assert load_prior(yaml_spec, "checkpoint").denoise(images(), 1.0).shape == (2, 3, 8, 8)


# --- full size (the published configurations; ~1.2 GB per network: opt in) ----------------------
FULL = pytest.mark.skipif(not os.environ.get("MAPBENCH_FULL_SIZE"),
                          reason="set MAPBENCH_FULL_SIZE=1 (needs ~5 GB of memory and ~1-2 min)")


@FULL
@pytest.mark.slow
def test_full_size_roundtrips_are_bit_exact(tmp_path, reconstruct):
    from mapbench.priors.openai_cd import CD_IMAGENET64
    from tests.test_nets import ADM_IMAGENET64_PARAMS, EDM_IMAGENET64

    torch.manual_seed(0)
    edm = EDMPrecond(**EDM_IMAGENET64)
    write_edm_pickle(tmp_path / "edm.pkl", edm, EDM_IMAGENET64, reconstruct)
    loaded = load_edm_pickle(tmp_path / "edm.pkl")
    assert sum(p.numel() for p in loaded.parameters()) == ADM_IMAGENET64_PARAMS
    assert all(torch.equal(a, b) for a, b in zip(edm.state_dict().values(), loaded.state_dict().values()))
    del edm, loaded

    cd = UNetModel(**CD_IMAGENET64)
    torch.save(cd.state_dict(), tmp_path / "cd.pt")
    loaded = load_cd_state_dict(tmp_path / "cd.pt")
    assert sum(p.numel() for p in loaded.parameters()) == ADM_IMAGENET64_PARAMS
    assert all(torch.equal(a, b) for a, b in zip(cd.state_dict().values(), loaded.unet.state_dict().values()))
