"""What every inference backend provides: dense KeypointNet outputs for a normalised batch."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from kp2d_core.inference.descriptor_conv import DescriptorConv

BACKENDS = ('torch', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
REFERENCE = ('torch', 'fp32')  # the eager network every other choice is gated against


class DenseMaps(NamedTuple):
    """A backend's dense outputs for a (B, C, H, W) batch, NumPy arrays in host memory (the
    fields of :class:`~kp2d_core.model.keypoint_net.KeypointOutput`).

    Attributes:
        score: (B, 1, H/8, W/8) keypoint scores in [0, 1], float32.
        coords: (B, 2, H/8, W/8) keypoint pixel coordinates (x, y), float32.
        descriptors: (B, D, H/4, W/4) raw (unnormalised) descriptors: float32, or uint8 as the
            int8 model quantises them (4.7 instead of 18.75 MiB at 640x480), standing for
            ``descriptor_scale * (descriptors - descriptor_zero_point)``. With ``fine`` they
            are the coarse part (B, D, H/8, W/8) of a split lift: the descriptors are its 2x
            bilinear upsampling plus ``fine`` (:mod:`kp2d_core.inference.descriptor_lift`).
            With ``conv`` they are its input (B, H/4, W/4, C), uint8, channels last
            (:mod:`kp2d_core.inference.descriptor_conv`). Read them through
            :meth:`sample_descriptors` or :meth:`float_descriptors`.
        descriptor_scale, descriptor_zero_point: the quantisation of uint8 descriptors.
        fine: None, or (B, D, H/4, W/4) the lift's fine part, float32 or uint8.
        fine_scale, fine_zero_point: the quantisation of a uint8 ``fine``.
        conv: None, or the descriptor head's last convolution, left to the front-end.
    """

    score: np.ndarray
    coords: np.ndarray
    descriptors: np.ndarray
    descriptor_scale: float = 1.0
    descriptor_zero_point: int = 0
    fine: np.ndarray | None = None
    fine_scale: float = 1.0
    fine_zero_point: int = 0
    conv: DescriptorConv | None = None

    def sample_descriptors(
        self, index: int, xy: np.ndarray, height: int, width: int
    ) -> np.ndarray:
        """(N, D) float32 descriptors of image ``index`` at (N, 2) pixels of the (height,
        width) network input (bilinear, :func:`~kp2d_core.geometry.coordinates.sample_map`).
        Quantised maps are sampled first and dequantised after (the weights sum to one: the same
        values), so no float copy of a map is made."""
        from kp2d_core.geometry.coordinates import sample_map, sample_upsampled_map

        if self.conv is not None:
            return self.conv.at_points(self.descriptors[index], xy, height, width)
        one, points = slice(index, index + 1), xy[None]
        if self.fine is None:
            raw = sample_map(self.descriptors[one], points, height, width)[0]
            return self._coarse(raw)
        raw = sample_upsampled_map(self.descriptors[one], points, height, width)[0]
        fine = sample_map(self.fine[one], points, height, width)[0]
        return self._coarse(raw) + self._fine(fine)

    def float_descriptors(self) -> np.ndarray:
        """(B, D, H/4, W/4) float32 descriptors (dequantised, lifted where split, convolved
        where the convolution was left out: 9 products of (H/4 W/4, C) x (C, D), about 0.15 s
        at 640x480)."""
        if self.conv is not None:
            return np.stack([self.conv.dense(features) for features in self.descriptors])
        if self.fine is None:
            return self._coarse(self.descriptors)
        from kp2d_core.geometry.coordinates import upsample_map

        return upsample_map(self._coarse(self.descriptors)) + self._fine(self.fine)

    def _coarse(self, values: np.ndarray) -> np.ndarray:
        return dequantised(values, self.descriptor_scale, self.descriptor_zero_point)

    def _fine(self, values: np.ndarray) -> np.ndarray:
        return dequantised(values, self.fine_scale, self.fine_zero_point)


def dequantised(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 values of a map's uint8 ``values`` (``scale * (values - zero_point)``), or of
    values sampled from it; float ones as they are."""
    if values.dtype == np.uint8 or scale != 1.0 or zero_point != 0:
        shifted = values.astype(np.float32) - np.float32(zero_point)
        return shifted * np.float32(scale)
    return values.astype(np.float32, copy=False)


class Backend(Protocol):
    """A way to run KeypointNet.

    Attributes:
        name: 'torch' or 'onnxruntime'.
        precision: 'fp32', 'bf16', 'fp16' or 'int8'.
        device: where the network runs ('cpu', 'cuda:0', ...).
        use_color: whether the network takes 3 channels (else 1).
    """

    name: str
    precision: str
    device: str
    use_color: bool

    def __call__(self, images: np.ndarray) -> DenseMaps:
        """Dense outputs for normalised float32 images (B, C, H, W), H and W multiples of 8."""
        ...


def label(backend: Backend) -> str:
    return f'{backend.name}:{backend.precision}'
