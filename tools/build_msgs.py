#!/usr/bin/env python3
"""Build the kp2d_msgs interface package into this Python environment (the ROS 2 wheels route).

    python tools/build_msgs.py          # after: pip install -r requirements-ros-build.txt

With ROS installed from apt, ``colcon build`` in a workspace does this and nothing here is
needed. With the ROS 2 wheels from PyPI, the environment's prefix (``sys.prefix``) is the ROS
prefix (``share/``, ``lib/``), so the package is built with colcon straight into it
(``--merge-install``). The wheels' exported CMake files name the Python and NumPy include
folders of the machine that built them; they are pointed at this interpreter's first.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import subprocess
import sys
import sysconfig

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOREIGN_PYTHON = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
FOREIGN_NUMPY = re.compile(
    r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(_core|core)/include'
)


def fix_cmake_exports(prefix: Path) -> int:
    """Point the wheels' exported include folders at this Python; returns files changed."""
    python_include = sysconfig.get_paths()['include']
    numpy_include = np.get_include()
    changed = 0
    for path in (prefix / 'share').glob('*/cmake/*.cmake'):
        text = path.read_text()
        fixed = FOREIGN_NUMPY.sub(numpy_include, FOREIGN_PYTHON.sub(python_include, text))
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    return changed


def colcon_environment(prefix: Path) -> dict[str, str]:
    """Variables under which colcon builds against the wheels installed at ``prefix``."""
    return {
        **os.environ,
        'CMAKE_PREFIX_PATH': str(prefix),
        'AMENT_PREFIX_PATH': str(prefix),
        'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}',
    }


def main() -> None:
    prefix = Path(sys.prefix)
    colcon = Path(sys.executable).parent / 'colcon'
    if not (prefix / 'share' / 'rosidl_default_generators').is_dir() or not colcon.exists():
        raise SystemExit('needs the ROS build wheels and colcon: see requirements-ros-build.txt')
    print(f'fixed {fix_cmake_exports(prefix)} CMake export files under {prefix}/share')
    env = colcon_environment(prefix)
    command = [
        str(colcon),
        'build',
        '--base-paths',
        str(ROOT / 'kp2d_msgs'),
        '--merge-install',
        '--install-base',
        str(prefix),
        '--build-base',
        str(ROOT / 'build' / 'kp2d_msgs'),
        '--event-handlers',
        'console_direct-',
        '--cmake-args',
        f'-DPython3_EXECUTABLE={sys.executable}',
        '-DBUILD_TESTING=OFF',
    ]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f'building kp2d_msgs failed (exit {result.returncode})')
    print(f'kp2d_msgs installed into {prefix}')


if __name__ == '__main__':
    main()
