"""Inference front-end: image in, sparse keypoints + scores + L2-normalised descriptors out.

The only place that turns user images into network input (validation, colour order,
resize, padding to a multiple of 8, :func:`~kp2d_core.geometry.normalize_image`) and dense
network output into keypoints (threshold, optional NMS, top-k, descriptor sampling, mapping
back to input pixels). Training-time evaluation, the evaluation harness and the ROS node all
go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from kp2d_core.backends import Backend, select_backend
from kp2d_core.backends.torch_backend import TorchBackend
from kp2d_core.checkpoint import default_weights_path, load_model, resolve_device
from kp2d_core.config import CELL_SIZE, ExtractorConfig
from kp2d_core.geometry import in_image, normalize_image, resize_points, sample_map
from kp2d_core.images import MIN_IMAGE_SIDE, image_to_tensor
from kp2d_core.networks import KeypointNet, KeypointOutput

NMS_CHUNK = 2048
MAX_IMAGE_PIXELS = 100_000_000  # larger arrays are refused before any conversion
SHRINKABLE = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class Features:
    """Keypoints of one image.

    Attributes:
        keypoints: (N, 2) float32 pixel coordinates (x, y) in the input image.
        scores: (N,) float32 scores in (0, 1], sorted in decreasing order.
        descriptors: (N, D) float32, unit L2 norm.
        image_size: (H, W) of the input image.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def to(self, device: str | torch.device) -> Features:
        return replace(
            self,
            keypoints=self.keypoints.to(device),
            scores=self.scores.to(device),
            descriptors=self.descriptors.to(device),
        )

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (N,2), scores (N,), descriptors (N,D)) as float32 NumPy arrays."""
        return (
            self.keypoints.cpu().numpy(),
            self.scores.cpu().numpy(),
            self.descriptors.cpu().numpy(),
        )


def pad_to_cell_multiple(images: torch.Tensor) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) at the bottom/right so H and W are multiples of 8."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % CELL_SIZE, -width % CELL_SIZE
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode='replicate')


def radius_nms(xy: torch.Tensor, scores: torch.Tensor, radius: float) -> torch.Tensor:
    """Keep points with no better-scored point closer than ``radius`` pixels.

    Ties are broken by index (earlier wins), so the result is deterministic.

    Args:
        xy: (N, 2) pixel coordinates.
        scores: (N,) scores.
        radius: suppression radius in pixels (> 0).

    Returns:
        (N,) boolean keep mask.
    """
    n = xy.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=xy.device)
    index = torch.arange(n, device=xy.device)
    for start in range(0, n, NMS_CHUNK):
        rows = slice(start, start + NMS_CHUNK)
        close = torch.cdist(xy[rows], xy) < radius
        s_row, i_row = scores[rows, None], index[rows, None]
        better = (scores[None] > s_row) | ((scores[None] == s_row) & (index[None] < i_row))
        keep[rows] = ~(close & better).any(dim=1)
    return keep


def select_keypoints(
    out: KeypointOutput, cfg: ExtractorConfig, valid_hw: tuple[int, int]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Sparse keypoints from dense network output.

    Args:
        out: network output for a (B, C, Hp, Wp) batch.
        cfg: selection settings (threshold, NMS, top-k).
        valid_hw: (H, W) of the image content before padding; keypoints beyond it are dropped.

    Returns:
        Per image: keypoints (N, 2) in network-input pixels, scores (N,), descriptors (N, D)
        unit norm, sorted by decreasing score.
    """
    height_p, width_p = out.score.shape[-2] * CELL_SIZE, out.score.shape[-1] * CELL_SIZE
    results = []
    for b in range(out.score.shape[0]):
        scores = out.score[b].reshape(-1).float()
        xy = out.coords[b].reshape(2, -1).t().float()
        keep = (scores > cfg.score_threshold) & in_image(xy, *valid_hw)
        xy, scores = xy[keep], scores[keep]
        if cfg.nms_radius > 0 and len(scores):
            keep = radius_nms(xy, scores, cfg.nms_radius)
            xy, scores = xy[keep], scores[keep]
        order = torch.sort(scores, descending=True, stable=True).indices[: cfg.top_k]
        xy, scores = xy[order], scores[order]
        desc = sample_map(out.descriptors[b : b + 1].float(), xy[None], height_p, width_p)[0]
        results.append((xy, scores, F.normalize(desc, dim=1)))
    return results


