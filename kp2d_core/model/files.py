"""Model files without PyTorch: where the bundled weights are, their digest, and what an ONNX
model records about itself (the weights it was exported from, its precision and the reference
outputs it must reproduce).

Inference on ONNX Runtime needs only this module of the model-file machinery, so a process
that runs the ONNX model (the ROS node) never loads PyTorch. Writing checkpoints and exporting
models (:mod:`kp2d_core.model.checkpoint`, :mod:`kp2d_core.inference.export`) use PyTorch.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
import io
import os
from pathlib import Path

import numpy as np

from kp2d_core.model.descriptors import unit_rows

BUNDLED_WEIGHTS = {'default': 'kp2d_default.pt', 'light': 'kp2d_light.pt'}
WEIGHTS_SHA_KEY = 'kp2d_weights_sha256'
PRECISION_KEY = 'kp2d_precision'
REFERENCE_KEY = 'kp2d_reference'
DESCRIPTOR_QUANTISATION_KEY = 'kp2d_descriptor_quantization'  # of uint8 descriptor outputs
# Each uint8 descriptor output of an ONNX model -> the metadata key of its quantisation.
QUANTISATION_KEYS = {
    'descriptors': DESCRIPTOR_QUANTISATION_KEY,
    'descriptors_fine': 'kp2d_descriptor_fine_quantization',
}
# The descriptor head's last convolution, where the graph leaves it to the front-end.
DESCRIPTOR_CONV_KEY = 'kp2d_descriptor_conv'
REFERENCE_FIELDS = ('top', 'coords', 'descriptors')
REFERENCE_CELLS = 100  # the best-scored cells whose keypoints are compared
PROBE_HW = (120, 160)  # the probe image the reference outputs are computed on


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable, foreign, mismatched or implausible.

    The message names the file and the reason.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (also a FileNotFoundError)."""


def bundled_weights_path(variant: str = 'default') -> Path:
    """Path of the bundled weights of a variant: 'default' (the paper's network,
    ``kp2d_core/weights/kp2d_default.pt``) or 'light' (the fast network for CPUs,
    ``kp2d_light.pt``).

    Raises:
        ValueError: an unknown variant.
        CheckpointNotFoundError: the package was installed without those weights.
    """
    if variant not in BUNDLED_WEIGHTS:
        raise ValueError(
            f'unknown model variant {variant!r}; choose from {sorted(BUNDLED_WEIGHTS)}'
        )
    name = BUNDLED_WEIGHTS[variant]
    path = Path(str(resources.files('kp2d_core').joinpath('weights', name)))
    if not path.is_file():
        raise CheckpointNotFoundError(f'bundled {variant} weights not found at {path}')
    return path


def default_weights_path() -> Path:
    """Path of the bundled default weights (``kp2d_core/weights/kp2d_default.pt``).

    Raises:
        CheckpointNotFoundError: if the package was installed without its weights.
    """
    return bundled_weights_path('default')


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def reference_from_outputs(
    score: np.ndarray, coords: np.ndarray, descriptors: np.ndarray
) -> dict[str, np.ndarray]:
    """What an exported model must reproduce, from the reference network's dense outputs on
    the probe image (shapes of :class:`~kp2d_core.inference.backends.base.DenseMaps`, batch 1).

    Returns:
        'top' (100,) indices of the best-scored cells, 'coords' (2, 100) their keypoints, and
        'descriptors' (D, h/2, w/2) every second descriptor in each direction, unit norm,
        float16 (a few hundred kB in the ONNX metadata).
    """
    top = np.argsort(-score.reshape(-1), kind='stable')[:REFERENCE_CELLS]
    coords = coords[0].reshape(2, -1)[:, top].astype(np.float32)
    unit = _compared_descriptors(descriptors)
    return {'top': top.astype(np.int64), 'coords': coords, 'descriptors': unit.astype(np.float16)}


def _compared_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """(D, h/2, w/2) unit vectors: every second descriptor of (1, D, h, w) in each direction."""
    return unit_rows(descriptors[0, :, ::2, ::2], axis=0)


def encode_reference(reference: dict[str, np.ndarray], weights_sha256: str) -> str:
    """The reference of the weights with this sha256 as an ONNX metadata string (base64 of a
    compressed .npz that names the weights, so a model relabelled for other weights keeps a
    reference that gives it away)."""
    buffer = io.BytesIO()
    arrays = {key: reference[key] for key in REFERENCE_FIELDS}
    np.savez_compressed(buffer, weights_sha256=np.array(weights_sha256), **arrays)
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def decode_reference(text: str, weights_sha256: str) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_reference`, for the weights with this sha256.

    Raises:
        ValueError: the text is not a reference written by :func:`encode_reference`, or it
            was computed from other weights.
    """
    try:
        with np.load(io.BytesIO(base64.b64decode(text, validate=True))) as stored:
            reference = {key: np.asarray(stored[key]) for key in REFERENCE_FIELDS}
            owner = str(stored['weights_sha256'])
    except Exception as exc:  # binascii, zipfile, KeyError, pickle refusal: not a reference
        raise ValueError(f'unreadable reference outputs ({type(exc).__name__})') from exc
    if owner != weights_sha256:
        raise ValueError('its reference outputs were computed from other weights')
    if reference['coords'].shape != (2, len(reference['top'])):
        raise ValueError(f'reference keypoints of shape {reference["coords"].shape}')
    return reference


def compare_to_reference(
    reference: dict[str, np.ndarray], coords: np.ndarray, descriptors: np.ndarray
) -> tuple[float, float]:
    """(mean keypoint shift in px, mean descriptor cosine) of a model's probe-image outputs
    (coords (1, 2, h, w), descriptors (1, D, 2h, 2w)) against the reference.

    Raises:
        ValueError: the outputs do not have the reference's shapes.
    """
    flat = coords[0].reshape(2, -1)
    sub = _compared_descriptors(descriptors)
    expected = reference['descriptors'].astype(np.float32)
    if reference['top'].max(initial=0) >= flat.shape[1] or sub.shape != expected.shape:
        raise ValueError(
            f'outputs of shape {coords.shape} / {descriptors.shape} do not fit the reference '
            f'({expected.shape} descriptors)'
        )
    shift = np.linalg.norm(flat[:, reference['top']] - reference['coords'], axis=0).mean()
    cosine = (sub * expected).sum(axis=0).mean()
    return float(shift), float(cosine)


def descriptor_quantisation(
    metadata: dict[str, str], path: str | os.PathLike, output: str = 'descriptors'
) -> tuple[float, int]:
    """(scale, zero point) of an ONNX model's uint8 descriptor ``output`` (a key of
    :data:`QUANTISATION_KEYS`), as recorded in its metadata
    (:func:`kp2d_core.inference.int8_heads.int8_descriptors`).

    Raises:
        ValueError: not recorded, or not a positive finite scale and a uint8 zero point.
    """
    import json

    key = QUANTISATION_KEYS[output]
    text = metadata.get(key)
    try:
        entry = json.loads(text) if text is not None else None
        scale, zero_point = float(entry['scale']), entry['zero_point']
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f'{path} outputs uint8 {output} without a readable scale and zero point '
            f'({key}: {str(text)[:40]!r})'
        ) from exc
    if not (np.isfinite(scale) and scale > 0) or zero_point not in range(256):
        raise ValueError(f'{path}: implausible {output} quantisation {text[:40]!r}')
    return scale, int(zero_point)
