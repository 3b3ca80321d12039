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
OUT/vo_results.json (one object per sequence and front-end), OUT/report.md, plots per sequence
(trajectory in the plane of its largest spread against the truth, position error over time,
track lengths) and every estimated trajectory as a TUM file, OUT/<sequence>/<front_end>.tum.

Every sequence is read and the output folder checked before anything is computed; a folder
that holds results of an earlier run is refused unless --overwrite (whose results not
rewritten are removed at the end). Every file is written atomically.
"""

from __future__ import annotations

from kp2d_core.blas_threads import one_blas_thread

if __name__ == '__main__':  # as the node runs: every front-end's time per frame is the node's
    one_blas_thread()  # read when NumPy loads: before the imports below

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from kp2d_core.evaluation.cpu import cpu_description
from kp2d_core.evaluation.frontends import KLT_MAX_DISTANCE, ClassicalExtractor, KltExtractor
from kp2d_core.evaluation.sequences import Sequence, SequenceError, read_sequence, write_trajectory
from kp2d_core.evaluation.vo import RunRecord, ate_rmse, run_sequence, spread, summarise
from kp2d_core.inference.backends import label
from kp2d_core.output_files import (
    OutputFolderError,
    atomic_write_bytes,
    atomic_write_text,
    describe_os_error,
    prepare_output_folder,
)
from kp2d_core.vo.detection_policy import RECOVERY_MODELS, HybridConfig
from kp2d_core.vo.feature_tracks import TrackConfig
from kp2d_core.vo.frame_pipeline import FramePipeline, PipelineConfig
from kp2d_core.vo.keyframe_tracker import TrackerConfig

FRONT_ENDS = ('kp2d', 'kp2d_hybrid', 'orb', 'akaze', 'sift', 'klt')  # also kp2d_fp32
# kp2d_hybrid: KP2D with tracker.mode hybrid (Lucas-Kanade between the network's frames);
# kp2d_light (and kp2d_light_hybrid): the bundled light network (model.variant light).
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
    ('rpe_rot_deg_median', 'RPE r med', '{:.3f}'),
    ('h_corner_err_px_median', 'H err (px)', '{:.2f}'),
    ('track_length_median', 'track len', '{:.0f}'),
    ('track_length_per_observation', 'len/obs', '{:.1f}'),
    ('latency_ms_median', 'ms/frame', '{:.0f}'),
    ('detection_ratio', 'net', '{:.2f}'),
    ('wrong_id_per_1000', 'wrong ids/1000', '{:.1f}'),
    ('reid_after_blackout', 're-id', '{:.2f}'),
)
RESULTS = ('vo_results.json', 'report.md', '*.png', '*/*.tum')  # what a run writes in OUT


def make_pipeline(name: str, args: argparse.Namespace) -> FramePipeline:
    """The node's pipeline with ``name``'s front-end (defaults as the node's)."""
    detected = name.endswith(DETECTED) or name == SUBPIXEL
    base = 'kp2d' if name == SUBPIXEL else name.removesuffix(DETECTED)
    hybrid = HybridConfig(mode='hybrid' if base.endswith('_hybrid') else 'every_frame')
    if getattr(args, 'recovery_scale', None) is not None:
        hybrid = dataclasses.replace(hybrid, recovery_scale=args.recovery_scale)
    if getattr(args, 'recovery_model', None) is not None:
        hybrid = dataclasses.replace(hybrid, recovery_model=args.recovery_model)
    base = base.removesuffix('_hybrid')
    variant = 'light' if base == 'kp2d_light' else 'default'
    base = 'kp2d' if base == 'kp2d_light' else base
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
            dataclasses.replace(cfg, extractor=extractor, tracker=tracker, hybrid=hybrid),
            args.checkpoint,
            args.device,
            variant,
        )
        print(f'{name}: backend {label(pipeline.extractor.backend)}')
        if pipeline.recovery is not None:
            print(f'{name}: where Lucas-Kanade fails, {pipeline.recovery.weights.name}')
        return pipeline
    if base == 'klt':  # descriptors identify KLT's own tracks: gate out everything else
        tracker = dataclasses.replace(tracker, max_distance=KLT_MAX_DISTANCE)
        tracks = TrackConfig(max_descriptor_distance=KLT_MAX_DISTANCE)
        return FramePipeline(KltExtractor(args.top_k), tracker, tracks, hybrid)
    if base in ('orb', 'akaze', 'sift'):
        return FramePipeline(ClassicalExtractor(base, args.top_k), tracker, None, hybrid)
    raise SystemExit(f'unknown front-end {name!r}; choose from {FRONT_ENDS}')


