#!/usr/bin/env python3
"""Node throughput: 640x480 frames at 30 Hz into the kp2d node in another process.

    python -m benchmarks.node [--seconds 20] [--rate 30] [--variant light] [--mode every_frame]
        [--recovery-model same] [--checkpoint PATH] [--reliable]

For the native 640x480 input and for ``detector.resize`` 240x320 it prints the node's output
rate (processed frames per second, from its /diagnostics), the frames replaced before
processing (``dropped.superseded``), the latency, extract() alone with the same backend
measured in this process on the same frames, as a ratio, the per-frame cost of the
keyframe tracker and of the feature tracks (measured in this process on the same features)
and the node's peak memory; then the
peak memory after the largest frame processed at full size (``detector.max_input_pixels``,
1088x1920) and one four times larger. Memory (RSS of the node process, read from /proc): after
start-up, after the first frame, steady state (median over the second half of the stream) with
a breakdown by mapping (heap and anonymous memory, shared libraries, other mapped files such
as the DDS shared-memory segment), and around a large frame: before, right after, and 10 s
and 30 s later. The node subscribes a keypoints consumer
(the probe), as a SLAM front-end would. ``--mode`` defaults to the node's ``tracker.mode``
(hybrid). Needs rclpy; DDS stays on this machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import statistics
import tempfile
import time

import numpy as np
import rclpy
from rclpy.serialization import serialize_message

from kp2d_core import ExtractorConfig, KeypointExtractor
from kp2d_core.data.samples import synthetic_sequence
from kp2d_core.evaluation.cpu import cpu_description
from kp2d_core.inference.backends import label
from kp2d_core.model.files import bundled_weights_path
from kp2d_core.vo.detection_policy import RECOVERY_MODELS, HybridConfig
from kp2d_ros.process_memory import rss_breakdown, rss_mib
from kp2d_testing.ros import (
    Probe,
    diagnostic_values,
    image_msg,
    ros_environment,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)

SETTINGS = (('640x480 native', [0, 0]), ('640x480 resized to 240x320', [240, 320]))


def extract_alone(extractor: KeypointExtractor, frames: list[np.ndarray]) -> float:
    """Frames per second of extract() in this process (median over the frames)."""
    extractor.extract(frames[0])
    times = []
    for frame in frames[:15]:
        start = time.perf_counter()
        extractor.extract(frame)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def tracking_cost(extractor: KeypointExtractor, frames: list[np.ndarray]) -> tuple[float, float]:
    """Median milliseconds per frame of the keyframe homography tracker and of the feature
    tracks, on the extractor's features of ``frames`` (a camera sweep, no intrinsics), with
    the grey images the default tracker aligns its matches on."""
    from dataclasses import replace

    from kp2d_core.geometry.image_points import ImagePoints
    from kp2d_core.images import gray_uint8
    from kp2d_core.vo.feature_tracks import FeatureTracker
    from kp2d_core.vo.keyframe_tracker import HomographyTracker

    features = [replace(extractor.extract(f), gray=gray_uint8(f)) for f in frames[:15]]
    homography, tracks = HomographyTracker(), FeatureTracker()
    costs: list[tuple[float, float]] = []
    for index, feats in enumerate(features):
        points = ImagePoints.of(feats.keypoints, None)
        start = time.perf_counter()
        homography.update(feats, points, index * 33_333_333)
        middle = time.perf_counter()
        tracks.update(feats, points, index * 33_333_333)
        costs.append((middle - start, time.perf_counter() - middle))
    return tuple(1e3 * statistics.median(c[i] for c in costs[1:]) for i in (0, 1))


def serialized_stream(frames: list[np.ndarray], count: int, start_ns: int, period_ns: int):
    """The camera's messages, serialized beforehand: a camera driver's own cost is not the
    node's, and on two cores it would otherwise be charged to it."""
    return [
        serialize_message(image_msg(frames[i % len(frames)], start_ns + i * period_ns))
        for i in range(count)
    ]


