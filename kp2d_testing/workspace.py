"""A colcon workspace of this repository, built as a robot user builds it (tests).

``build_workspace`` copies the package files into ``<dest>/src/kp2d`` and runs ``colcon
build``; ``workspace_environment`` is what ``source install/setup.bash`` would give a shell,
for running ``ros2 launch``, ``ros2 param`` and friends against the built package.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ('setup.py', 'setup.cfg', 'package.xml', 'pyproject.toml', 'resource')
PACKAGES = ('kp2d_core', 'kp2d_ros', 'launch', 'config')


def copy_package(dest: Path) -> Path:
    """The files a user's checkout of the package has (no caches, no build output)."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.egg-info')
    for name in PACKAGE_FILES + PACKAGES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def build_workspace(workspace: Path) -> subprocess.CompletedProcess:
    """``colcon build`` of a copy of kp2d_ros in ``workspace`` (``src/``, ``install/``); its
    messages come from the environment (``tools/build_msgs.py``)."""
    copy_package(workspace / 'src' / 'kp2d')
    return run_colcon(workspace, ['src/kp2d'], capture=True, timeout=600)


def run_colcon(
    workspace: Path, paths: list[str], capture: bool, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """``colcon build --base-paths *paths`` in ``workspace`` over the ROS of this interpreter's
    environment (the pip wheels of ``make test``): its prefix on CMAKE_PREFIX_PATH and
    AMENT_PREFIX_PATH, its scripts on PATH."""
    colcon = Path(sys.executable).parent / 'colcon'
    prefix = Path(sys.prefix)
    env = {**os.environ, 'CMAKE_PREFIX_PATH': str(prefix), 'AMENT_PREFIX_PATH': str(prefix)}
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    command = [str(colcon), 'build', '--base-paths', *paths, '--event-handlers', 'console_direct-']
    command += ['--cmake-args', '-DBUILD_TESTING=OFF']
    return subprocess.run(
        command,
        cwd=workspace,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def workspace_environment(workspace: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what sourcing ``install/setup.bash`` adds: the package's prefix first on
    AMENT_PREFIX_PATH (the ROS prefix of the wheels after it), its site-packages on
    PYTHONPATH and this interpreter's scripts (``ros2``) on PATH."""
    install = workspace / 'install' / 'kp2d_ros'
    site = next(install.glob('lib/python3*/site-packages'))
    env = dict(base)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join([str(install), sys.prefix])
    env['PYTHONPATH'] = os.pathsep.join([str(site), *filter(None, [base.get('PYTHONPATH')])])
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), base.get('PATH', '')])
    env['PYTHONUNBUFFERED'] = '1'
    return env
