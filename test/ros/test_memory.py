"""The node's memory settings (checked without timing: what is configured, not how fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kp2d_ros.memory import rss_breakdown, rss_mib

GLIBC = sys.platform.startswith('linux')


@pytest.mark.skipif(not GLIBC, reason='glibc allocator settings (Linux)')
def test_freed_frame_buffers_go_back_to_the_system():
    """With the node's allocator settings, a 200 MB frame-sized buffer allocated and freed
    from a worker thread leaves the RSS where it was (glibc's defaults keep it)."""
    script = """
import threading, numpy as np
from kp2d_ros.memory import configure_allocator, rss_mib, trim
tuned = __import__("sys").argv[1] == "tuned"
if tuned:
    assert configure_allocator()
def frame_work():
    for _ in range(3):
        buffers = [np.ones(2_000_000, np.float64) for _ in range(12)]  # 12 x 16 MB
        del buffers
        small = [bytearray(4096) for _ in range(40000)]  # 160 MB of small blocks
        del small
base = rss_mib()
worker = threading.Thread(target=frame_work); worker.start(); worker.join()
if tuned:
    trim()
print(rss_mib() - base)
"""
    grown = {}
    for mode in ('default', 'tuned'):
        out = subprocess.run(
            [sys.executable, '-c', script, mode], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        grown[mode] = float(out.stdout.strip())
    assert grown['tuned'] < 20.0, grown  # MiB left behind


def test_rss_and_its_breakdown_are_read_from_proc():
    total, parts = rss_mib(), rss_breakdown()
    if total != total:  # NaN: no /proc here
        pytest.skip('no /proc on this system')
    assert total > 10 and parts['libraries'] > 1
    assert sum(parts.values()) == pytest.approx(total, rel=0.2)


def test_onnx_runtime_sessions_keep_no_memory_arena(tmp_path):
    pytest.importorskip('onnxruntime')
    import torch

    from kp2d_core import KeypointNet
    from kp2d_core.backends.onnx_backend import OnnxRuntimeBackend
    from kp2d_core.export import export_onnx

    path = export_onnx(KeypointNet().eval(), tmp_path / 'm.onnx', 'x', (64, 96))
    backend = OnnxRuntimeBackend(path, 'fp32', torch.device('cpu'))
    assert backend.session.get_session_options().enable_cpu_mem_arena is False