def stream(probe: Probe, frames: list[np.ndarray], rate: float, seconds: float, pid: int) -> dict:
    """Publish at ``rate`` Hz for ``seconds``; returns the node's counters before and after
    and its RSS (MiB) sampled about every 0.5 s.

    Every message is stamped with the time it is scheduled to be sent.
    """

    def counters() -> dict[str, str]:
        spin_until(probe.node, lambda: False, 1.2)  # a fresh /diagnostics message
        return diagnostic_values(probe.received['diag'][-1])

    count, period_ns = int(rate * seconds), int(1e9 / rate)
    tick = time.perf_counter()
    serialized_stream(frames, 5, 0, period_ns)
    per_message = (time.perf_counter() - tick) / 5
    start_ns = time.time_ns() + int(per_message * count * 1.5e9) + 2 * 10**9
    messages = serialized_stream(frames, count, start_ns, period_ns)
    before = counters()
    while time.time_ns() < start_ns:
        time.sleep(0.001)
    start, sent, memory, sampled = start_ns * 1e-9, 0, [], 0.0
    while sent < len(messages):
        probe.pub_image.publish(messages[sent])
        sent += 1
        if time.time() - sampled > 0.5:
            sampled = time.time()
            memory.append(rss_mib(pid))
        next_time = start + sent / rate
        spin_until(
            probe.node, lambda t=next_time: time.time() >= t, max(0.0, next_time - time.time())
        )
    elapsed = time.time() - start
    after = counters()
    steady = float(np.median(memory[len(memory) // 2 :])) if memory else float('nan')
    return {
        'sent': sent,
        'elapsed': elapsed,
        'before': before,
        'after': after,
        'steady_rss': steady,
        'breakdown': rss_breakdown(pid),
    }


@contextmanager
def running_node(params: dict, raw: bool, reliable: bool) -> Iterator[tuple[Probe, Path, int]]:
    """The node in its own process with ``params`` (images on /bench/image, reliable or best
    effort) and a started probe; yields (probe, node log, node pid) and stops both afterwards."""
    params = {**params, 'image_reliability': 'reliable' if reliable else 'best_effort'}
    log = Path(tempfile.mkdtemp()) / 'node.log'
    proc = start_node(params, {'image': '/bench/image'}, log)
    probe = Probe('/bench', raw=raw, reliable_images=reliable)
    try:
        if not probe.wait_for_node(120.0):
            raise SystemExit(f'node did not start; see {log}')
        yield probe, log, proc.pid
    finally:
        probe.node.destroy_node()
        stop_node(proc)


def run_setting(args, weights: str, backend: str, precision: str, resize: list[int], frames):
    params = {
        'model.weights': weights,
        'model.backend': backend,
        'model.precision': precision,
        'detector.top_k': args.top_k,
        'detector.resize': resize,
        'tracker.mode': args.mode,
        'tracker.recovery_model': args.recovery_model,
        'diagnostics_period_s': 1.0,
        'diagnostics.window_s': 5.0,
    }
    with running_node(params, raw=True, reliable=args.reliable) as (probe, _, pid):
        started = rss_mib(pid)
        probe.pub_image.publish(image_msg(frames[0], time.time_ns()))  # warm-up
        spin_until(probe.node, lambda: bool(probe.received['keypoints']), 60.0)
        first = rss_mib(pid)
        result = stream(probe, frames, args.rate, args.seconds, pid)
        return {**result, 'startup_rss': started, 'first_frame_rss': first}


def large_frame_memory(weights: str, backend: str, precision: str, frames) -> dict[str, float]:
    """RSS (MiB) of a node streaming 640x480 frames, around a frame of ``max_input_pixels``
    (1088x1920 bgr8) and one four times larger (shrunk to the same budget), sent reliably:
    before, right after, 10 s and 30 s later (the node trims every diagnostics period)."""
    params = {
        'model.weights': weights,
        'model.backend': backend,
        'model.precision': precision,
        'diagnostics_period_s': 1.0,
    }
    with running_node(params, raw=False, reliable=True) as (probe, log, pid):
        for k in range(20):  # a short steady stream first
            probe.send(image_msg(frames[k % len(frames)], time.time_ns()), None, 60.0)
        out = {'before': rss_mib(pid)}
        big, _ = synthetic_sequence(2, (1088, 1920))
        for frame in (big[0], np.tile(big[1], (2, 2, 1))):
            if not probe.send(image_msg(np.ascontiguousarray(frame), time.time_ns()), None, 300.0):
                raise SystemExit(f'the node did not answer a {frame.shape} frame; see {log}')
        out['right after'] = rss_mib(pid)
        for wait, key in ((10.0, 'after 10 s'), (20.0, 'after 30 s')):
            spin_until(probe.node, lambda: False, wait)
            out[key] = rss_mib(pid)
        spin_until(probe.node, lambda: False, 1.5)  # a fresh /diagnostics message
        out['peak'] = float(diagnostic_values(probe.received['diag'][-1]).get('peak_rss_mib'))
        return out


def report(name: str, result: dict, alone: float, chosen: str, cost: tuple) -> None:
    before, after = result['before'], result['after']

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    node_fps = delta('processed') / result['elapsed']
    rows = [
        ('backend', chosen),
        ('frames sent', f'{result["sent"]} in {result["elapsed"]:.1f} s'),
        ('received by the node', str(delta('received'))),
        ('processed', str(delta('processed'))),
        ('dropped.superseded', str(delta('dropped.superseded'))),
        (
            'latency p50 / p95 (ms, last window)',
            f'{1e3 * float(after.get("latency_p50_s", "nan")):.0f} / '
            f'{1e3 * float(after.get("latency_p95_s", "nan")):.0f}',
        ),
        ('node output rate (FPS)', f'{node_fps:.2f}'),
        ('extract() alone, same backend (FPS)', f'{alone:.2f}'),
        ('node / extract()', f'{node_fps / alone:.1%}'),
        ('keyframe tracker / feature tracks (ms per frame)', f'{cost[0]:.1f} / {cost[1]:.1f}'),
        (
            'node RSS after start-up / first frame (MiB)',
            f'{result["startup_rss"]:.0f} / {result["first_frame_rss"]:.0f}',
        ),
        (
            'node RSS steady state / peak (MiB)',
            f'{result["steady_rss"]:.0f} / {after.get("peak_rss_mib", "n/a")}',
        ),
        (
            '  of which heap and anonymous / libraries / other files (MiB)',
            ' / '.join(
                f'{result["breakdown"].get(k, float("nan")):.0f}'
                for k in ('heap_and_anonymous', 'libraries', 'other_files')
            ),
        ),
    ]
    print(f'\n{name}')
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f'  {key:<{width}}  {value}')


def main() -> None:
    parser = argparse.ArgumentParser(description='kp2d node throughput benchmark')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--top-k', type=int, default=1000)
    parser.add_argument('--checkpoint', default='', help='default: the bundled --variant')
    parser.add_argument('--variant', default='default', choices=('default', 'light'))
    parser.add_argument('--mode', default=HybridConfig().mode, choices=('every_frame', 'hybrid'))
    parser.add_argument(
        '--recovery-model', default=HybridConfig().recovery_model, choices=RECOVERY_MODELS
    )
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--precision', default='auto')
    parser.add_argument(
        '--reliable',
        action='store_true',
        help='reliable image QoS (as from a bag) instead of best effort (as from a camera)',
    )
    args = parser.parse_args()
    weights = args.checkpoint or str(bundled_weights_path(args.variant))
    frames, _ = synthetic_sequence(30, (480, 640))
    os.environ.update(ros_environment(unique_domain_id()))
    print(f'CPU: {cpu_description()}')
    rclpy.init()
    try:
        for name, resize in SETTINGS:
            cfg = ExtractorConfig(
                top_k=args.top_k,
                backend=args.backend,
                precision=args.precision,
                resize=tuple(resize) if resize[0] else None,
            )
            extractor = KeypointExtractor.from_checkpoint(weights, 'cpu', cfg)
            chosen = label(extractor.backend)  # the node gets exactly this backend
            alone = extract_alone(extractor, frames)
            cost = tracking_cost(extractor, frames)
            backend, precision = chosen.split(':')
            result = run_setting(args, weights, backend, precision, resize, frames)
            report(name, result, alone, chosen, cost)
        memory = large_frame_memory(weights, backend, precision, frames)
        print(
            '\nnode RSS (MiB) around a 1088x1920 and a 2176x3840 frame (native setting): '
            + ', '.join(f'{k} {v:.0f}' for k, v in memory.items())
        )
    finally:
        rclpy.shutdown()


if __name__ == '__main__':
    main()