class KeypointExtractor:
    """KP2D inference: ``KeypointExtractor.from_checkpoint().extract(image) -> Features``.

    Runs any :class:`~kp2d_core.backends.Backend` (a ``KeypointNet`` is wrapped into the eager
    PyTorch one). Inputs follow the backend's device.
    """

    def __init__(self, model: KeypointNet | Backend, cfg: ExtractorConfig | None = None) -> None:
        self.cfg = cfg or ExtractorConfig()
        if isinstance(model, KeypointNet):
            precision = 'fp32' if self.cfg.precision == 'auto' else self.cfg.precision
            model = TorchBackend(model, precision)
        self.backend: Backend = model

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | None = None,
        device: str = 'auto',
        cfg: ExtractorConfig | None = None,
    ) -> KeypointExtractor:
        """Load weights (default: the bundled model) onto ``device`` ('auto', 'cpu', 'cuda'),
        on the backend and precision of ``cfg`` ('auto': the fastest that passed the gate)."""
        cfg = cfg or ExtractorConfig()
        weights = default_weights_path() if path is None else Path(path)
        model = load_model(weights, resolve_device(device))
        return cls(select_backend(model, weights, cfg.backend, cfg.precision), cfg)

    def configure(self, cfg: ExtractorConfig) -> None:
        """Use new selection settings from the next image on (the backend stays)."""
        self.cfg = cfg

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the network sees for an input of this size: ``resize``, or the input shrunk
        (aspect kept) to at most ``max_input_pixels``."""
        if self.cfg.resize is not None:
            return self.cfg.resize
        pixels = height * width
        if pixels <= self.cfg.max_input_pixels:
            return height, width
        factor = (self.cfg.max_input_pixels / pixels) ** 0.5
        return max(MIN_IMAGE_SIDE, int(height * factor)), max(MIN_IMAGE_SIDE, int(width * factor))

    def extract(self, image: np.ndarray) -> Features:
        """Keypoints of one NumPy image (see :func:`image_to_tensor` for accepted inputs).

        An image above ``max_input_pixels`` is shrunk before it becomes a tensor, so memory
        stays bounded; keypoints are still in input pixels.

        Raises:
            ValueError: for images it cannot take (with the reason).
        """
        check_image_size(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        net_hw = self.network_size(*size)
        if net_hw[0] * net_hw[1] < size[0] * size[1] and image.dtype in SHRINKABLE:
            image = cv2.resize(image, net_hw[::-1], interpolation=cv2.INTER_AREA)
        tensor = image_to_tensor(image, self.cfg.channel_order).to(self.device)
        return self.extract_tensor(tensor, size)[0]

    @torch.no_grad()
    def extract_tensor(
        self, images: torch.Tensor, original_size: tuple[int, int] | None = None
    ) -> list[Features]:
        """Keypoints of a batch of same-size images.

        Args:
            images: (B, 3|1, H, W) float RGB in [0, 1], on any device.
            original_size: (H, W) the keypoints refer to when ``images`` were already shrunk
                from a larger original (default: the size of ``images``).

        Returns:
            One :class:`Features` per image, coordinates in (original) input pixels.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f'expected images (B, 1|3, H, W), got {tuple(images.shape)}')
        size = (int(images.shape[-2]), int(images.shape[-1]))
        net_in = images.to(self.device, torch.float32)
        net_size = self.network_size(*size)
        if net_size != size:
            net_in = F.interpolate(
                net_in, size=net_size, mode='bilinear', align_corners=False, antialias=True
            )
        padded = normalize_image(pad_to_cell_multiple(net_in), self.backend.use_color)
        out = self.backend(padded)
        size = original_size or size
        features = []
        for xy, scores, desc in select_keypoints(out, self.cfg, net_size):
            features.append(Features(resize_points(xy, net_size, size), scores, desc, size))
        return features


def check_image_size(image: np.ndarray) -> None:
    """Refuse non-images and arrays so large that converting them would exhaust memory."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f'expected a NumPy image, got {type(image).__name__}')
    if image.ndim not in (2, 3):
        raise ValueError(f'expected an image (H, W) or (H, W, 1|3|4), got shape {image.shape}')
    pixels = int(image.shape[0]) * int(image.shape[1])
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(
            f'image {image.shape[0]}x{image.shape[1]} has {pixels / 1e6:.0f} Mpx; '
            f'at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx are accepted'
        )
