"""A small image panel — input, truth, prediction, error — rendered to an RGB array.

matplotlib is imported only when a panel is drawn, never at module import.

Example:
    >>> import torch
    >>> field = torch.randn(1, 16, 16)
    >>> render_panel(field, field, field).shape
    (198, 810, 3)
"""

from __future__ import annotations

import numpy as np
import torch


def render_panel(
    inputs: torch.Tensor, truth: torch.Tensor, prediction: torch.Tensor, channel: int = 0
) -> np.ndarray:
    """Draw channel ``channel`` of the last input frame, the truth, the prediction and the error.

    Args:
        inputs: one input ``(C_in, H, W)``; with a stacked history of ``k`` frames
            (``C_in = k·C_out``), the last frame is shown.
        truth: the target ``(C_out, H, W)``.
        prediction: the model output ``(C_out, H, W)``.
        channel: which output channel to show.

    Returns:
        An ``(H_px, W_px, 3)`` ``uint8`` RGB image (for ``SummaryWriter.add_image`` with
        ``dataformats="HWC"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame_start = inputs.shape[0] - truth.shape[0]
    fields = [inputs[frame_start + channel], truth[channel], prediction[channel]]
    fields.append(prediction[channel] - truth[channel])
    titles = ["input", "truth", "prediction", "error (own scale)"]
    figure = Figure(figsize=(9, 2.2), dpi=90, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    field_limit = float(truth[channel].abs().max().clamp_min(1e-12))
    error_limit = float(fields[-1].abs().max().clamp_min(1e-12))
    for index, (ax, field, title) in enumerate(zip(axes, fields, titles, strict=True)):
        limit = error_limit if index == 3 else field_limit
        image = ax.imshow(
            field.detach().float().cpu().numpy(),
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            origin="lower",
        )
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        if index >= 2:  # the fields share the truth's scale; the error has its own
            figure.colorbar(image, ax=ax, fraction=0.046)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
