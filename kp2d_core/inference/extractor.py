"""Inference front-end: image in, sparse keypoints + scores + L2-normalised descriptors out.

The only place that turns user images into network input (validation, colour order,
resize, padding to a multiple of 8, :func:`~kp2d_core.images.normalize_image`) and dense
network output into keypoints (threshold, optional NMS, top-k, descriptor sampling, mapping
back to input pixels). Training-time evaluation, the evaluation harness and the ROS node all
go through it. It works on NumPy arrays: with the ONNX Runtime backend PyTorch is never
imported (:func:`~kp2d_core.inference.backends.onnx_without_torch`).
"""

from __future__ import annotations

import os
from pathlib import Path
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np

from kp2d_core.checks import is_tensor
from kp2d_core.config import CELL_SIZE, ExtractorConfig
from kp2d_core.geometry.coordinates import in_image, resize_points
from kp2d_core.images import MIN_IMAGE_SIDE, image_to_array, normalize_image
from kp2d_core.inference.backends import Backend, DenseMaps, cuda_present, onnx_without_torch
from kp2d_core.inference.features import DescriptorMap, Features
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.model.files import bundled_weights_path

if TYPE_CHECKING:
    import torch

    from kp2d_core.model.keypoint_net import KeypointNet

NMS_CHUNK = 2048
MAX_IMAGE_PIXELS = 100_000_000  # larger arrays are refused before any conversion
SHRINKABLE = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def pad_to_cell_multiple(images: np.ndarray) -> np.ndarray:
    """Replicate-pad (B, C, H, W) at the bottom/right so H and W are multiples of 8."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % CELL_SIZE, -width % CELL_SIZE
    if pad_h == 0 and pad_w == 0:
        return images
    return np.pad(images, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode='edge')


def radius_nms(xy: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
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
    keep = np.ones(n, bool)
    index = np.arange(n)
    for start in range(0, n, NMS_CHUNK):
        rows = slice(start, start + NMS_CHUNK)
        gap = xy[rows, None, :] - xy[None, :, :]
        close = (gap**2).sum(axis=-1) < radius * radius
        s_row, i_row = scores[rows, None], index[rows, None]
        better = (scores[None] > s_row) | ((scores[None] == s_row) & (index[None] < i_row))
        keep[rows] = ~(close & better).any(axis=1)
    return keep


def select_keypoints(
    out: DenseMaps, cfg: ExtractorConfig, valid_hw: tuple[int, int]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Sparse keypoints from dense network output.

    Args:
        out: dense outputs for a (B, C, Hp, Wp) batch.
        cfg: selection settings (threshold, NMS, top-k).
        valid_hw: (H, W) of the image content before padding; keypoints beyond it are dropped.

    Returns:
        Per image: keypoints (N, 2) in network-input pixels, scores (N,), descriptors (N, D)
        unit norm, sorted by decreasing score; float32.
    """
    height_p, width_p = out.score.shape[-2] * CELL_SIZE, out.score.shape[-1] * CELL_SIZE
    results = []
    for b in range(out.score.shape[0]):
        scores = out.score[b].reshape(-1).astype(np.float32)
        xy = out.coords[b].reshape(2, -1).T.astype(np.float32)
        keep = (scores > cfg.score_threshold) & in_image(xy, *valid_hw)
        xy, scores = xy[keep], scores[keep]
        if cfg.nms_radius > 0 and len(scores):
            keep = radius_nms(xy, scores, cfg.nms_radius)
            xy, scores = xy[keep], scores[keep]
        order = np.argsort(-scores, kind='stable')[: cfg.top_k]
        xy, scores = xy[order], scores[order]
        desc = out.sample_descriptors(b, xy, height_p, width_p)
        results.append((xy, scores, unit_rows(desc)))
    return results


def _is_torch_model(model: object) -> bool:
    torch = sys.modules.get('torch')
    return torch is not None and isinstance(model, torch.nn.Module)


