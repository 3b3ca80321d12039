"""The node's memory settings (checked without timing: what is configured, not how fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kp2d_ros.process_memory import rss_breakdown, rss_mib

GLIBC = sys.platform.startswith('linux')


@pytest.mark.skipif(not GLIBC, reason='glibc allocator settings (Linux)')
def test_freed_frame_buffers_go_back_to_the_system():
    """With the node's allocator settings, a 200 MB frame-sized buffer allocated and freed
    from a worker thread leaves the RSS where it was (glibc's defaults keep it)."""
    script = """
import threading, numpy as np
from kp2d_ros.process_memory import configure_allocator, rss_mib, trim
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


# A subprocess with the node's allocator settings and the backend on a random fp32 model.
BACKEND_SCRIPT = """
import sys, numpy as np, torch
from kp2d_ros.process_memory import configure_allocator, rss_mib, trim
from kp2d_core import KeypointNet
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
from kp2d_core.inference.export import export_onnx
configure_allocator()
torch.manual_seed(0)
path = export_onnx(KeypointNet().eval(), sys.argv[1], 'x', (64, 96))
backend = OnnxRuntimeBackend(path, 'fp32')
"""

ARENA_SCRIPT = (
    BACKEND_SCRIPT
    + """
small, large = torch.rand(1, 3, 240, 320), torch.rand(1, 3, 960, 1280)
for _ in range(3):
    backend(small)
trim()
before = rss_mib()
backend(large)  # a larger input than before: its memory goes back at once
trim()
at_once = rss_mib() - before
backend(large)  # the same size again: the arena keeps what it needs
kept = rss_mib() - before
for _ in range(3):
    backend(small)
trim()
print(at_once, kept, rss_mib() - before)
"""
)


@pytest.mark.skipif(not GLIBC, reason='glibc allocator settings (Linux)')
def test_onnx_runtime_arena_gives_a_large_input_back(tmp_path):
    """The arena keeps activations between runs of one size (speed), but what a larger input
    than the previous one needed is returned right after it, and when the size changes back."""
    pytest.importorskip('onnxruntime')
    out = subprocess.run(
        [sys.executable, '-c', ARENA_SCRIPT, str(tmp_path / 'm.onnx')],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    at_once, kept, left = (float(v) for v in out.stdout.split())
    assert kept > 80.0, kept  # the large input's activations (MiB): the test can see them
    assert at_once < 40.0 and left < 40.0, (at_once, kept, left)


@pytest.mark.skipif(not GLIBC, reason='/proc (Linux)')
def test_peak_memory_is_the_program_s_own_not_its_parent_s():
    """A node started by a large process (a launch script, a benchmark holding a model)
    reports its own peak: Linux carries ``ru_maxrss`` across exec, VmHWM starts afresh."""
    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB resident in this (parent) process
    script = 'import resource; from kp2d_ros.process_memory import peak_rss_mib; '
    script += 'print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)'
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    own, inherited = (float(v) for v in out.stdout.split())
    assert own < 200.0, own
    assert ballast.sum() > 0 and inherited >= own


PATTERN_SCRIPT = (
    BACKEND_SCRIPT
    + """
if sys.argv[2] == 'pattern':  # ONNX Runtime's default: a planned block for the activations
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.add_session_config_entry('session.use_env_allocators', '1')
    backend.session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
frame = np.random.default_rng(0).random((1, 3, 480, 640), np.float32)
backend(frame[..., :32, :32])
trim()
before = rss_mib()
for _ in range(3):
    backend(frame)
trim()
print(rss_mib() - before)
"""
)


@pytest.mark.skipif(not GLIBC, reason='glibc allocator settings (Linux)')
def test_cpu_sessions_keep_less_than_the_memory_pattern_between_frames(tmp_path):
    """What the CPU session keeps between 640x480 frames: the arena's reused activations, not
    the memory pattern's planned block beside the kernels' scratch (measured against a session
    with ONNX Runtime's default in the same test: about 20 % less for this fp32 model)."""
    pytest.importorskip('onnxruntime')
    kept = {}
    for mode in ('backend', 'pattern'):
        out = subprocess.run(
            [sys.executable, '-c', PATTERN_SCRIPT, str(tmp_path / f'{mode}.onnx'), mode],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        kept[mode] = float(out.stdout.split()[-1])
    assert kept['pattern'] > 40.0, kept  # the activations are visible to the test (MiB)
    assert kept['backend'] < 0.9 * kept['pattern'], kept
