"""A fresh clone without the ROS source build: the suite collects, the tools say what is missing.

The libraries that ``tools/build_ros_deps.py`` builds from source (cv_bridge, sensor_msgs_py,
message_filters, tf2_ros, launch, launch_ros, launch_testing, ros2cli) are hidden from a child
interpreter by an entry of ``None`` in ``sys.modules`` (``import`` raises ModuleNotFoundError
and ``importlib.util.find_spec`` answers None, as on a machine that never had them), whatever
this machine or CI has installed.
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_BUILT = (
    'cv_bridge',
    'sensor_msgs_py',
    'message_filters',
    'tf2_ros',
    'launch',
    'launch_ros',
    'launch_testing',
    'ros2cli',
)
HIDE = f'import sys\nfor name in {SOURCE_BUILT!r}:\n    sys.modules[name] = None\n'


def run_hidden(code: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a child interpreter (at the repository root) that cannot import them.

    pytest's plugin auto-loading is off there: launch_testing registers pytest plugins, which a
    machine without it would not have.
    """
    env = {**os.environ, 'PYTEST_DISABLE_PLUGIN_AUTOLOAD': '1'}
    return subprocess.run(
        [sys.executable, '-c', HIDE + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_hiding_works() -> None:
    probe = run_hidden(
        'import importlib.util\n'
        'assert importlib.util.find_spec("message_filters") is None\n'
        'try:\n    import cv_bridge\nexcept ModuleNotFoundError:\n    print("hidden")\n'
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == 'hidden'


@pytest.mark.slow
def test_the_suite_collects_without_the_source_built_libraries() -> None:
    run = run_hidden(
        'import pytest\n'
        'sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "test"]))\n'
    )
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert 'error' not in run.stdout.lower().splitlines()[-1], tail


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    argv = [module, *args]
    return run_hidden(
        f'import runpy\nsys.argv = {argv!r}\nrunpy.run_module({module!r}, run_name="__main__")\n',
        timeout=120.0,
    )


def test_replay_help_works_without_them() -> None:
    run = run_module('kp2d_ros.replay', '--help')
    assert run.returncode == 0, run.stderr[-2000:]
    assert '--image-topic' in run.stdout


@pytest.mark.parametrize(
    ('module', 'args'),
    [('kp2d_ros.replay', ('no_such_bag', '--image-topic', '/image')), ('kp2d_ros.node', ())],
)
def test_entry_points_name_what_is_missing_in_one_line(module: str, args: tuple) -> None:
    run = run_module(module, *args)
    assert run.returncode != 0
    assert 'Traceback' not in run.stderr, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr[-2000:]
    assert 'message_filters' in lines[0] and 'cv_bridge' in lines[0], lines[0]
