"""Backbones and the group-averaged wrapper: shapes, dtypes, torch.func, symmetries, bad configs."""

import pytest
import torch
from torch.func import functional_call, grad, vmap

import symcoherence as sc
from symcoherence.models import FNO2d, GroupAveraged, UNet2d, ViT2d
from symcoherence.models.base import build_from_spec
from symcoherence.models.fno import SpectralConv2d
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing import assert_equivariant, equivariance_defect

SCALAR = sc.FieldType(["scalar"])
VECTOR = sc.FieldType(["vector"])
VORTICITY = sc.FieldType(["pseudoscalar"])


FACTORIES = {
    "unet": lambda: UNet2d(2, 2, width=8, depth=2),
    "unet_attention": lambda: UNet2d(2, 2, width=8, depth=2, attention=True, heads=2),
    "fno": lambda: FNO2d(2, 2, modes=4, width=8, layers=2),
    "fno_grid": lambda: FNO2d(2, 2, modes=4, width=8, layers=2, positional_embedding=True),
    "vit": lambda: ViT2d(2, 2, grid_size=16, patch_size=4, dim=16, depth=2, heads=2),
    "group_averaged": lambda: GroupAveraged(UNet2d(2, 2, width=8, depth=1), sc.groups.D4(), VECTOR),
}


