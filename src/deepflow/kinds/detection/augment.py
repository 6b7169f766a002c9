"""Batch augmentation for road scenes, on tensors: horizontal flip, scale/crop, colour jitter.

No vertical flips or rotations: cameras are upright and objects keep to the ground. Images are
``(B, 3, S, S)`` floats in [0, 1]; targets ``(B, M, 5)`` = [class, x1, y1, x2, y2] pixels, class
-1 for padding. A box pushed mostly out of the frame by a crop becomes padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepflow.kinds.detection.config import AugmentConfig  # re-exported: the augmentation settings

PAD = 0.45  # grey where a zoom-out shows beyond the frame


def draw(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn from ``g`` on its own device, then moved to ``like``'s device
    (as ``like``'s floating dtype): the same numbers for the same seed wherever training runs."""
    return torch.rand(*shape, generator=g, device=g.device).to(like.device, like.dtype)


def hflip(images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = images.shape[-1]
    images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    flipped = targets.clone()
    flipped[..., 1], flipped[..., 3] = size - targets[..., 3], size - targets[..., 1]
    return images, torch.where(mask[:, None, None], flipped, targets)


def scale_crop(images: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
               min_kept: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom each image by ``scale`` (B,) about a centre moved by ``shift`` (B, 2) (normalised)."""
    b, _, h, w = images.shape
    theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    sampled = F.grid_sample(images - PAD, F.affine_grid(theta, list(images.shape), align_corners=False),
                            align_corners=False) + PAD
    size = torch.tensor([w, h, w, h], dtype=targets.dtype, device=targets.device)
    # output = scale * (input - shift), in normalised coordinates (-1..1 spans the frame edges)
    norm = targets[..., 1:] / size * 2 - 1
    moved = (scale[:, None, None] * (norm - shift.repeat(1, 2)[:, None, :]) + 1) / 2 * size
    clipped = torch.minimum(moved.clamp(min=0), size)
    area = lambda t: (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)  # noqa: E731
    keep = (targets[..., 0] >= 0) & (area(clipped) >= min_kept * area(moved)) \
        & ((clipped[..., 2:] - clipped[..., :2]) >= 2).all(-1)
    out = torch.cat([torch.where(keep, targets[..., 0], -1.0)[..., None], clipped], -1)
    return sampled, out


def colour_jitter(images: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    b = images.shape[0]

    def factor(spread: float) -> torch.Tensor:
        return 1 + (draw(g, b, 1, 1, 1, like=images) * 2 - 1) * spread

    grey = images.mean(1, keepdim=True)
    images = grey + (images - grey) * factor(cfg.saturation)
    mean = images.mean((1, 2, 3), keepdim=True)
    images = mean + (images - mean) * factor(cfg.contrast)
    return (images * factor(cfg.brightness)).clamp(0, 1)


def augment(images: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig,
            g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, zoom/crop and colour-jitter a batch with numbers from ``g`` (any device's generator:
    drawn where ``g`` lives, used where ``images`` live)."""
    b = images.shape[0]
    images, targets = hflip(images, targets, draw(g, b, like=images) < cfg.flip)
    scale = cfg.scale_min + draw(g, b, like=images) * (cfg.scale_max - cfg.scale_min)
    room = (1 - 1 / scale).abs()[:, None]  # keep the crop window over the frame
    shift = (draw(g, b, 2, like=images) * 2 - 1) * room
    images, targets = scale_crop(images, targets, scale, shift, cfg.min_kept)
    return colour_jitter(images, cfg, g), targets
