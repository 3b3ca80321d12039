"""Sub-pixel refinement of matched keypoints on the dense descriptor map."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kp2d_core.geometry.coordinates import sample_map, warp_points
from kp2d_core.inference.features import DescriptorMap
from kp2d_core.inference.matching import match
from kp2d_core.inference.subpixel import STEP_PX, refine_matches
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.vo.detection_policy import EVERY_FRAME

INPUT_HW, NET_HW = (96, 128), (48, 64)  # the input resized to half for the network


def smooth_map(seed: int, dim: int = 32) -> np.ndarray:
    """(D, h, w) descriptors varying smoothly over a 48x64 network input (stride 4)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:12, 0:16].astype(np.float64)
    freq = rng.uniform(-1.5, 1.5, (dim, 2))  # radians per cell
    phase = rng.uniform(0, 2 * np.pi, (dim, 1, 1))
    return np.sin(freq[:, :1, None] * xs + freq[:, 1:, None] * ys + phase).astype(np.float32)


def descriptor_map(values: np.ndarray) -> DescriptorMap:
    return DescriptorMap(values, NET_HW, INPUT_HW, NET_HW)


def sampled(values: np.ndarray, xy_net: np.ndarray) -> np.ndarray:
    """Unit descriptors bilinearly sampled at network-input pixels (N, 2)."""
    return unit_rows(sample_map(values[None], xy_net[None].astype(np.float32), *NET_HW)[0])


def test_the_sharpest_soft_argmax_is_the_best_bilinear_sample_on_the_grid():
    """The cosines come from each point's window (its dot products and Gram matrix): at a
    vanishing temperature the result is the grid offset whose bilinear sample (as
    sample_map computes it) agrees best, borders included."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((16, 12, 16)).astype(np.float32)
    dense = descriptor_map(values)
    xy = np.concatenate([rng.uniform(0, [127, 95], (40, 2)), [[0, 0], [127, 95], [0, 60]]])
    reference = unit_rows(rng.standard_normal((len(xy), 16)).astype(np.float32))
    got = refine_matches(reference, dense, xy, temperature=1e-5)
    steps = np.arange(-2.0, 2.0 + 1e-9, STEP_PX)
    grid = np.stack(np.meshgrid(steps, steps), -1).reshape(-1, 2)
    for i, point in enumerate(dense.to_network(xy)):
        cosine = sampled(values, point + grid) @ reference[i]
        at_result = sampled(values, dense.to_network(got[i : i + 1])) @ reference[i]
        # Beyond the border the map is replicated: equal cosines there, which are averaged.
        assert at_result[0] == pytest.approx(cosine.max(), abs=1e-4), i
        if np.sum(cosine > cosine.max() - 1e-3) == 1:  # no near tie
            best = dense.to_input(point + grid[np.argmax(cosine)])
            assert np.allclose(got[i], np.clip(best, 0, [127, 95]), atol=1e-3), i


@pytest.mark.parametrize('shift', [(0.6, -0.9), (-1.4, 0.3), (0.0, 1.1)])
def test_a_point_moves_to_where_its_partner_s_descriptor_is(shift):
    """Partners' descriptors sampled a known sub-pixel shift away (network pixels): the
    refined points land on the shifted positions."""
    values = smooth_map(0)
    dense = descriptor_map(values)
    rng = np.random.default_rng(1)
    net = rng.uniform(8, [56, 40], (50, 2))
    reference = sampled(values, net + np.array(shift))
    refined = dense.to_network(refine_matches(reference, dense, dense.to_input(net)))
    before = np.linalg.norm(shift)
    after = np.median(np.linalg.norm(refined - (net + shift), axis=1))
    assert after < 0.25 * before, (before, after)


def test_refinement_keeps_points_in_the_image_and_takes_no_points():
    dense = descriptor_map(smooth_map(2))
    xy = np.array([[0.0, 0.0], [127.0, 95.0]], np.float32)
    reference = unit_rows(np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32))
    out = refine_matches(reference, dense, xy)
    assert (out >= 0).all() and (out <= [127, 95]).all()
    assert refine_matches(reference[:0], dense, xy[:0]).shape == (0, 2)
    with pytest.raises(ValueError, match='radius_px'):
        refine_matches(reference, dense, xy, radius_px=3.0)  # beyond half a descriptor cell


@pytest.fixture(scope='module')
def extractor():
    from kp2d_core.config import ExtractorConfig
    from kp2d_core.inference.extractor import KeypointExtractor

    return KeypointExtractor.from_checkpoint(None, 'cpu', ExtractorConfig(top_k=500))


def test_matched_keypoints_of_a_real_pair_move_toward_their_true_positions(extractor):
    """The bundled model on two views of the sample photo: matched keypoints lie closer to
    where the true homography puts their partners once refined."""
    from kp2d_core.data.samples import synthetic_pair

    image0, image1, H = synthetic_pair((240, 320), 0.0, 0.05)
    f0, f1 = extractor.extract(image0), extractor.extract(image1, keep_dense=True)
    assert f0.dense is None and f1.dense is not None and f1.dense.input_hw == (240, 320)
    pairs = match(f0, f1).indices
    truth = warp_points(H, f0.keypoints[pairs[:, 0]])
    detected = f1.keypoints[pairs[:, 1]]
    refined = refine_matches(f0.descriptors[pairs[:, 0]], f1.dense, detected)
    before = np.linalg.norm(detected - truth, axis=1)
    near = before < 3.0  # correct matches
    after = np.linalg.norm(refined - truth, axis=1)
    assert near.sum() > 50
    assert np.median(after[near]) < 0.8 * np.median(before[near]), (
        np.median(before[near]),
        np.median(after[near]),
    )


def test_the_tracker_reports_refined_points_and_keeps_no_dense_map(extractor):
    """With the pipeline, the current frame's matched points are the refined ones (the
    detected ones with ``tracker.subpixel`` off; alignment off), and no dense map outlives
    tracking."""
    from kp2d_core.data.samples import synthetic_pair
    from kp2d_core.vo.frame_pipeline import FramePipeline

    image0, image1, _ = synthetic_pair((240, 320), 0.0, 0.05)
    reported = {}
    for subpixel in (True, False):
        pipeline = FramePipeline(extractor, hybrid=EVERY_FRAME)
        pipeline.tracker.cfg = replace(pipeline.tracker.cfg, subpixel=subpixel, align=False)
        pipeline.process(image0, 1, None)
        result = pipeline.process(image1, 2, None)
        assert result.features.dense is None and pipeline.tracker.key.features.dense is None
        track = result.track
        index = match(pipeline.tracker.key.features, result.features).indices[:, 1]
        reported[subpixel] = np.abs(track.pts_cur - result.features.keypoints[index]).max()
    assert reported[False] == 0.0 and reported[True] > 0.05, reported