class KeypointExtractor:
    """KP2D inference: ``KeypointExtractor.from_checkpoint().extract(image) -> Features``.

    Runs any :class:`~kp2d_core.inference.backends.Backend` (a ``KeypointNet`` runs as the eager
    one).
    """

    def __init__(
        self,
        model: KeypointNet | Backend,
        cfg: ExtractorConfig | None = None,
        weights: Path | None = None,
    ) -> None:
        self.cfg = cfg or ExtractorConfig()
        if _is_torch_model(model):
            from kp2d_core.inference.backends.torch_backend import TorchBackend

            precision = 'fp32' if self.cfg.precision == 'auto' else self.cfg.precision
            model = TorchBackend(model, precision)
        self.backend: Backend = model
        self.weights = weights  # the checkpoint it was loaded from, if any

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | None = None,
        device: str = 'auto',
        cfg: ExtractorConfig | None = None,
        variant: str = 'default',
    ) -> KeypointExtractor:
        """Load weights (``path``, or the bundled weights of ``variant``: 'default' or
        'light') onto ``device`` ('auto', 'cpu', 'cuda'), on the backend and precision of
        ``cfg`` ('auto': the fastest that passed the gate).

        On a CPU, an ONNX Runtime choice is made from the model files without loading
        PyTorch (:func:`~kp2d_core.inference.backends.onnx_without_torch`)."""
        cfg = cfg or ExtractorConfig()
        weights = bundled_weights_path(variant) if path is None else Path(path)
        if device == 'cpu' or (device == 'auto' and not cuda_present()):
            if not weights.is_file():
                from kp2d_core.model.checkpoint import load_model

                load_model(weights)  # the checkpoint's own error for a missing file
            chosen = onnx_without_torch(weights, cfg.backend, cfg.precision)
            if chosen is not None:
                return cls(chosen, cfg, weights)
        from kp2d_core.inference.backends import select_backend
        from kp2d_core.model.checkpoint import load_model, resolve_device

        model = load_model(weights, resolve_device(device))
        return cls(select_backend(model, weights, cfg.backend, cfg.precision), cfg, weights)

    def configure(self, cfg: ExtractorConfig) -> None:
        """Use new selection settings from the next image on (the backend stays)."""
        self.cfg = cfg

    @property
    def device(self) -> str:
        return self.backend.device

    def network_size(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """(H, W) the network sees for an input of this size: ``resize``, or the input shrunk
        (aspect kept) to at most ``max_input_pixels``; times ``scale`` in (0, 1] (each side at
        least ``MIN_IMAGE_SIDE``)."""
        if not 0.0 < scale <= 1.0:
            raise ValueError(f'scale must be in (0, 1], got {scale}')
        if self.cfg.resize is not None:
            size = self.cfg.resize
        elif height * width <= self.cfg.max_input_pixels:
            size = (height, width)
        else:
            factor = (self.cfg.max_input_pixels / (height * width)) ** 0.5
            size = (int(height * factor), int(width * factor))
            size = (max(MIN_IMAGE_SIDE, size[0]), max(MIN_IMAGE_SIDE, size[1]))
        if scale == 1.0:
            return size
        return max(MIN_IMAGE_SIDE, round(size[0] * scale)), max(
            MIN_IMAGE_SIDE, round(size[1] * scale)
        )

    def extract(self, image: np.ndarray, keep_dense: bool = False, scale: float = 1.0) -> Features:
        """Keypoints of one NumPy image (see :func:`image_to_array` for accepted inputs).

        An image is resized to the network size before it is converted, so memory stays
        bounded for large frames; keypoints are still in input pixels. ``keep_dense``
        attaches the dense descriptors (``Features.dense``, 20 MB at 640x480) for refining
        matches (the pipeline asks for them and drops them after tracking). ``scale`` shrinks
        the network size further (:meth:`network_size`; hybrid tracking's recovery frames).

        Raises:
            ValueError: for images it cannot take (with the reason), or a scale outside (0, 1].
        """
        check_image_size(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        net_hw = self.network_size(*size, scale)
        if net_hw != size and image.dtype in SHRINKABLE:
            image = resize_image(image, net_hw)
        image = image_to_array(image, self.cfg.channel_order)
        return self.extract_batch(image, size, keep_dense, net_hw)[0]

    def extract_batch(
        self,
        images: np.ndarray | torch.Tensor,
        original_size: tuple[int, int] | None = None,
        keep_dense: bool = False,
        net_size: tuple[int, int] | None = None,
    ) -> list[Features]:
        """Keypoints of a batch of same-size images.

        Args:
            images: (B, 3|1, H, W) float RGB in [0, 1] (a torch tensor is copied to host).
            original_size: (H, W) the keypoints refer to when ``images`` were already resized
                from an original of another size (default: the size of ``images``).
            keep_dense: attach each image's dense descriptors (``Features.dense``; they keep
                the batch's descriptor output alive while any of them is held).
            net_size: (H, W) the network sees (default: :meth:`network_size` of the images).

        Returns:
            One :class:`Features` per image, coordinates in (original) input pixels.
        """
        if is_tensor(images):
            images = images.detach().float().cpu().numpy()
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f'expected images (B, 1|3, H, W), got {tuple(images.shape)}')
        size = (int(images.shape[-2]), int(images.shape[-1]))
        net_size = net_size or self.network_size(*size)
        net_in = np.asarray(images, np.float32)
        if net_size != size:
            net_in = np.stack(
                [resize_image(image, net_size, channels_first=True) for image in net_in]
            )
        padded = normalize_image(pad_to_cell_multiple(net_in), self.backend.use_color)
        out = self.backend(padded)
        size = original_size or size
        padded_hw = (padded.shape[-2], padded.shape[-1])
        maps = None
        if keep_dense:  # a convolution left to the front-end is applied where read
            maps = out.descriptors if out.conv is not None else out.float_descriptors()
        features = []
        for b, (xy, scores, desc) in enumerate(select_keypoints(out, self.cfg, net_size)):
            dense = None
            if maps is not None:
                dense = DescriptorMap(maps[b], padded_hw, size, net_size, out.conv)
            xy = resize_points(xy, net_size, size).astype(np.float32)
            features.append(Features(xy, scores, desc, size, dense))
        return features


def resize_image(
    image: np.ndarray, hw: tuple[int, int], channels_first: bool = False
) -> np.ndarray:
    """``image`` (H, W[, C]), or (C, H, W) with ``channels_first``, resized to ``hw`` (area
    averaging when shrinking, bilinear when enlarging)."""
    if channels_first:
        image = image.transpose(1, 2, 0)
    shrink = hw[0] * hw[1] < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), hw[::-1], interpolation=interp)
    if resized.ndim < image.ndim:  # OpenCV drops a single channel
        resized = resized[..., None]
    return resized.transpose(2, 0, 1) if channels_first else resized


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
