"""Whole images mapped from one frame's raw pixels to another's under a homography between
their geometry frames (rectified pixels with a distorting lens, raw pixels without; see
:mod:`kp2d_core.geometry.image_points`), through the lens on both sides.

Points are mapped exactly (:func:`frame_map`, the camera model's own functions). Images are
resampled through a map computed exactly on a coarse grid and interpolated in between
(:func:`resampling_map`); with a lens, its rectification at the grid and the raw pixel of
every rectified pixel (OpenCV's undistortion maps) are tables built once per camera
(:class:`LensTables`), so a frame's map costs a few milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.coordinates import sample_map, warp_points
from kp2d_core.geometry.image_points import ImagePoints

__all__ = ['LensTables', 'frame_map', 'resample_into', 'resampling_map', 'to_raw']

GRID_STEP = 4  # px between exactly mapped pixels; bilinear in between
MAX_TABLES = 4  # cameras whose lens tables are kept


def to_raw(camera: CameraModel | None, pixels: np.ndarray) -> np.ndarray:
    """(N, 2) geometry-frame pixels -> raw pixels (the inverse of ``ImagePoints.pixels``)."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
    if camera is None or not camera.distorted:
        return pixels
    normalized = warp_points(np.linalg.inv(camera.P), pixels)
    return camera.distort(normalized)


def frame_map(camera: CameraModel | None, H: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """(N, 2) raw pixels of one frame -> (N, 2) raw pixels of another under the geometry-frame
    homography ``H`` (3, 3) between them (through the lens on both sides)."""
    return to_raw(camera, warp_points(H, ImagePoints.of(raw, camera).pixels))


class LensTables:
    """One distorting camera's lens as lookup tables, for mapping whole images per frame.

    Attributes:
        grid: (ny, nx, 2) raw pixels every :data:`GRID_STEP` pixels, one step beyond the
            image on every side (see :func:`resampling_map`).
        grid_rectified: (ny, nx, 2) their rectified pixels (exact).
        table: (2, h, w) float32 raw pixels of the rectified pixels ``origin + (x, y)``
            (OpenCV's undistortion maps over the rectified image's extent).
        origin: (2,) rectified pixel of the table's first cell.
    """

    def __init__(self, camera: CameraModel, image_hw: tuple[int, int]) -> None:
        self.grid = raw_grid(image_hw)
        flat = self.grid.reshape(-1, 2)
        self.grid_rectified = camera.rectify(flat).reshape(self.grid.shape)
        extent = self.grid_rectified[np.isfinite(self.grid_rectified).all(axis=-1)]
        height, width = image_hw
        low = np.maximum(np.floor(extent.min(axis=0)) - 2, [-width, -height])
        high = np.minimum(np.ceil(extent.max(axis=0)) + 2, [2 * width, 2 * height])
        size = (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)
        shifted = np.array([[1, 0, -low[0]], [0, 1, -low[1]], [0, 0, 1]]) @ camera.P
        undistort = cv2.fisheye if camera.model == 'equidistant' else cv2
        map_x, map_y = undistort.initUndistortRectifyMap(
            camera.K, camera.D, camera.R, shifted, size, cv2.CV_32FC1
        )
        self.table, self.origin = np.stack([map_x, map_y]), low

    def raw(self, rectified: np.ndarray) -> np.ndarray:
        """(..., 2) rectified pixels -> (..., 2) raw pixels, bilinear in the table (NaN
        outside it)."""
        cells = rectified - self.origin
        h, w = self.table.shape[1:]
        flat = sample_map(self.table[None], cells.reshape(1, -1, 2), h, w)[0]
        x, y = cells[..., 0], cells[..., 1]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        return np.where(inside[..., None], flat.reshape(cells.shape), np.nan)


def raw_grid(image_hw: tuple[int, int]) -> np.ndarray:
    """(ny, nx, 2) pixels every :data:`GRID_STEP`, as ``cv2.resize`` by GRID_STEP places its
    samples on an output starting one step before the image's first pixel."""
    height, width = image_hw
    step = GRID_STEP
    nx, ny = -(-width // step) + 2, -(-height // step) + 2
    xs = step * np.arange(nx) + (step - 1) / 2.0 - step
    ys = step * np.arange(ny) + (step - 1) / 2.0 - step
    return np.stack(np.meshgrid(xs, ys), -1)


_TABLES: dict[tuple, LensTables] = {}


def lens_tables(camera: CameraModel, image_hw: tuple[int, int]) -> LensTables:
    """The :class:`LensTables` of ``camera`` for images of ``image_hw`` (kept for the last
    :data:`MAX_TABLES` cameras: built once, 10-100 ms)."""
    key = (camera.model, image_hw) + tuple(
        a.tobytes() for a in (camera.K, camera.D, camera.R, camera.P)
    )
    if key not in _TABLES:
        if len(_TABLES) >= MAX_TABLES:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = LensTables(camera, image_hw)
    return _TABLES[key]


def resampling_map(
    camera: CameraModel | None, H: np.ndarray, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of an ``out_hw`` frame falls in another frame, ``H`` (3, 3) mapping
    the first's geometry-frame pixels to the second's.

    The map is computed on a grid every :data:`GRID_STEP` pixels (reaching one step beyond
    the border, so no pixel is extrapolated; through the lens by :class:`LensTables`) and
    interpolated bilinearly in between.

    Returns:
        (out_hw) float32 x and y raw pixels of the other frame (NaN where the lens has none).
    """
    height, width = out_hw
    if camera is None or not camera.distorted:
        grid = raw_grid(out_hw)
        mapped = warp_points(H, grid.reshape(-1, 2)).reshape(grid.shape)
    else:
        tables = lens_tables(camera, out_hw)
        grid = tables.grid_rectified
        mapped = tables.raw(warp_points(H, grid.reshape(-1, 2)).reshape(grid.shape))
    ny, nx = grid.shape[:2]
    step = GRID_STEP
    dense = cv2.resize(mapped.astype(np.float32), (nx * step, ny * step), cv2.INTER_LINEAR)
    dense = dense[step : step + height, step : step + width]
    return np.ascontiguousarray(dense[..., 0]), np.ascontiguousarray(dense[..., 1])


def resample_into(
    image: np.ndarray, camera: CameraModel | None, H: np.ndarray, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resampled into another frame's raw pixels (:func:`resampling_map`), ``H``
    (3, 3) mapping that frame's geometry-frame pixels to ``image``'s.

    Returns:
        (out_hw) image of ``image``'s dtype, (out_hw) bool where the map falls inside it.
    """
    map_x, map_y = resampling_map(camera, H, out_hw)
    src_h, src_w = image.shape[:2]
    inside = np.isfinite(map_x) & np.isfinite(map_y)
    inside &= (map_x >= 0) & (map_x <= src_w - 1) & (map_y >= 0) & (map_y <= src_h - 1)
    map_x = np.where(inside, map_x, -1.0).astype(np.float32)
    map_y = np.where(inside, map_y, -1.0).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, inside
