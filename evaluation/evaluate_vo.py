#!/usr/bin/env python3
"""Sequence benchmark: homographies, odometry and tracks of every front-end along camera
sequences, against the ground truth.

    python evaluation/evaluate_vo.py SEQ_DIR [SEQ_DIR ...] \
        --front-ends kp2d,orb,akaze,sift,klt --out OUT [--checkpoint model.pt] [--top-k 1000]
        [--ransac-threshold PX]

SEQ_DIR is a TUM RGB-D style folder (rgb.txt, groundtruth.txt, camera.yaml, optional
groundtruth_homography.txt; evaluation/build_sequences.py writes these) or an EuRoC ASL folder
(mav0/...). Every front-end runs through the same per-frame pipeline as the node (keyframes,
homography, pose, tracks; kp2d_core.vo.frame_pipeline) with the node's default settings. Writes
OUT/vo_results.json (one object per sequence and front-end), OUT/report.md and plots per
sequence (trajectory top view against the truth, position error over time, track lengths).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from kp2d_core.evaluation.frontends import KLT_MAX_DISTANCE, ClassicalExtractor, KltExtractor
from kp2d_core.evaluation.report import cpu_description
from kp2d_core.evaluation.sequences import SequenceError, read_sequence
from kp2d_core.evaluation.vo import RunRecord, ate_rmse, run_sequence, summarise
from kp2d_core.inference.backends import label
from kp2d_core.vo.feature_tracks import TrackConfig
from kp2d_core.vo.frame_pipeline import FramePipeline, PipelineConfig
from kp2d_core.vo.keyframe_tracker import TrackerConfig

FRONT_ENDS = ('kp2d', 'orb', 'akaze', 'sift', 'klt')  # also kp2d_fp32 (eager PyTorch fp32)
# Any front-end with '_detected' (e.g. sift_detected): tracker.align off, its matches as found;
# kp2d_subpixel: tracker.align off, KP2D's matches refined on its dense descriptors instead.
DETECTED, SUBPIXEL = '_detected', 'kp2d_subpixel'
COLUMNS = (
    ('front_end', 'front-end', '{}'),
    ('tracked_ratio', 'tracked', '{:.3f}'),
    ('pose_ratio', 'pose', '{:.3f}'),
    ('ate_rmse', 'ATE (m)', '{:.3f}'),
    ('rpe_trans', 'RPE t (m/s)', '{:.3f}'),
    ('rpe_rot_deg', 'RPE r (deg/s)', '{:.2f}'),
    ('h_corner_err_px_median', 'H err (px)', '{:.2f}'),
    ('track_length_median', 'track len', '{:.0f}'),
    ('track_length_per_observation', 'len/obs', '{:.1f}'),
    ('latency_ms_median', 'ms/frame', '{:.0f}'),
)


def make_pipeline(name: str, args: argparse.Namespace) -> FramePipeline:
    """The node's pipeline with ``name``'s front-end (defaults as the node's)."""
    detected = name.endswith(DETECTED) or name == SUBPIXEL
    base = 'kp2d' if name == SUBPIXEL else name.removesuffix(DETECTED)
    tracker = TrackerConfig(subpixel=name == SUBPIXEL, align=not detected)
    if getattr(args, 'ransac_threshold', None) is not None:
        tracker = dataclasses.replace(tracker, ransac_threshold_px=args.ransac_threshold)
    if base in ('kp2d', 'kp2d_fp32'):  # the node's automatic backend, or the reference
        cfg = PipelineConfig()
        fields = {'top_k': args.top_k}
        if base == 'kp2d_fp32':
            fields.update(backend='torch', precision='fp32')
        extractor = dataclasses.replace(cfg.extractor, **fields)
        pipeline = FramePipeline.from_config(
            dataclasses.replace(cfg, extractor=extractor, tracker=tracker),
            args.checkpoint,
            args.device,
        )
        print(f'{name}: backend {label(pipeline.extractor.backend)}')
        return pipeline
    if base == 'klt':  # descriptors identify KLT's own tracks: gate out everything else
        tracker = dataclasses.replace(tracker, max_distance=KLT_MAX_DISTANCE)
        tracks = TrackConfig(max_descriptor_distance=KLT_MAX_DISTANCE)
        return FramePipeline(KltExtractor(args.top_k), tracker, tracks)
    if base in ('orb', 'akaze', 'sift'):
        return FramePipeline(ClassicalExtractor(base, args.top_k), tracker)
    raise SystemExit(f'unknown front-end {name!r}; choose from {FRONT_ENDS}')


def plot_sequence(out: Path, sequence, records: dict[str, RunRecord]) -> list[str]:
    """Trajectory top view, position error over time and track lengths; returns file names."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, (top, error, lengths) = plt.subplots(1, 3, figsize=(16, 4.8))
    truth = np.array([sequence.poses[s][:3, 3] for s in sorted(sequence.poses)])
    if len(truth):
        top.plot(truth[:, 0], truth[:, 2], 'k-', lw=2, label='truth')
    for name, record in records.items():
        _, _, aligned, gt = ate_rmse(record.poses, sequence.poses)
        if len(aligned):
            top.plot(aligned[:, 0], aligned[:, 2], '-', lw=1, label=name)
            error.plot(np.linalg.norm(aligned - gt, axis=1), lw=1, label=name)
        if record.track_lengths:
            bins = np.arange(1, max(record.track_lengths) + 2)
            lengths.hist(record.track_lengths, bins=bins, histtype='step', label=name)
    top.set(title=f'{sequence.name}: top view (x, z), Sim(3)-aligned', xlabel='x', ylabel='z')
    top.axis('equal')
    error.set(title='position error after alignment (m)', xlabel='frame with a pose')
    lengths.set(title='track lengths (frames)', xlabel='frames', yscale='log')
    for axis in (top, error, lengths):
        axis.legend(fontsize=7)
    figure.tight_layout()
    name = f'{sequence.name}.png'
    figure.savefig(out / name, dpi=90)
    plt.close(figure)
    return [name]


def markdown(results: list[dict], cpu: str, plots: list[str]) -> str:
    lines = [
        '# Sequence benchmark',
        '',
        f"CPU: {cpu}. Every front-end through the node's pipeline with its defaults (top-k "
        'keypoints, keyframes, MAGSAC++ homographies, poses with intrinsics, feature tracks).',
        'tracked = frames with a keyframe homography; pose = frames with a pose; ATE after '
        'Sim(3) alignment; RPE over 1 s; H err = median corner error of keyframe-to-frame '
        'homographies against the truth (rectified pixels); track len = median frames per track; '
        'len/obs = mean length of the track an observation belongs to.',
        '',
    ]
    for sequence in sorted({r['sequence'] for r in results}):
        rows = [r for r in results if r['sequence'] == sequence]
        lines += [f'## {sequence} ({rows[0]["frames"]} frames)', '']
        lines.append('| ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |')
        lines.append('|' + '---|' * len(COLUMNS))
        for row in rows:
            cells = [
                fmt.format(row[key]) if row[key] is not None else '—' for key, _, fmt in COLUMNS
            ]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines += [f'![{p}]({p})' for p in plots]
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('sequences', nargs='+', type=Path)
    parser.add_argument('--front-ends', default=','.join(FRONT_ENDS))
    parser.add_argument('--out', type=Path, default=Path('outputs/vo'))
    parser.add_argument('--checkpoint', default=None, help='KP2D weights (default: bundled)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--top-k', type=int, default=1000)
    parser.add_argument('--no-plots', action='store_true')
    parser.add_argument(
        '--ransac-threshold',
        type=float,
        default=None,
        help="tracker.ransac_threshold_px for every front-end (default: the node's, 3 px)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in args.front_ends.split(',') if n]
    pipelines = {name: make_pipeline(name, args) for name in names}
    args.out.mkdir(parents=True, exist_ok=True)
    results, plots = [], []
    for folder in args.sequences:
        try:
            sequence = read_sequence(folder)
        except (SequenceError, OSError) as exc:
            raise SystemExit(f'error: {exc}') from exc
        for skipped in sequence.skipped:
            print(f'{sequence.name}: skipped {skipped}')
        records = {}
        for name, pipeline in pipelines.items():
            records[name] = run_sequence(pipeline, sequence)
            results.append(summarise(sequence, name, records[name]))
            print(json.dumps(results[-1]))
        if not args.no_plots:
            plots += plot_sequence(args.out, sequence, records)
    (args.out / 'vo_results.json').write_text(json.dumps(results, indent=2))
    (args.out / 'report.md').write_text(markdown(results, cpu_description(), plots))
    print(f'results in {args.out}')


if __name__ == '__main__':
    main()
