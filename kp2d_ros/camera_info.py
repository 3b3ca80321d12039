"""Pairing images with CameraInfo through message_filters (node and replay alike).

CameraInfo messages are validated as a camera model
(:class:`kp2d_core.geometry.camera.CameraModel`: intrinsics, distortion, rectification); valid ones
pass through a ``message_filters`` chain into a ``Cache``, from which each image takes the
CameraInfo nearest to its stamp within a maximum age. CameraInfo is optional: an image without one
close enough is processed without intrinsics (homography in raw pixels, no pose), and images are
never held back waiting for it (an approximate-time synchroniser would). The executor fills the
cache and the worker thread reads it, so both go through one lock.
"""

from __future__ import annotations

from functools import lru_cache
import threading
from typing import Any

import message_filters
from rclpy.clock import ClockType
from rclpy.time import Time

from kp2d_core.geometry.camera import CameraModel
from kp2d_ros.stamps import stamp_ns


def camera_model(msg: Any) -> CameraModel:
    """The validated camera model of a sensor_msgs/CameraInfo (raises ValueError)."""
    return CameraModel.create(
        msg.k,
        msg.d,
        str(msg.distortion_model),
        msg.r,
        msg.p,
        (int(msg.height), int(msg.width)),
    )


def camera_for_image(
    camera: CameraModel | None, image_hw: tuple[int, int], scale: bool
) -> tuple[CameraModel | None, str]:
    """(the camera to use for an image of ``image_hw``, why it was refused or '').

    A calibration of the image's own size is used as it is; one of another size is scaled
    to the image when ``scale`` allows it and the aspect ratio is the same (binning, a
    resized stream), and refused otherwise (a crop, another camera or a wrong topic): the
    frame is then processed without intrinsics, as without CameraInfo.
    """
    if camera is None or camera.image_hw in (tuple(image_hw), (0, 0)):
        return camera, ''
    calibrated = f'{camera.image_hw[1]}x{camera.image_hw[0]}'
    frame = f'{image_hw[1]}x{image_hw[0]}'
    if not scale:
        return None, (
            f'the CameraInfo is for {calibrated} images, the frame is {frame} '
            '(camera_info_scale: true scales a calibration of the same aspect ratio)'
        )
    try:
        return _scaled(camera, (int(image_hw[0]), int(image_hw[1]))), ''
    except ValueError as exc:
        return None, str(exc)


@lru_cache(maxsize=8)
def _scaled(camera: CameraModel, image_hw: tuple[int, int]) -> CameraModel:
    return camera.scaled_to(image_hw)  # a few ms: once per calibration and size


class CameraInfoPairing:
    """Validated CameraInfo in a message_filters Cache; :meth:`lookup` by image stamp."""

    def __init__(self, size: int = 10) -> None:
        self.valid = message_filters.SimpleFilter()  # the validated stream
        self.cache = message_filters.Cache(self.valid, size)
        self._models: dict[int, CameraModel] = {}  # id(message in the cache) -> model
        self._lock = threading.Lock()

    def add(self, msg: Any) -> CameraModel:
        """Validate a CameraInfo and cache it.

        Raises:
            ValueError: the camera model is invalid (nothing is cached).
        """
        if not 0 <= int(msg.header.stamp.nanosec) < 1_000_000_000:
            raise ValueError(f'invalid CameraInfo stamp nanosec {msg.header.stamp.nanosec}')
        model = camera_model(msg)
        with self._lock:
            self.valid.signalMessage(msg)
            live = {id(m) for m in self.cache.cache_msgs}
            self._models = {k: v for k, v in self._models.items() if k in live}
            self._models[id(msg)] = model
        return model

    def lookup(self, image_stamp_ns: int, max_age_ns: int) -> CameraModel | None:
        """The camera of the CameraInfo nearest to ``image_stamp_ns`` within ``max_age_ns``."""
        target = Time(nanoseconds=int(image_stamp_ns), clock_type=ClockType.ROS_TIME)
        with self._lock:
            candidates = [
                m
                for m in (
                    self.cache.getElemBeforeTime(target),
                    self.cache.getElemAfterTime(target),
                )
                if m is not None
            ]
            if not candidates:
                return None
            best = min(candidates, key=lambda m: abs(stamp_ns(m.header.stamp) - image_stamp_ns))
            if abs(stamp_ns(best.header.stamp) - image_stamp_ns) > max_age_ns:
                return None
            return self._models.get(id(best))

    def clear(self) -> None:
        with self._lock:
            self.cache.cache_msgs.clear()
            self.cache.cache_times.clear()
            self._models.clear()
