"""Tiny models shared by the coherence tests (the "zoo" of the issue), an inline group average and
an Adam optimizer with filled state."""

import torch
from torch import nn

import symcoherence as sc

GRID = 6


class FieldMLP(nn.Module):
    """An MLP on the flattened field: no spatial structure at all."""

    def __init__(self, channels=1, grid=GRID, hidden=12):
        super().__init__()
        self.shape = (channels, grid, grid)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * grid * grid, hidden),
            nn.Tanh(),
            nn.Linear(hidden, channels * grid * grid),
        )

    def forward(self, x):
        return self.net(x).reshape(x.shape[0], *self.shape)


def circular_conv(channels=1, hidden=3):
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="circular"),
        nn.Tanh(),
        nn.Conv2d(hidden, channels, 3, padding=1, padding_mode="circular"),
    )


def zero_padded_conv(channels=1, hidden=3):
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(hidden, channels, 3, padding=1),
    )


class Spectral(nn.Module):
    """FNO-like layer: complex weights on the lowest Fourier modes plus a pointwise path."""

    def __init__(self, channels=1, modes=2):
        super().__init__()
        self.modes = modes
        scale = 1.0 / channels
        self.weight = nn.Parameter(
            scale * torch.randn(channels, channels, modes, modes, dtype=torch.cfloat)
        )
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        spectrum = torch.fft.rfft2(x)
        low = torch.einsum(
            "bixy,ioxy->boxy", spectrum[..., : self.modes, : self.modes], self.weight
        )
        out = torch.zeros_like(spectrum)
        out[..., : self.modes, : self.modes] = low
        return torch.tanh(torch.fft.irfft2(out, s=x.shape[-2:]) + self.pointwise(x))


def group_norm_net(channels=1, hidden=4):
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.GroupNorm(2, hidden),
        nn.Tanh(),
        nn.Conv2d(hidden, channels, 3, padding=1),
    )


def dropout_net(channels=1, hidden=4):
    net = nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.Dropout(0.5),
        nn.Tanh(),
        nn.Conv2d(hidden, channels, 3, padding=1),
    )
    return net.eval()


ZOO = {
    "mlp": FieldMLP,
    "circular_conv": circular_conv,
    "spectral": Spectral,
    "group_norm": group_norm_net,
    "dropout_eval": dropout_net,
}


class GroupAveraged(nn.Module):
    """``f̄(x) = (1/|G|) Σ_g g⁻¹·f(g·x)``: exactly equivariant for every θ."""

    def __init__(self, net, group, field_type):
        super().__init__()
        self.net, self.group, self.field_type = net, group, field_type

    def forward(self, x):
        outs = [
            self.group.act(
                self.group.inverse(g),
                self.net(self.group.act(g, x, self.field_type)),
                self.field_type,
            )
            for g in self.group.elements
        ]
        return torch.stack(outs).mean(0)


def cast(model, dtype):
    """``model`` in ``dtype``; complex parameters move to the matching complex dtype (``.to`` drops them)."""
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(complex_dtype if p.is_complex() else dtype)
    return model


def make(name, dtype=torch.float64, seed=0, channels=1):
    torch.manual_seed(seed)
    return cast(ZOO[name](channels=channels), dtype)


def data(n=4, channels=1, grid=GRID, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, grid, grid, generator=generator, dtype=dtype)
    y = torch.randn(n, channels, grid, grid, generator=generator, dtype=dtype)
    return x, y


PSEUDO = sc.FieldType(["pseudoscalar"])
SCALAR = sc.FieldType(["scalar"])


def stepped_adam(model, x, y, steps=2):
    """A ``torch.optim.Adam`` of ``model`` after ``steps`` steps on ``(x, y)`` (its moments filled)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.func.vmap(sc.smse)(model(x), y).mean().backward()
        optimizer.step()
    return optimizer
