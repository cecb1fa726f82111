"""The edm_unet prior kind: EDM training, EMA, consistency distillation, the "ode" consistency
function, checkpoints and the training commands, all on a tiny UNet at 8x8 (a few seconds)."""
import json
import pickle

import numpy as np
import pytest
import torch

from mapbench import cli
from mapbench.errors import UserError
from mapbench.priors import PRIORS, load_prior
from mapbench.priors.learned import LearnedPrior, config_path, load_learned_prior, load_network, save_network
from mapbench.schedule import SIGMA_MIN, karras_sigmas
from mapbench.train.consistency_distill import ConsistencyDistillation, student_from_teacher
from mapbench.train.edm_loss import EDMLoss
from mapbench.train.loop import TrainConfig, ema_beta, ema_update, train
from mapbench.train.networks import ARCHS, build
from mapbench.train.sample import consistency_sample, edm_sample, heun, ode_consistency

TINY = ARCHS["tiny"]


def tiny(network="denoiser", seed=0, perturb=0.0):
    """A tiny network; ``perturb`` adds noise to every weight (the zero-initialised output layers
    otherwise make ``F = 0``)."""
    torch.manual_seed(seed)
    net = build(network, TINY)
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * perturb)
    return net.eval()


def images(n=16, seed=0):
    """Smooth uint8 blobs [n, 1, 8, 8]."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    c = g.uniform(2, 6, size=(n, 2))
    blobs = np.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 4)
    return (blobs[:, None] * 255).astype(np.uint8)


def fixed_loss(net, x):
    with torch.no_grad():
        return EDMLoss().loss(net, x, torch.Generator().manual_seed(123)).item()


def test_edm_training_reduces_loss_on_fixed_batch():
    torch.set_num_threads(1)
    data = images(16)
    x = torch.from_numpy(data).float() / 127.5 - 1
    net = tiny()
    before = fixed_loss(net, x)
    ema, history = train(net, EDMLoss(), data, TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=1,
                                                           log_every=10), log=lambda m: None)
    assert [h[0] for h in history] == [10, 20, 30]
    assert fixed_loss(net.eval(), x) < 0.7 * before
    assert fixed_loss(ema, x) < before


def test_ema_update_and_beta():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * wa + 0.1 * wb)
    assert ema_beta(64_000_000, 64, 50, 0.05) == pytest.approx(0.5 ** (64 / 50_000))      # half-life
    assert ema_beta(6400, 64, 50, 0.05) == pytest.approx(0.5 ** (64 / 320))                 # ramp-up
    assert ema_beta(6400, 64, 50, None) == pytest.approx(0.5 ** (64 / 50_000))


def test_distillation_step_and_boundary_condition():
    torch.set_num_threads(1)
    teacher = tiny(perturb=0.05)
    student = student_from_teacher(teacher, TINY)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(student(x, SIGMA_MIN), x)                                    # C(x, sigma_min) = x
    assert torch.allclose(student.model(x, torch.zeros(4)), teacher.model(x, torch.zeros(4)))
    cd = ConsistencyDistillation(teacher, student, N=10)
    assert cd.t[0].item() == pytest.approx(SIGMA_MIN) and cd.t[-1].item() == pytest.approx(80)
    loss = cd.loss(student, x, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    target0 = [p.clone() for p in cd.target.parameters()]
    ema, history = train(student, cd, images(8), TrainConfig(steps=2, batch_size=8, lr=1e-3, warmup=1,
                                                              log_every=1), log=lambda m: None)
    assert all(np.isfinite(h[1]) for h in history)
    moved = [p_new - p_old for p_new, p_old in zip(cd.target.parameters(), target0)]
    assert any(m.abs().max() > 0 for m in moved)                                    # target EMA moved
    assert torch.equal(ema(x, SIGMA_MIN), x) and torch.equal(student(x, SIGMA_MIN), x)
    assert not torch.equal(ema(x, 1.0), x)


def test_ode_consistency_matches_fine_heun_and_has_finite_vjp():
    torch.set_num_threads(1)
    # F = 0: D(x, s) = sd^2 x / (s^2 + sd^2), a Gaussian prior; the PF-ODE scales x by
    # sqrt((eps^2 + sd^2) / (s^2 + sd^2)) (DESIGN.md's closed form for one component).
    x = torch.randn(2, 1, 8, 8)
    gaussian = lambda z, s: 0.25 * z / (s ** 2 + 0.25)          # D of N(0, 0.25 I): closed-form ODE
    exact = x * ((SIGMA_MIN ** 2 + 0.25) / (2.0 ** 2 + 0.25)) ** 0.5
    assert ((ode_consistency(gaussian, x, 2.0, 128) - exact).norm() / exact.norm()).item() < 1e-3
    assert torch.allclose(LearnedPrior(tiny(), ode_steps=3).consistency(x, 2.0),  # tiny() has F = 0
                          ode_consistency(gaussian, x, 2.0, 3), atol=1e-6)

    # a random network: C with many steps matches a 120-step Heun integration of the same D, and
    # few steps converge to it at second order
    prior = LearnedPrior(tiny(perturb=0.05), ode_steps=40)
    fine = heun(prior.denoise, x, karras_sigmas(120, SIGMA_MIN, 2.0).tolist())
    err = lambda out: ((out - fine).norm() / fine.norm()).item()
    assert err(prior.consistency(x, 2.0)) < 3e-3
    assert err(ode_consistency(prior.denoise, x, 2.0, 20)) < err(ode_consistency(prior.denoise, x, 2.0, 5)) / 4
    assert torch.equal(prior.consistency(x, SIGMA_MIN), x)

    xr = x.clone().double().requires_grad_(True)                                    # solvers may pass float64
    out = prior.consistency(xr, 2.0)
    assert out.dtype == torch.float64
    (grad,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), xr)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_samplers_run_and_are_batch_independent():
    torch.set_num_threads(1)
    prior = LearnedPrior(tiny(perturb=0.05), tiny("consistency", perturb=0.05))
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]
    z = torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens()])
    with torch.no_grad():
        a = edm_sample(prior.denoise, z, steps=3)
        two = consistency_sample(prior.consistency, z, [80.0, 1.4], gens())
        two_single = consistency_sample(prior.consistency, z[1:2], [80.0, 1.4], gens()[1:2])
    assert torch.isfinite(a).all() and torch.isfinite(two).all()
    assert torch.allclose(two[1:2], two_single, atol=1e-5)


def test_checkpoint_roundtrip_weights_only(tmp_path):
    net, cm = tiny(perturb=0.05), tiny("consistency", seed=1, perturb=0.05)
    save_network(net, "denoiser", TINY, tmp_path / "denoiser.pt", training={"steps": 3})
    save_network(cm, "consistency", TINY, tmp_path / "cm.pt")
    state = torch.load(tmp_path / "denoiser.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    loaded, config = load_network(tmp_path / "denoiser.pt", "denoiser")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x, 0.7), net(x, 0.7)) and config["training"] == {"steps": 3}
    assert not any(p.requires_grad for p in loaded.parameters())

    (tmp_path / "prior.json").write_text(json.dumps({"kind": "edm_unet", "denoiser": "denoiser.pt",
                                                     "consistency": "cm.pt", "ode_steps": 3,
                                                     "dataset": "fashion_mnist", "components": 16}))
    assert "edm_unet" in PRIORS
    prior = load_prior(tmp_path / "prior.json", "edm_unet")
    assert torch.equal(prior.consistency(x, 0.7), cm(x, 0.7))
    assert torch.equal(prior.denoise(x, 0.7), net(x, 0.7))
    direct = load_learned_prior(tmp_path / "denoiser.pt")
    assert direct.consistency_model is None and direct.ode_steps == 4
    assert load_learned_prior(tmp_path / "denoiser.json").consistency_model is None


def one_line_error(match, fn, *args):
    with pytest.raises(UserError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_corrupt_or_mismatched_checkpoint_errors(tmp_path):
    path = tmp_path / "denoiser.pt"
    save_network(tiny(), "denoiser", TINY, path)
    config = json.loads(config_path(path).read_text())

    msg = one_line_error("network: expected 'consistency' vs got 'denoiser'", load_network, path, "consistency")
    assert str(config_path(path)) in msg

    other = tmp_path / "wide.pt"                                                    # arch mismatch
    save_network(tiny(), "denoiser", TINY, other)
    wide = json.loads(config_path(other).read_text())
    wide["arch"]["model_channels"] = 24
    config_path(other).write_text(json.dumps(wide))
    msg = one_line_error(r"expected shape \[\d+(, \d+)*\] vs got \[\d+(, \d+)*\]", load_network, other, "denoiser")
    assert str(other) in msg

    path.write_bytes(path.read_bytes()[:100])                                       # truncated file
    msg = one_line_error("sha256: expected .* vs got", load_network, path, "denoiser")
    assert str(path) in msg
    config.pop("sha256")
    config_path(path).write_text(json.dumps(config))
    one_line_error(f"{path}: not a loadable state dict", load_network, path, "denoiser")

    pickle.dump({"x": object()}, open(path, "wb"), protocol=2)                                # not weights-only
    one_line_error(f"{path}: not a loadable state dict", load_network, path, "denoiser")
    config_path(path).unlink()
    one_line_error("its config denoiser.json is missing", load_network, path, "denoiser")
    one_line_error("checkpoint not found", load_network, tmp_path / "nope.pt", "denoiser")

    (tmp_path / "bad.json").write_text(json.dumps({"kind": "edm_unet", "denoiser": "d.pt", "ode_stepz": 2}))
    one_line_error("unknown prior spec keys", load_learned_prior, tmp_path / "bad.json")


def test_train_distill_sample_commands(tmp_path, capsys):
    data = tmp_path / "tiny.npz"
    np.savez(data, train=images(32), test=images(8, seed=1), source=np.array("blobs"))
    common = ["--data", str(data), "--batch-size", "8", "--threads", "1", "--device", "cpu", "--log-every", "1"]
    assert cli.main(["train-denoiser", "--arch", "tiny", "--steps", "3", *common,
                     "--state", str(tmp_path / "d.state"), "--out", str(tmp_path / "d.pt")]) == 0
    info = json.loads((tmp_path / "d.json").read_text())
    assert info["network"] == "denoiser" and len(info["training"]["log"]) == 3
    assert cli.main(["train-denoiser", "--arch", "tiny", "--steps", "4", *common,          # resumes at 3
                     "--state", str(tmp_path / "d.state"), "--out", str(tmp_path / "d.pt")]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "d.json").read_text())["training"]["log"]) == 4
    assert cli.main(["distill-consistency", "--teacher", str(tmp_path / "d.pt"), "--steps", "2", "--N", "6",
                     *common, "--out", str(tmp_path / "cm.pt")]) == 0
    spec = tmp_path / "prior.json"
    spec.write_text(json.dumps({"kind": "edm_unet", "denoiser": "d.pt", "consistency": "cm.pt"}))
    assert cli.main(["sample-prior", "--prior", str(spec), "--data", str(data), "--n-samples", "4",
                     "--heun-steps", "2", "--no-fid", "--threads", "1", "--device", "cpu",
                     "--grid", str(tmp_path / "grid.png"), "--out", str(tmp_path / "fid.json")]) == 0
    result = json.loads((tmp_path / "fid.json").read_text())["samplers"]
    assert set(result) == {"heun", "cm1", "cm2"} and result["heun"]["nfe"] == 3
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    # a dataset whose images do not fit the architecture: one line naming the file
    assert cli.main(["train-denoiser", "--arch", "small", "--steps", "1", *common,
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert f"{data}: images [1, 8, 8] vs arch small's [1, 32, 32]" in capsys.readouterr().err


def test_fetch_data_rejects_wrong_archive_and_unsafe_pickle(tmp_path, capsys):
    from mapbench.commands.fetch_data import _NumpyUnpickler
    fake = tmp_path / "fake.deb"
    fake.write_bytes(b"!<arch>\nnot the package")
    assert cli.main(["fetch-data", "--archive", str(fake), "--out", str(tmp_path / "d.npz")]) == 2
    err = capsys.readouterr().err
    assert f"{fake}: sha256: expected 39e172fe" in err and "vs got" in err
    assert not (tmp_path / "d.npz").exists()
    import io
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyUnpickler(io.BytesIO(pickle.dumps(print))).load()
