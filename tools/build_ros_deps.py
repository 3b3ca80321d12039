#!/usr/bin/env python3
"""Build the ROS 2 libraries that PyPI lacks into this Python environment, from source trees.

    KP2D_ROS_SRC=<folder> python tools/build_ros_deps.py     # after `make test`'s wheels

The ROS 2 Jazzy core comes from PyPI wheels (requirements-ros-*.txt), but cv_bridge,
sensor_msgs_py, message_filters, launch, launch_ros, ros2cli and tf2_ros do not. This tool
builds them from a folder holding one tree per entry of ``ros_deps.repos`` (the pinned
repositories and commits; ``vcs import --input ros_deps.repos <folder>`` fetches them). The
folder is ``$KP2D_ROS_SRC``, else ``../shared/ros_src`` beside the repository when it exists.
The trees are only read: everything is copied to ``build/ros_deps`` first.

* pure-Python packages (launch*, launch_ros, ros2launch, ros2cli and its verbs,
  rosidl_runtime_py, sensor_msgs_py): ``pip install --no-deps``;
* message_filters and cv_bridge's Python part: copied, with their ament index entries;
* interface and C++ packages (composition_interfaces, tf2_msgs, tf2, tf2_py, tf2_ros_py):
  colcon, straight into the environment's prefix (as tools/build_msgs.py does);
* cv_bridge's compiled module: g++ against Boost.Python and OpenCV's development headers
  (Debian: libboost-python-dev, libopencv-{core,imgproc,imgcodecs}-dev, installed with
  apt-get when missing and running as root).

Where these libraries already import (a sourced ROS install, or an earlier run of this tool
for the same lock file) nothing is built. Without a source folder the tool says so and exits
0: the tests that need the libraries are then skipped with the same reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
import shutil
import subprocess
import sys
import sysconfig

from build_msgs import colcon_environment, fix_cmake_exports

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / 'ros_deps.repos'
BUILD = ROOT / 'build' / 'ros_deps'
STAMP = Path(sys.prefix) / '.kp2d_ros_deps'
MODULES = (
    'cv_bridge.boost.cv_bridge_boost',
    'sensor_msgs_py',
    'message_filters',
    'launch',
    'launch_ros',
    'launch_testing',
    'ros2cli',
    'ros2lifecycle',
    'tf2_ros',
)
PYPI = ('osrf-pycommon', 'psutil', 'lark-parser', 'argcomplete', 'catkin-pkg', 'packaging')
PIP_PACKAGES = (
    'common_interfaces/sensor_msgs_py',
    'rosidl_runtime_py',
    'launch/launch',
    'launch/launch_xml',
    'launch/launch_yaml',
    'launch/launch_testing',
    'launch_ros/launch_ros',
    'launch_ros/ros2launch',
    'launch_ros/launch_testing_ros',
    *(
        f'ros2cli/{verb}'
        for verb in (
            'ros2cli',
            'ros2node',
            'ros2topic',
            'ros2param',
            'ros2service',
            'ros2pkg',
            'ros2run',
            'ros2interface',
            'ros2lifecycle',
        )
    ),
)
COPIED = {  # Python package folder -> package.xml of the ament package
    'message_filters/src/message_filters': 'message_filters/package.xml',
    'vision_opencv/cv_bridge/python/cv_bridge': 'vision_opencv/cv_bridge/package.xml',
}
COLCON_PACKAGES = (
    'rcl_interfaces/composition_interfaces',
    'geometry2/tf2_msgs',
    'geometry2/tf2',
    'geometry2/tf2_py',
    'geometry2/tf2_ros_py',
)
CV_BRIDGE_SOURCES = ('module.cpp', 'module_opencv4.cpp', 'cv_bridge.cpp', 'rgb_colors.cpp')
APT_PACKAGES = (
    'libboost-python-dev',
    'libopencv-core-dev',
    'libopencv-imgproc-dev',
    'libopencv-imgcodecs-dev',
)
# Headers cv_bridge's CMake would generate, and an OpenCV umbrella limited to the three modules
# it links (Debian's opencv2/opencv.hpp includes every module's headers).
EXPORT_HEADER = """#ifndef CV_BRIDGE__CV_BRIDGE_EXPORT_H_
#define CV_BRIDGE__CV_BRIDGE_EXPORT_H_
#define CV_BRIDGE_EXPORT __attribute__((visibility("default")))
#define CV_BRIDGE_NO_EXPORT __attribute__((visibility("hidden")))
#define CV_BRIDGE_DEPRECATED __attribute__((__deprecated__))
#endif
"""
OPENCV_UMBRELLA = """#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
"""
NO_SOURCES = (
    'ROS libraries not built: no source folder. Set KP2D_ROS_SRC to a folder with the trees '
    'of ros_deps.repos (see the README), or source a ROS 2 Jazzy install.'
)


def source_folder() -> Path | None:
    """``$KP2D_ROS_SRC``, else ``../shared/ros_src`` beside the repository, else None."""
    configured = os.environ.get('KP2D_ROS_SRC')
    if configured:
        return Path(configured).expanduser().resolve()
    beside = ROOT.parent / 'shared' / 'ros_src'
    return beside if beside.is_dir() else None


def lock_entries() -> dict[str, dict[str, str]]:
    import yaml

    entries = yaml.safe_load(LOCK.read_text())['repositories']
    for name, entry in entries.items():
        if not {'url', 'version', 'branch'} <= set(entry):
            raise SystemExit(f'{LOCK.name}: {name} needs url, branch and version')
    return entries


def check_trees(source: Path, entries: dict[str, dict[str, str]]) -> None:
    """Every locked tree is present; trees that are git checkouts are at the locked commit."""
    missing = [name for name in entries if not (source / name).is_dir()]
    if missing:
        raise SystemExit(f'{source} lacks {missing} (see {LOCK.name})')
    for name, entry in entries.items():
        if (source / name / '.git').exists():
            head = run(['git', '-C', str(source / name), 'rev-parse', 'HEAD']).strip()
            if head != entry['version']:
                raise SystemExit(
                    f'{source / name} is at {head}, {LOCK.name} pins {entry["version"]}'
                )


def run(command: list[str], **kwargs: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f'failed (exit {result.returncode}): {" ".join(command[:4])} ...')
    return result.stdout


def importable() -> list[str]:
    """The MODULES this interpreter finds (without importing them)."""
    importlib.invalidate_caches()
    found = []
    for name in MODULES:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except ImportError:  # the parent package of a dotted name is missing
            pass
    return found


def lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes() + Path(__file__).read_bytes()).hexdigest()


def copy_trees(source: Path, entries: dict[str, dict[str, str]]) -> Path:
    """A writable copy of the locked trees (pip and colcon write beside their sources)."""
    tree = BUILD / 'src'
    shutil.rmtree(tree, ignore_errors=True)
    ignore = shutil.ignore_patterns('.git', 'build', '*.egg-info', '__pycache__')
    for name in entries:
        shutil.copytree(source / name, tree / name, ignore=ignore)
    return tree


def install_python(tree: Path) -> None:
    pip = [sys.executable, '-m', 'pip', 'install', '--quiet']
    run([*pip, *PYPI])
    run([*pip, '--no-deps', '--no-build-isolation', *(str(tree / p) for p in PIP_PACKAGES)])
    site = Path(sysconfig.get_paths()['purelib'])
    index = Path(sys.prefix) / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True, exist_ok=True)
    for package, manifest in COPIED.items():
        name = Path(package).name
        shutil.rmtree(site / name, ignore_errors=True)
        shutil.copytree(tree / package, site / name)
        (index / name).write_text('')
        share = Path(sys.prefix) / 'share' / name
        share.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / manifest, share / 'package.xml')


def build_colcon(tree: Path) -> None:
    fix_cmake_exports(Path(sys.prefix))
    command = [
        str(Path(sys.executable).parent / 'colcon'),
        'build',
        '--base-paths',
        *(str(tree / p) for p in COLCON_PACKAGES),
        '--merge-install',
        '--install-base',
        sys.prefix,
        '--build-base',
        str(BUILD / 'colcon'),
        '--event-handlers',
        'console_direct-',
        '--cmake-args',
        f'-DPython3_EXECUTABLE={sys.executable}',
        '-DBUILD_TESTING=OFF',
    ]
    run(command, env=colcon_environment(Path(sys.prefix)), cwd=BUILD)


def ensure_cv_bridge_headers() -> None:
    """Install Boost.Python and OpenCV's headers with apt-get when they are missing."""
    boost = list(Path('/usr/lib').glob(f'*/libboost_python{_python_tag()}.so'))
    if boost and Path('/usr/include/opencv4/opencv2/core.hpp').is_file():
        return
    if os.geteuid() != 0 or shutil.which('apt-get') is None:
        raise SystemExit(
            f'cv_bridge needs {" ".join(APT_PACKAGES)} (Debian/Ubuntu); install them as root'
        )
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    install = ['apt-get', 'install', '-y', '-q', '--no-install-recommends', *APT_PACKAGES]
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode:
        run(['apt-get', 'update', '-q'], env=env)  # a fresh machine has no package lists
        run(install, env=env)


