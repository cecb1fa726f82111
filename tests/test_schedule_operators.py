import pytest
import torch

from mapbench.errors import UserError
from mapbench.operators import MASKS, get_operator, measure
from mapbench.runner import generators
from mapbench.schedule import karras_sigmas


def test_karras_endpoints_and_order():
    s = karras_sigmas(10)
    assert s.dtype == torch.float64 and len(s) == 11
    assert s[0].item() == pytest.approx(80.0) and s[-1].item() == pytest.approx(0.002)
    assert (s[1:] < s[:-1]).all()


@pytest.mark.parametrize("n", [0, -3])
def test_karras_rejects_bad_steps(n):
    with pytest.raises(ValueError, match=str(n)):
        karras_sigmas(n)


@pytest.mark.parametrize("task", MASKS)
def test_operator_adjoint_and_solve(task):
    op = get_operator(task, 32)
    assert op.check_adjoint((2, 3, 32, 32), torch.Generator().manual_seed(0)) < 1e-9
    v = torch.randn(2, 3, 32, 32)
    # H H^T = I on the measurement space: the solve divides by sigma_y^2 + s^2
    torch.testing.assert_close(op.solve(op.H(v), 0.1, 0.2), op.H(v) / 0.05)


MISSING = {  # number of missing pixels of a 32x32 image, from each mask's definition
    "box50": 16 * 16, "box25": 8 * 8, "half": 32 * 16, "expand": 32 * 32 - 8 * 8,
    "sr2x": 32 * 32 - 16 * 16, "altlines": 32 * 16, "random70": 707,
}


@pytest.mark.parametrize("task", MASKS)
def test_mask_definitions(task):
    mask = get_operator(task, 32).mask[0, 0]
    assert int((~mask).sum()) == MISSING[task]


def test_mask_geometry():
    assert not get_operator("half", 32).mask[0, 0, :, 16:].any()
    assert get_operator("half", 32).mask[0, 0, :, :16].all()
    assert not get_operator("box50", 32).mask[0, 0, 8:24, 8:24].any()
    assert get_operator("expand", 32).mask[0, 0, 12:20, 12:20].all()
    assert not get_operator("altlines", 32).mask[0, 0, 1::2].any()
    assert torch.equal(get_operator("alllines", 32).mask, get_operator("altlines", 32).mask)


def test_unknown_task_and_shape_mismatch():
    with pytest.raises(UserError, match="'boxx'"):
        get_operator("boxx", 32)
    with pytest.raises(UserError, match=r"\[2, 1, 16, 16\]"):
        get_operator("box50", 32).H(torch.zeros(2, 1, 16, 16))


def test_measure_noise_per_image_and_negative_sigma():
    op = get_operator("box25", 8)
    x = torch.zeros(3, 1, 8, 8)
    y_all = measure(op, x, 0.1, generators(0, "y", ids=["a", "b", "c"]))
    y_one = measure(op, x[1:2], 0.1, generators(0, "y", ids=["b"]))
    torch.testing.assert_close(y_all[1:2], y_one)
    assert (y_all * ~op.mask).abs().sum() == 0
    with pytest.raises(UserError, match="-0.5"):
        measure(op, x, -0.5, generators(0, "y", ids=["a", "b", "c"]))
