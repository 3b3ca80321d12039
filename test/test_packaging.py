"""The package installs with pip (data files included) and builds with colcon."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ('setup.py', 'setup.cfg', 'package.xml', 'pyproject.toml', 'resource')
PACKAGES = ('kp2d_core', 'kp2d_ros', 'launch', 'config')


def _copy_package(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.egg-info')
    for name in PACKAGE_FILES + PACKAGES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.slow
def test_pip_install_ships_ament_files_and_assets(tmp_path):
    src = _copy_package(tmp_path / 'src')
    target = tmp_path / 'site'
    cmd = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--target', target, src]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    assert (target / 'share/ament_index/resource_index/packages/kp2d_ros').is_file()
    assert (target / 'share/kp2d_ros/package.xml').is_file()
    assert (target / 'kp2d_core/assets/coffee.jpg').is_file()
    assert (target / 'kp2d_core/py.typed').is_file()


@pytest.mark.slow
def test_colcon_build(tmp_path):
    """The documented robot route: both packages of the repository, one colcon build."""
    colcon = Path(sys.executable).parent / 'colcon'
    if not colcon.exists():
        pytest.skip('colcon is not installed (pip install colcon-common-extensions)')
    source = _copy_package(tmp_path / 'ws/src/kp2d')
    shutil.copytree(ROOT / 'kp2d_msgs', source / 'kp2d_msgs')
    paths = ['src/kp2d']
    prefix = Path(sys.prefix)
    if (prefix / 'share' / 'rosidl_default_generators').is_dir():  # make test installs it
        paths.append('src/kp2d/kp2d_msgs')
    env = {**os.environ, 'CMAKE_PREFIX_PATH': str(prefix), 'AMENT_PREFIX_PATH': str(prefix)}
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    out = subprocess.run(
        [
            colcon,
            'build',
            '--base-paths',
            *paths,
            '--event-handlers',
            'console_direct-',
            '--cmake-args',
            '-DBUILD_TESTING=OFF',
        ],
        cwd=tmp_path / 'ws',
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    install = tmp_path / 'ws/install'
    assert (install / 'kp2d_ros/share/ament_index/resource_index/packages/kp2d_ros').is_file()
    assert list(install.glob('kp2d_ros/lib/python3*/site-packages/kp2d_core/frontend.py'))
    assert (install / 'kp2d_ros/lib/kp2d_ros/kp2d_lifecycle_node').is_file()
    if len(paths) == 2:
        assert list(install.glob('kp2d_msgs/lib/python3*/site-packages/kp2d_msgs/msg'))


def test_launch_and_params_files():
    launch = ROOT / 'launch' / 'kp2d.launch.py'
    compile(launch.read_text(), str(launch), 'exec')
    import yaml

    from kp2d_core.pipeline import PipelineConfig
    from kp2d_ros.params import DEFAULTS, options_from_values, params_file_values, yaml_text

    shipped = ROOT / 'config' / 'kp2d.yaml'
    assert shipped.read_text() == yaml_text(), 'regenerate: python -m kp2d_ros.params'
    assert list(yaml.safe_load(shipped.read_text())) == ['/**']  # any namespace and node name
    values = params_file_values(str(shipped))
    assert values == DEFAULTS
    assert options_from_values(values).pipeline == PipelineConfig()  # one set of defaults


def _stub_launch_modules(monkeypatch, share: Path) -> None:
    """Record what the launch file builds (launch and launch_ros are not on PyPI)."""
    import types

    class Recorder:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

        def __eq__(self, other):
            return type(self) is type(other) and (self.args, self.kwargs) == (
                other.args,
                other.kwargs,
            )

    def module(name: str, **attributes) -> None:
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))

    kinds = {
        name: type(name, (Recorder,), {})
        for name in (
            'LaunchDescription',
            'DeclareLaunchArgument',
            'IfCondition',
            'UnlessCondition',
            'LaunchConfiguration',
            'Node',
            'LifecycleNode',
            'ParameterValue',
        )
    }
    module('ament_index_python.packages', get_package_share_directory=lambda _: str(share))
    module('launch', LaunchDescription=kinds['LaunchDescription'])
    module('launch.actions', DeclareLaunchArgument=kinds['DeclareLaunchArgument'])
    module(
        'launch.conditions',
        IfCondition=kinds['IfCondition'],
        UnlessCondition=kinds['UnlessCondition'],
    )
    module('launch.substitutions', LaunchConfiguration=kinds['LaunchConfiguration'])
    module('launch_ros.actions', Node=kinds['Node'], LifecycleNode=kinds['LifecycleNode'])
    module('launch_ros.parameter_descriptions', ParameterValue=kinds['ParameterValue'])
    return kinds


def test_launch_file_arguments_reach_the_node(monkeypatch, tmp_path):
    import runpy

    kinds = _stub_launch_modules(monkeypatch, tmp_path)
    namespace = runpy.run_path(str(ROOT / 'launch' / 'kp2d.launch.py'))
    description = namespace['generate_launch_description']()
    entities = description.args[0]
    arguments = {
        e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'
    }
    for name in (
        'params_file',
        'namespace',
        'image_topic',
        'image_transport',
        'image_reliability',
        'use_sim_time',
        'lifecycle',
    ):
        assert name in arguments, name
    assert all(spec['description'] for spec in arguments.values())  # every argument explained
    assert arguments['params_file']['default_value'] == str(tmp_path / 'config' / 'kp2d.yaml')
    nodes = [e for e in entities if type(e).__name__ in ('Node', 'LifecycleNode')]
    assert {n.kwargs['executable'] for n in nodes} == {'kp2d_node', 'kp2d_lifecycle_node'}
    config = kinds['LaunchConfiguration']
    for node in nodes:
        assert node.kwargs['namespace'] == config('namespace')
        overrides = next(p for p in node.kwargs['parameters'] if isinstance(p, dict))
        assert overrides['use_sim_time'].args[0] == config('use_sim_time')  # not ignored
        assert overrides['image_reliability'] == config('image_reliability')
        remapped = dict(node.kwargs['remappings'])
        assert remapped['image/compressed'] == [config('image_topic'), '/compressed']


def test_readme_documents_every_parameter_and_launch_argument(monkeypatch, tmp_path):
    import runpy

    from kp2d_ros.params import markdown_table

    readme = (ROOT / 'README.md').read_text()
    assert markdown_table() in readme, 'regenerate: python -m kp2d_ros.params --markdown'
    _stub_launch_modules(monkeypatch, tmp_path)
    description = runpy.run_path(str(ROOT / 'launch' / 'kp2d.launch.py'))
    entities = description['generate_launch_description']().args[0]
    for entity in entities:
        if type(entity).__name__ == 'DeclareLaunchArgument':
            assert f'| `{entity.args[0]}` |' in readme, entity.args[0]
    for topic in ('~/keypoints', '~/features', '~/homography', '~/odometry', '~/debug_image'):
        assert f'| `{topic}` |' in readme, topic
