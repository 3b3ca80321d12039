#!/usr/bin/env python3
"""Node throughput: 640x480 frames at 30 Hz into the kp2d node in another process.

    python benchmarks/node.py [--seconds 20] [--rate 30] [--checkpoint PATH]

Prints frames sent / processed / dropped, end-to-end latency (image stamp to keypoints
received) p50 and p95, the node's processing rate, and extract() alone measured in this
process on the same frames, as a ratio. Needs rclpy (see DEVELOPERS.md); DDS stays local.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import statistics
import tempfile
import time

import numpy as np
import rclpy

from kp2d_core import ExtractorConfig, KeypointExtractor, load_model
from kp2d_core.checkpoint import default_weights_path
from kp2d_core.samples import synthetic_sequence
from kp2d_testing.ros import (
    Probe,
    image_msg,
    ros_environment,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)


def extract_alone(weights: str, frames: list[np.ndarray], top_k: int) -> float:
    """Frames per second of extract() in this process (median of the frames)."""
    extractor = KeypointExtractor(load_model(weights, 'cpu'), ExtractorConfig(top_k=top_k))
    extractor.extract(frames[0])
    times = []
    for frame in frames[:10]:
        start = time.perf_counter()
        extractor.extract(frame)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def stream(probe: Probe, frames: list[np.ndarray], rate: float, seconds: float) -> dict:
    """Publish at ``rate`` Hz for ``seconds``; returns counts and latencies."""
    sent, latencies, stamps = 0, [], {}
    seen = 0

    def collect() -> None:
        nonlocal seen
        for msg in probe.received['keypoints'][seen:]:
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            if key in stamps:
                latencies.append(time.time() - stamps[key])
        seen = len(probe.received['keypoints'])

    start = time.time()
    while time.time() - start < seconds:
        now = time.time()
        msg = image_msg(frames[sent % len(frames)], int(now * 1e9))
        stamps[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = now
        probe.pub_image.publish(msg)
        sent += 1
        next_time = start + sent / rate
        spin_until(probe.node, lambda t=next_time: time.time() >= t, max(0.0, next_time - now))
        collect()
    spin_until(probe.node, lambda: False, 5.0)  # let the last frames arrive
    collect()
    return {
        'sent': sent,
        'processed': len(latencies),
        'latencies': latencies,
        'elapsed': time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description='kp2d node throughput benchmark')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--top-k', type=int, default=1000)
    parser.add_argument('--checkpoint', default='')
    args = parser.parse_args()
    weights = args.checkpoint or str(default_weights_path())
    frames, _ = synthetic_sequence(30, (480, 640))
    alone = extract_alone(weights, frames, args.top_k)
    os.environ.update(ros_environment(unique_domain_id()))
    log = Path(tempfile.mkdtemp()) / 'node.log'
    proc = start_node(
        {'model.weights': weights, 'detector.top_k': args.top_k}, {'image': '/bench/image'}, log
    )
    rclpy.init()
    probe = Probe('/bench')
    try:
        if not probe.wait_for_node(120.0):
            raise SystemExit(f'node did not start; see {log}')
        result = stream(probe, frames, args.rate, args.seconds)
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        stop_node(proc)
    report(result, alone, args)
    status = [line for line in log.read_text().splitlines() if 'processed' in line]
    if status:
        print('node status line:', status[-1].split(': ', 1)[-1])


def report(result: dict, alone: float, args: argparse.Namespace) -> None:
    lat = np.asarray(result['latencies']) * 1e3
    node_fps = result['processed'] / result['elapsed']
    rows = [
        ('frames sent', f'{result["sent"]} ({args.rate:g} Hz for {args.seconds:g} s)'),
        ('frames processed', str(result['processed'])),
        ('frames dropped (latest-frame QoS)', str(result['sent'] - result['processed'])),
        (
            'latency p50 / p95 (ms)',
            f'{np.percentile(lat, 50):.0f} / {np.percentile(lat, 95):.0f}' if len(lat) else 'n/a',
        ),
        ('node processing rate (FPS)', f'{node_fps:.2f}'),
        ('extract() alone (FPS)', f'{alone:.2f}'),
        ('node / extract() alone', f'{node_fps / alone:.2f}'),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name:<{width}}  {value}')


if __name__ == '__main__':
    main()
