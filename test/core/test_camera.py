"""The camera model: validation, undistortion, and homographies between rectified images."""

from __future__ import annotations

import numpy as np
import pytest

from kp2d_core.data.samples import lens_grid, render_through_lens, view_homography
from kp2d_core.geometry.camera import CameraModel, image_border, same_camera
from kp2d_core.geometry.coordinates import corner_error
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.vo.frame_pipeline import FramePipeline

HW = (480, 640)
K = [420.0, 0.0, 320.0, 0.0, 420.0, 240.0, 0.0, 0.0, 1.0]
LENSES = {
    'plumb_bob': [-0.3, 0.08, 0.0005, -0.0005, 0.0],
    'rational_polynomial': [-0.3, 0.1, 0.0, 0.0, 0.0, 0.05, 0.0, 0.0],
    'equidistant': [0.05, -0.02, 0.005, 0.0],
}
FRAME_NS = 50_000_000


@pytest.mark.parametrize('model', sorted(LENSES))
def test_undistortion_inverts_the_lens(model):
    camera = CameraModel.create(K, LENSES[model], model, image_hw=HW)
    border = image_border(HW)
    normalized = camera.normalize(border)
    assert np.abs(camera.distort(normalized) - border).max() < 1e-6
    # Barrel distortion: the border is further out once undistorted than a pinhole would put it.
    pinhole = (border - [320.0, 240.0]) / 420.0
    outward = np.linalg.norm(normalized, axis=1) / np.linalg.norm(pinhole, axis=1)
    assert (outward > 1.0).mean() > 0.9
    assert np.allclose(camera.rectify(border), camera.project_normalized(normalized))


def test_zero_distortion_changes_nothing():
    rectified = CameraModel.create(K, [0.0] * 5, 'plumb_bob', p=[0.0] * 12, image_hw=HW)
    assert not rectified.distorted and np.allclose(rectified.P, rectified.K)
    pts = image_border(HW)
    assert np.allclose(rectified.rectify(pts), pts)
    points = ImagePoints.of(pts, rectified)
    assert not points.rectified and points.pixels is points.raw
    assert np.allclose(points.intrinsics, rectified.K)
    assert same_camera(rectified, CameraModel.create(K, [], '', image_hw=HW))
    assert not same_camera(rectified, None)


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        (dict(d=[0.1, 0.0, 0.0], distortion_model='plumb_bob'), 'takes'),
        (dict(d=[np.nan] * 5, distortion_model='plumb_bob'), 'not finite'),
        (dict(d=[1e30, 0, 0, 0, 0], distortion_model='plumb_bob'), 'exceed'),
        (dict(d=[0.1, 0, 0, 0, 0], distortion_model='kannala'), 'unknown distortion_model'),
        (dict(d=[0.1, 0, 0, 0, 0, 0], distortion_model='equidistant'), 'takes'),
        (dict(d=[-5.0, 0, 0, 0, 0], distortion_model='plumb_bob'), 'invertible'),
        (dict(r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 2.0]), 'not a rotation'),
        (dict(p=[400.0, 0, 320, 0, 0, -400.0, 240, 0, 0, 0, 1, 0]), 'P'),
        (dict(p=[1.0] * 7), '12'),
    ],
)
def test_bad_calibrations_are_refused_with_a_reason(fields, message):
    with pytest.raises(ValueError, match=message):
        CameraModel.create(K, image_hw=HW, **fields)


def _lens_sequence(model: str, frames: int = 6):
    photo = read_image(sample_photo_path())
    camera = CameraModel.create(K, LENSES[model], model, image_hw=HW)
    grid = lens_grid(camera, HW)
    to_view = [view_homography(photo.shape[:2], HW, t) for t in np.linspace(0.0, 0.25, frames)]
    return camera, [render_through_lens(photo, H, grid) for H in to_view], to_view


def _corner_errors(pipeline: FramePipeline, images, to_view, camera) -> list[float]:
    errors = []
    for index, image in enumerate(images):
        track = pipeline.process(image, index * FRAME_NS, camera).track
        if index == 0:
            continue
        assert track.H_key_to_cur is not None, track.reason
        assert track.rectified == (camera is not None)
        key = track.key_stamp_ns // FRAME_NS
        truth = to_view[index] @ np.linalg.inv(to_view[key])
        errors.append(corner_error(track.H_key_to_cur, truth / truth[2, 2], *HW))
    return errors


@pytest.mark.slow
@pytest.mark.parametrize('model', ['plumb_bob', 'equidistant'])
def test_homography_between_rectified_images_through_a_wide_angle_lens(model):
    """A planar poster seen through a strong lens: with the camera model the homography is the
    exact one between rectified images (within 1 px); ignoring the lens it is far off."""
    camera, images, to_view = _lens_sequence(model)
    pipeline = FramePipeline.from_config()
    with_model = _corner_errors(pipeline, images, to_view, camera)
    pipeline.reset()
    ignored = _corner_errors(pipeline, images, to_view, None)
    assert max(with_model) < 1.0, with_model
    assert min(ignored[1:]) > 5.0, ignored


@pytest.mark.slow
def test_tracks_carry_undistorted_normalised_coordinates():
    camera, images, to_view = _lens_sequence('plumb_bob', frames=4)
    pipeline = FramePipeline.from_config()
    for index, image in enumerate(images):
        tracks = pipeline.process(image, index * FRAME_NS, camera).tracks
    assert np.allclose(tracks.normalized, camera.normalize(tracks.xy))
    continued = tracks.continued
    assert continued.sum() > 100
    # Normalised velocities are the motion of the undistorted points, not of the raw pixels.
    expected = tracks.velocity_normalized[continued] * FRAME_NS * 1e-9
    previous = tracks.normalized[continued] - expected
    assert np.allclose(
        camera.distort(previous) + tracks.velocity[continued] * 0.05,
        tracks.xy[continued],
        atol=1e-6,
    )


@pytest.mark.parametrize('model', ['plumb_bob', 'equidistant'])
def test_a_camera_scaled_to_a_resized_image_sees_the_same_rays(model):
    from kp2d_core.geometry.camera import CameraModel

    d = [-0.2, 0.05, 0.0, 0.0, 0.0] if model == 'plumb_bob' else [0.05, 0.01, 0.0, 0.0]
    camera = CameraModel.create(
        [150, 0, 79.75, 0, 151, 59.75, 0, 0, 1], d, model, None, None, (120, 160)
    )
    big = camera.scaled_to((240, 320))
    pixels = np.array([[10.0, 20.0], [80.0, 60.0], [150.0, 110.0]])
    resized = 2.0 * (pixels + 0.5) - 0.5  # the same places, pixel centres at integers
    assert np.allclose(camera.normalize(pixels), big.normalize(resized), atol=1e-6)
    with pytest.raises(ValueError, match='another aspect ratio'):
        camera.scaled_to((240, 400))
