"""The default loss (DESIGN §1.5): definition, per-sample batching and invariance under exact actions."""

import pytest
import torch

import symcoherence as sc
from symcoherence.testing import TOLERANCES as TOL


def test_matches_the_definition():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    target = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    expected = 0.0
    for c in range(3):
        rms = float(target[c].pow(2).mean().sqrt())
        expected += float((prediction[c] - target[c]).pow(2).sum()) / (rms + 1e-6)
    expected /= 3 * 5 * 4
    assert float(sc.smse(prediction, target)) == pytest.approx(expected, rel=1e-12)
    batched = sc.smse(prediction.expand(2, 3, 5, 4), target.expand(2, 3, 5, 4))
    torch.testing.assert_close(batched, sc.smse(prediction, target).expand(2), **TOL["fp64"])


@pytest.mark.parametrize(
    "kinds", [["vector"], ["pseudoscalar", "scalar"], ["vector", "pseudoscalar"]]
)
def test_invariant_under_every_d4_element(kinds):
    kind = sc.FieldType(kinds)
    generator = torch.Generator().manual_seed(1)
    prediction = torch.randn(kind.num_channels, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randn(kind.num_channels, 8, 8, generator=generator, dtype=torch.float64)
    target[0] *= 5.0  # different channel scales: a component mix-up would change the loss
    base = sc.smse(prediction, target)
    group = sc.groups.D4()
    for element in group.elements:
        moved = sc.smse(group.act(element, prediction, kind), group.act(element, target, kind))
        torch.testing.assert_close(moved, base, **TOL["fp64"])


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        sc.smse(torch.zeros(1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        sc.smse(torch.zeros(4, 4), torch.zeros(4, 4))