def _inputs(batch=3, dtype=torch.float32):
    return torch.randn(batch, 2, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("name", FACTORIES)
def test_output_shape(name):
    assert FACTORIES[name]()(_inputs()).shape == (3, 2, 16, 16)


@pytest.mark.parametrize("name", FACTORIES)
def test_float64_propagates(name):
    model = FACTORIES[name]().double()
    out = model(_inputs(dtype=torch.float64))
    assert out.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("name", FACTORIES)
def test_per_sample_grads_under_vmap_equal_a_loop(name):
    model = FACTORIES[name]().double()
    x = _inputs(dtype=torch.float64)
    y = torch.randn_like(x)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return sc.smse(functional_call(model, p, (xi[None],))[0], yi)

    fast = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for n in range(x.shape[0]):
        model.zero_grad()
        sc.smse(model(x[n : n + 1])[0], y[n]).backward()
        for key, parameter in model.named_parameters():
            torch.testing.assert_close(fast[key][n], parameter.grad, **TOL["fp64"])


@pytest.mark.parametrize("name", FACTORIES)
def test_no_in_place_ops_on_parameters(name):
    model = FACTORIES[name]()
    versions = [p._version for p in model.parameters()]
    model(_inputs()).square().sum().backward()
    assert [p._version for p in model.parameters()] == versions


@pytest.mark.parametrize("name", FACTORIES)
def test_deterministic_on_cpu(name):
    torch.manual_seed(3)
    first = FACTORIES[name]()
    torch.manual_seed(3)
    second = FACTORIES[name]()
    x = _inputs()
    assert torch.equal(first(x), second(x))
    torch.manual_seed(4)  # and the seed is what decides: another one gives another model
    assert not torch.equal(first(x), FACTORIES[name]()(x))


# ---------------------------------------------------------------- advertised symmetries
def test_unet_equivariant_under_shifts_by_its_total_stride():
    model = UNet2d(1, 1, width=8, depth=2)
    assert model.stride == 4
    assert_equivariant(model, sc.groups.Shifts([(4, 0), (0, 8), (12, 4)]), SCALAR, grid=16)


def test_unet_not_equivariant_under_a_shift_off_its_stride():
    model = UNet2d(1, 1, width=8, depth=2)
    defects = equivariance_defect(model, sc.groups.Shifts([(1, 0), (0, 2)]), SCALAR, grid=16)
    assert min(defects["x1y0"], defects["x0y2"]) > 1e-2


def test_unet_with_attention_keeps_the_stride_shift_symmetry():
    model = UNet2d(1, 1, width=8, depth=2, attention=True, heads=2)
    assert_equivariant(model, sc.groups.Shifts([(4, 4), (8, 0)]), SCALAR, grid=16)


def test_fno_equivariant_under_every_integer_shift():
    model = FNO2d(1, 1, modes=4, width=8, layers=2)
    assert_equivariant(model, sc.groups.Shifts(box=1), SCALAR, grid=16)
    assert_equivariant(model, sc.groups.Shifts([(5, 3)]), SCALAR, grid=(12, 10))


def test_fno_with_grid_embedding_breaks_shift_equivariance():
    model = FNO2d(1, 1, modes=4, width=8, layers=2, positional_embedding=True)
    defects = equivariance_defect(model, sc.groups.Shifts([(1, 0), (0, 4)]), SCALAR, grid=16)
    assert min(defects["x1y0"], defects["x0y4"]) > 100 * TOL["fp32"]["rtol"]


def test_vit_equivariant_under_patch_multiple_shifts_without_position_embedding():
    model = ViT2d(
        1, 1, grid_size=16, patch_size=4, dim=16, depth=2, heads=2, position_embedding=False
    )
    assert_equivariant(model, sc.groups.Shifts([(4, 0), (0, 4), (8, 12)]), SCALAR, grid=16)


def test_vit_not_equivariant_at_a_non_multiple_of_the_patch_size():
    model = ViT2d(
        1, 1, grid_size=16, patch_size=4, dim=16, depth=2, heads=2, position_embedding=False
    )
    defects = equivariance_defect(model, sc.groups.Shifts([(1, 0), (2, 2)]), SCALAR, grid=16)
    assert min(defects["x1y0"], defects["x2y2"]) > 1e-2


def test_vit_position_embedding_breaks_patch_shift_equivariance():
    model = ViT2d(1, 1, grid_size=16, patch_size=4, dim=16, depth=2, heads=2)
    with torch.no_grad():
        model.position.normal_()
    defect = equivariance_defect(model, sc.groups.Shifts([(4, 0)]), SCALAR, grid=16)["x4y0"]
    assert defect > 1e-2


@pytest.mark.parametrize("name", ["unet", "fno", "vit"])
def test_backbones_are_not_d4_equivariant(name):
    defects = equivariance_defect(FACTORIES[name](), sc.groups.D4(), VECTOR, grid=16)
    assert all(defects[g] > 1e-2 for g in sc.groups.D4().elements[1:])


@pytest.mark.parametrize(
    ("field_type", "backbone"),
    [
        (VECTOR, lambda: UNet2d(2, 2, width=8, depth=1)),
        (VORTICITY, lambda: UNet2d(1, 1, width=8, depth=1)),
        (VORTICITY, lambda: FNO2d(1, 1, modes=4, width=8, layers=2, positional_embedding=True)),
    ],
)
def test_group_averaged_is_d4_equivariant_for_a_non_equivariant_backbone(field_type, backbone):
    net = backbone()
    d4 = sc.groups.D4()
    assert max(equivariance_defect(net, d4, field_type, grid=16).values()) > 1e-2
    assert_equivariant(GroupAveraged(net, d4, field_type), d4, field_type, grid=16)


def test_group_averaged_float64_is_equivariant_to_fp64_round_off():
    d4 = sc.groups.D4()
    model = GroupAveraged(UNet2d(2, 2, width=8, depth=1), d4, VECTOR).double()
    assert_equivariant(model, d4, VECTOR, grid=16, rtol=TOL["fp64"]["rtol"])


def test_group_averaged_vector_components_are_not_swapped():
    # Pseudoscalar output of a vector input: f(u) = ∂x u_y − ∂y u_x via fixed central differences is
    # already D4-equivariant; the average must leave it unchanged (a wrong inverse would not).
    class Curl(torch.nn.Module):
        def forward(self, u):
            dx = (u.roll(-1, -1) - u.roll(1, -1)) / 2
            dy = (u.roll(-1, -2) - u.roll(1, -2)) / 2
            return dx[:, 1:2] - dy[:, 0:1]

    u = _inputs(batch=2)
    averaged = GroupAveraged(Curl(), sc.groups.D4(), VECTOR, VORTICITY)
    torch.testing.assert_close(averaged(u), Curl()(u), **TOL["fp32"])


def test_group_averaged_accepts_kinds_and_rebuilds_from_its_spec():
    model = GroupAveraged(UNet2d(2, 2, width=8, depth=1), sc.groups.D4(), ["vector"])
    rebuilt = build_from_spec(model.spec())
    rebuilt.load_state_dict(model.state_dict())
    x = _inputs()
    torch.testing.assert_close(rebuilt(x), model(x), **TOL["exact"])
    assert rebuilt.group.elements == model.group.elements


# ---------------------------------------------------------------- bad configuration
def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects inputs \(B, 3, H, W\).*in_channels"):
        UNet2d(3, 1, width=8)(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="backbone has in_channels=1 but the field type has 2"):
        GroupAveraged(UNet2d(1, 2, width=8), sc.groups.D4(), VECTOR)


def test_grid_not_divisible_by_unet_stride():
    with pytest.raises(ValueError, match=r"divisible by 4 \(the total stride"):
        UNet2d(1, 1, width=8, depth=2)(torch.randn(1, 1, 18, 16))


def test_grid_not_divisible_by_vit_patch():
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        ViT2d(1, 1, grid_size=18, patch_size=4)
    with pytest.raises(ValueError, match="set grid_size"):
        ViT2d(1, 1, grid_size=16, dim=16, depth=1)(torch.randn(1, 1, 32, 32))


def test_spectral_conv_with_unit_weights_is_a_low_pass_filter():
    modes, height, width = 3, 12, 10
    conv = SpectralConv2d(1, modes).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[..., 0] = 1.0  # real part 1, imaginary part 0: the identity on kept modes
    x = torch.randn(2, 1, height, width, dtype=torch.float64)
    k_y = torch.fft.fftfreq(height, 1 / height)  # integer wavenumbers 0, 1, ..., -1
    k_x = torch.arange(width // 2 + 1)
    kept = ((k_y >= -modes) & (k_y < modes))[:, None] & (k_x < modes)[None, :]
    expected = torch.fft.irfft2(torch.fft.rfft2(x) * kept, s=(height, width))
    torch.testing.assert_close(conv(x), expected, **TOL["fp64"])


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: FNO2d(1, 1, modes=0), r"FNO2d needs modes >= 1, width >= 1, layers >= 1"),
        (lambda: UNet2d(1, 1, depth=-1), r"UNet2d needs width >= 1, depth >= 0, blocks >= 1"),
        (lambda: ViT2d(1, 1, grid_size=16, dim=0), r"ViT2d needs patch_size >= 1, dim >= 1"),
    ],
)
def test_non_positive_sizes_are_clear_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_unet_allows_depth_zero():
    assert UNet2d(1, 1, width=8, depth=0).stride == 1


