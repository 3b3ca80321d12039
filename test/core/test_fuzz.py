"""Property-based fuzzing of the inputs kp2d_core accepts from the outside (bounded runs)."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
import torch

from kp2d_core import ExtractorConfig, KeypointExtractor, KeypointNet, save_checkpoint
from kp2d_core.geometry.camera import camera_matrix
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.files import CheckpointError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope='module')
def small_extractor() -> KeypointExtractor:
    torch.manual_seed(0)
    return KeypointExtractor(KeypointNet().eval(), ExtractorConfig(top_k=20))


image_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, '>u2', np.float32, np.float64, np.int32, bool]),
    shape=st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40),
        st.tuples(st.integers(24, 40), st.integers(24, 40), st.sampled_from([1, 3, 4])),
    ),
)


@FUZZ
@given(image=image_arrays)
def test_extract_takes_an_image_or_says_why(small_extractor, image):
    try:
        features = small_extractor.extract(image)
    except ValueError as exc:
        assert str(exc)  # a reason, never a bare error
        return
    assert features.keypoints.shape[1] == 2 and np.isfinite(features.keypoints).all()
    assert features.image_size == image.shape[:2]


@FUZZ
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=9, max_size=9),
    height=st.integers(0, 4000),
    width=st.integers(0, 4000),
)
def test_camera_matrix_is_a_camera_or_an_error(values, height, width):
    try:
        K = camera_matrix(values, (height, width))
    except ValueError:
        return
    assert np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0
    assert np.array_equal(K[2], [0.0, 0.0, 1.0])


@pytest.fixture(scope='module')
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp('c') / 'm.pt'
    torch.manual_seed(0)
    save_checkpoint(path, KeypointNet(), half=True)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_corrupt_checkpoints_fail_with_a_checkpoint_error(
    tmp_path_factory, checkpoint_bytes, data
):
    blob = bytearray(checkpoint_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path_factory.mktemp('fuzz') / 'm.pt'
    path.write_bytes(bytes(blob))
    try:
        model = load_model(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    for value in model.state_dict().values():  # a byte flip that survived the checks
        assert not value.is_floating_point() or torch.isfinite(value).all()


def test_checkpoint_from_a_stream_of_garbage_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save(
        {'format': 'kp2d', 'format_version': 1, 'model_config': {}, 'state_dict': 7}, buffer
    )
    (tmp_path / 'm.pt').write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError):
        load_model(tmp_path / 'm.pt')


def _encoded(kind: str) -> bytes:
    import cv2

    from kp2d_core.images import read_image
    from kp2d_core.inference.probe import sample_photo_path

    photo = read_image(sample_photo_path())[:64, :96]
    return cv2.imencode(f'.{kind}', photo)[1].tobytes()


ENCODED = {kind: _encoded(kind) for kind in ('jpg', 'png')}


@FUZZ
@given(data=st.data())
def test_encoded_images_decode_or_say_why(data):
    """Compressed payloads: headers claiming any size, truncations and byte flips."""
    from kp2d_core.images import ImageFileError, decode_image

    blob = bytearray(ENCODED[data.draw(st.sampled_from(sorted(ENCODED)))])
    if blob[:2] == b'\xff\xd8':
        sof = blob.index(b'\xff\xc0')
        height, width = data.draw(st.integers(0, 65535)), data.draw(st.integers(0, 65535))
        blob[sof + 5 : sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    elif data.draw(st.booleans()):
        blob[16:24] = data.draw(st.binary(min_size=8, max_size=8))  # PNG width and height
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        image = decode_image(bytes(blob), max_pixels=4_000_000)
    except ImageFileError as exc:
        assert str(exc)
        return
    assert image.ndim == 3 and image.shape[0] * image.shape[1] <= 4_000_000


ros_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(-(2**31), 2**31), max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.lists(st.booleans(), max_size=3),
    st.lists(st.text(max_size=5), max_size=3),
    st.binary(max_size=8),
)


@FUZZ
@given(data=st.data())
def test_parameters_of_every_ros_type_are_accepted_or_named(data):
    """Any value of any ROS parameter type for any parameter: valid options or one line that
    names the parameter."""
    from kp2d_ros.parameters import DEFAULTS, options_from_values

    name = data.draw(st.sampled_from(sorted(DEFAULTS)))
    value = data.draw(ros_values)
    try:
        options = options_from_values({**DEFAULTS, name: value})
    except ValueError as exc:
        message = str(exc)
        assert '\n' not in message and (name in message or 'invalid parameter' in message)
        return
    assert options.pipeline.extractor.top_k >= 1
    assert np.isfinite(options.pipeline.tracker.ransac_threshold_px)