def _python_tag() -> str:
    return f'{sys.version_info.major}{sys.version_info.minor}'


def build_cv_bridge_module(tree: Path) -> Path:
    """Compile cv_bridge.boost.cv_bridge_boost into the installed cv_bridge package."""
    import numpy as np

    ensure_cv_bridge_headers()
    source = tree / 'vision_opencv' / 'cv_bridge'
    generated = BUILD / 'cv_bridge_include'
    (generated / 'cv_bridge').mkdir(parents=True, exist_ok=True)
    (generated / 'opencv2').mkdir(parents=True, exist_ok=True)
    (generated / 'cv_bridge' / 'cv_bridge_export.h').write_text(EXPORT_HEADER)
    (generated / 'opencv2' / 'opencv.hpp').write_text(OPENCV_UMBRELLA)
    ros_includes = sorted(p for p in (Path(sys.prefix) / 'include').iterdir() if p.is_dir())
    target_dir = Path(sysconfig.get_paths()['purelib']) / 'cv_bridge' / 'boost'
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f'cv_bridge_boost{sysconfig.get_config_var("EXT_SUFFIX")}'
    includes = [generated, source / 'include', source / 'src', Path('/usr/include/opencv4')]
    includes += [Path(sysconfig.get_paths()['include']), Path(np.get_include()), *ros_includes]
    command = [
        'g++',
        '-O2',
        '-shared',
        '-fPIC',
        '-std=c++17',
        '-DPYTHON3',
        '-DOPENCV_VERSION_4',
        *(f'-I{path}' for path in includes),
        *(str(source / 'src' / name) for name in CV_BRIDGE_SOURCES),
        f'-lboost_python{_python_tag()}',
        '-lopencv_core',
        '-lopencv_imgproc',
        '-lopencv_imgcodecs',
        '-o',
        str(target),
    ]
    run(command)
    return target


def main() -> None:
    digest = lock_digest()
    if STAMP.is_file() and STAMP.read_text() == digest and len(importable()) == len(MODULES):
        print('ROS libraries up to date')
        return
    if len(importable()) == len(MODULES) and not STAMP.is_file():
        print('ROS libraries found (a ROS install): nothing to build')
        return
    source = source_folder()
    if source is None:
        print(NO_SOURCES)
        return
    entries = lock_entries()
    check_trees(source, entries)
    BUILD.mkdir(parents=True, exist_ok=True)
    tree = copy_trees(source, entries)
    install_python(tree)
    build_colcon(tree)
    module = build_cv_bridge_module(tree)
    missing = sorted(set(MODULES) - set(importable()))
    if missing:
        raise SystemExit(f'built, but {missing} do not import')
    STAMP.write_text(digest)
    print(f'ROS libraries built from {source} into {sys.prefix} (cv_bridge module: {module.name})')


if __name__ == '__main__':
    main()