def test_fno_modes_too_large_for_the_grid():
    with pytest.raises(ValueError, match="Lower modes"):
        FNO2d(1, 1, modes=12, width=4, layers=1)(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("cls", [UNet2d, FNO2d, ViT2d])
def test_unknown_preset(cls):
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*\['paper', 'small'\]"):
        cls(1, 1, preset="huge")


def test_group_must_be_a_group():
    with pytest.raises(TypeError, match="must be a symcoherence Group"):
        GroupAveraged(UNet2d(1, 1, width=8), "D4", SCALAR)


# ---------------------------------------------------------------- presets
def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_preset_parameter_counts():
    assert 1e5 <= _count(UNet2d(1, 1, preset="small")) <= 5e5
    assert 1e5 <= _count(FNO2d(1, 1, preset="small")) <= 5e5
    assert 1e5 <= _count(ViT2d(1, 1, grid_size=64, preset="small")) <= 5e5
    assert 12e6 <= _count(UNet2d(1, 1, preset="paper")) <= 14e6
    assert 4.5e6 <= _count(ViT2d(1, 1, grid_size=128, preset="paper")) <= 5.5e6


def test_paper_unet_has_four_downsamplings_and_bottleneck_attention():
    model = UNet2d(1, 1, preset="paper")
    assert model.stride == 16 and len(model.down) == 4
    assert any(type(m).__name__ == "GridAttention" for m in model.bottleneck)


def test_explicit_arguments_override_the_preset():
    model = UNet2d(1, 1, preset="paper", width=8, depth=1, attention=False)
    assert model.spec()["init_args"] == {
        "in_channels": 1,
        "out_channels": 1,
        "preset": "paper",
        "width": 8,
        "depth": 1,
        "blocks": 2,
        "attention": False,
        "heads": 8,
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory",
    [
        lambda: UNet2d(1, 1, preset="paper"),
        lambda: FNO2d(1, 1, preset="paper"),
        lambda: ViT2d(1, 1, grid_size=128, preset="paper"),
    ],
)
def test_paper_presets_run_at_128(factory):
    model = factory()
    x = torch.randn(1, 1, 128, 128)
    out = model(x)
    out.square().mean().backward()
    assert out.shape == x.shape
    assert all(p.grad is not None for p in model.parameters())