def plot_axes(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre (3,), axes (2, 3)): the plane of the truth's largest spread (its first two
    principal axes; x and y of the world without truth)."""
    if len(truth) < 3:
        return np.zeros(3), np.eye(3)[:2]
    centre = truth.mean(axis=0)
    _, _, Vt = np.linalg.svd(truth - centre)
    return centre, Vt[:2]


def plot_sequence(out: Path, sequence, records: dict[str, RunRecord]) -> list[str]:
    """Trajectory in the plane of its largest spread, position error over time and track
    lengths, written atomically; returns the file names."""
    import io

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, (top, error, lengths) = plt.subplots(1, 3, figsize=(16, 4.8))
    truth = np.array([sequence.poses[s][:3, 3] for s in sorted(sequence.poses)]).reshape(-1, 3)
    centre, axes = plot_axes(truth)
    if len(truth):
        flat = (truth - centre) @ axes.T
        top.plot(flat[:, 0], flat[:, 1], 'k-', lw=2, label='truth')
    for name, record in records.items():
        _, _, aligned, gt = ate_rmse(record.poses, sequence.poses)
        if len(aligned):
            flat = (aligned - centre) @ axes.T
            top.plot(flat[:, 0], flat[:, 1], '-', lw=1, label=name)
            error.plot(np.linalg.norm(aligned - gt, axis=1), lw=1, label=name)
        if record.track_lengths:
            bins = np.arange(1, max(record.track_lengths) + 2)
            lengths.hist(record.track_lengths, bins=bins, histtype='step', label=name)
    spreads = spread(truth) if len(truth) >= 3 else np.zeros(3)
    top.set(
        title=f'{sequence.name}: plane of largest spread, Sim(3)-aligned',
        xlabel=f'first axis (m; spread {spreads[0]:.3f})',
        ylabel=f'second axis (m; spread {spreads[1]:.3f})',
    )
    top.axis('equal')
    error.set(title='position error after alignment (m)', xlabel='frame with a pose')
    lengths.set(title='track lengths (frames)', xlabel='frames', yscale='log')
    for axis in (top, error, lengths):
        axis.legend(fontsize=7)
    figure.tight_layout()
    name = f'{sequence.name}.png'
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=90, format='png')
    plt.close(figure)
    atomic_write_bytes(out / name, buffer.getvalue())
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
        'len/obs = mean length of the track an observation belongs to; net = share of frames the '
        'detector ran on; wrong ids/1000 = continuations more than 3 px from where the true '
        'homography puts the point; re-id = share of the tracks alive before a blackout that '
        'come back with their ids within 20 frames after it.',
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
        notes = sorted({row['ate_note'] for row in rows if row.get('ate_note')})
        lines += [f'ATE and RPE t: {note}.' for note in notes]
        left_out = {row['front_end']: len(row['skipped']) for row in rows if row['skipped']}
        if left_out:
            lines.append(f'Frames left out (unreadable, missing or of another size): {left_out}.')
        lines.append('')
    lines += [f'![{p}]({p})' for p in plots]
    return '\n'.join(lines) + '\n'


def read_all(folders: list[Path]) -> list[Sequence]:
    """Every sequence, read before anything is computed; one that cannot be used stops the
    run with its reason."""
    sequences = []
    for folder in folders:
        try:
            sequence = read_sequence(folder)
        except (SequenceError, OSError) as exc:
            raise SystemExit(f'error: {exc}') from None
        if not len(sequence.stamps):
            listed = ', '.join(sequence.skipped[:3]) or 'nothing listed'
            raise SystemExit(f'error: {folder}: no frame to process ({listed})')
        for line in sequence.skipped:
            print(f'{sequence.name}: skipped {line}')
        for line in sequence.notes:
            print(f'{sequence.name}: {line}')
        sequences.append(sequence)
    return sequences


def progress_bar(total: int, description: str):
    """A tqdm bar with ETA (None without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit='frame', dynamic_ncols=True)


def run_all(args, sequences, pipelines, earlier) -> None:
    """Run, write every result atomically, then remove the earlier results not rewritten."""
    results, plots, written = [], [], set()
    for sequence in sequences:
        records = {}
        bar = progress_bar(len(sequence.stamps) * len(pipelines), sequence.name)
        tick = bar.update if bar is not None else None
        for name, pipeline in pipelines.items():
            try:
                records[name] = run_sequence(pipeline, sequence, tick)
            except SequenceError as exc:
                raise SystemExit(f'error: {exc}') from None
            if not records[name].stamps:
                raise SystemExit(
                    f'error: {sequence.name}: no readable frame '
                    f'({"; ".join(records[name].unreadable[:3])})'
                )
            row = summarise(sequence, name, records[name])
            results.append(row)
            (args.out / sequence.name).mkdir(exist_ok=True)
            path = args.out / sequence.name / f'{name}.tum'
            write_trajectory(path, records[name].poses, f'{sequence.name}, {name}: T_world_cam')
            written.add(path)
        if bar is not None:
            bar.close()
        for row in results[-len(pipelines) :]:
            print(json.dumps({k: v for k, v in row.items() if k != 'skipped'}))
            for line in row['skipped']:
                print(f'{sequence.name} ({row["front_end"]}): left out {line}')
        if not args.no_plots:
            plots += plot_sequence(args.out, sequence, records)
    atomic_write_text(args.out / 'vo_results.json', json.dumps(results, indent=2))
    atomic_write_text(args.out / 'report.md', markdown(results, cpu_description(), plots))
    written |= {args.out / p for p in (*plots, 'vo_results.json', 'report.md')}
    for stale in earlier:
        if stale not in written and stale.is_file():
            stale.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('sequences', nargs='+', type=Path)
    parser.add_argument('--front-ends', default=','.join(FRONT_ENDS))
    parser.add_argument('--out', type=Path, default=Path('outputs/vo'))
    parser.add_argument('--overwrite', action='store_true', help='replace results in --out')
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
    parser.add_argument(
        '--recovery-scale',
        type=float,
        default=None,
        help="tracker.recovery_scale for the hybrid front-ends (default: the node's)",
    )
    parser.add_argument(
        '--recovery-model',
        choices=RECOVERY_MODELS,
        default=None,
        help="tracker.recovery_model for KP2D's hybrid front-ends (default: the node's)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        earlier = prepare_output_folder(args.out, RESULTS, args.overwrite)
    except OutputFolderError as exc:
        raise SystemExit(f'error: {exc}') from None
    sequences = read_all(args.sequences)
    names = [n for n in args.front_ends.split(',') if n]
    pipelines = {name: make_pipeline(name, args) for name in names}
    try:
        run_all(args, sequences, pipelines, earlier)
    except OSError as exc:
        raise SystemExit(f'error: cannot write the results: {describe_os_error(exc)}') from None
    print(f'results in {args.out}')


if __name__ == '__main__':
    main()
