"""What the front-end gives for one image: keypoints, scores, descriptors, and optionally the
dense descriptor map and the grey image the tracker refines matches with."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from kp2d_core.geometry.coordinates import resize_points
from kp2d_core.inference.descriptor_conv import DescriptorConv


@dataclass(frozen=True)
class DescriptorMap:
    """The dense descriptors of one image.

    Attributes:
        values: (D, h, w) raw (not normalised) descriptors covering the padded network input;
            with ``conv``, its (h, w, C) uint8 input (the descriptors are computed where read).
        network_hw: (Hp, Wp) the padded network-input size the map covers.
        input_hw: (H, W) of the image the keypoints refer to.
        resized_hw: (Hn, Wn) the network-input size before padding (the input resized).
        conv: None, or the descriptor head's last convolution
            (:mod:`kp2d_core.inference.descriptor_conv`).
    """

    values: np.ndarray
    network_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    conv: DescriptorConv | None = None

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) descriptor cells."""
        shape = self.values.shape[:2] if self.conv is not None else self.values.shape[-2:]
        return int(shape[0]), int(shape[1])

    @property
    def stride(self) -> float:
        """Network-input pixels per descriptor cell."""
        return self.network_hw[1] / self.grid_hw[1]

    def at_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(..., D) float32 raw descriptors at integer cells (``rows``, ``cols`` of one
        shape, within the grid)."""
        if self.conv is not None:
            return self.conv.at_cells(self.values, rows, cols)
        return np.moveaxis(self.values[:, rows, cols], 0, -1).astype(np.float32)

    def to_network(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) input pixels -> network-input pixels."""
        return resize_points(np.asarray(xy, np.float64), self.input_hw, self.resized_hw)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) network-input pixels -> input pixels."""
        return resize_points(xy, self.resized_hw, self.input_hw)


@dataclass(frozen=True)
class Features:
    """Keypoints of one image.

    Attributes:
        keypoints: (N, 2) float32 pixel coordinates (x, y) in the input image.
        scores: (N,) float32 scores in (0, 1], sorted in decreasing order.
        descriptors: (N, D) float32, unit L2 norm.
        image_size: (H, W) of the input image.
        dense: the dense descriptors for refining matches (KP2D only; None once tracked).
        gray: (H, W) uint8 grey image for tracking (alignment, the tracks' texture test;
            None after tracking).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    dense: DescriptorMap | None = field(default=None, repr=False, compare=False)
    gray: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ('keypoints', 'scores', 'descriptors'):  # any array-like, as float32
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.float32))
        n = len(self.keypoints)
        if self.keypoints.shape != (n, 2) or self.scores.shape != (n,):
            raise ValueError(
                f'keypoints {self.keypoints.shape} and scores {self.scores.shape} '
                'are not (N, 2) and (N,)'
            )
        if self.descriptors.ndim != 2 or len(self.descriptors) != n:
            raise ValueError(f'descriptors {self.descriptors.shape} are not ({n}, D)')

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def appended(
        self, keypoints: np.ndarray, scores: np.ndarray, descriptors: np.ndarray
    ) -> tuple[Features, np.ndarray, np.ndarray]:
        """These features and M more ((M, 2) keypoints, (M,) scores, (M, D) descriptors), in
        decreasing score order again: (features, (N,) the new row of each of these, (M,) the
        rows of the added ones). The dense descriptors and the grey image stay."""
        order = np.argsort(-np.concatenate([self.scores, scores]), kind='stable')
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        features = replace(
            self,
            keypoints=np.concatenate([self.keypoints, keypoints])[order],
            scores=np.concatenate([self.scores, scores])[order],
            descriptors=np.concatenate([self.descriptors, descriptors])[order],
        )
        return features, rank[: len(self)], rank[len(self) :]

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (N,2), scores (N,), descriptors (N,D)) as float32 NumPy arrays."""
        return self.keypoints, self.scores, self.descriptors
