"""The package installs with pip (data files included) and builds with colcon."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

from kp2d_testing.ros import missing_ros_libraries
from kp2d_testing.workspace import ROOT, copy_package


@pytest.mark.slow
def test_pip_install_ships_ament_files_and_assets(tmp_path):
    src = copy_package(tmp_path / 'src')
    target = tmp_path / 'site'
    cmd = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--target', target, src]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    assert (target / 'share/ament_index/resource_index/packages/kp2d_ros').is_file()
    assert (target / 'share/kp2d_ros/package.xml').is_file()
    assert (target / 'kp2d_core/assets/coffee.jpg').is_file()
    assert (target / 'kp2d_core/py.typed').is_file()


@pytest.mark.slow
def test_make_workspace_builds_both_packages_for_a_plain_shell(tmp_path):
    """`make workspace`'s route: this checkout in a workspace, both packages built by colcon
    over the wheels' ROS, and a shell with nothing but activate.bash finds and launches them."""
    if not (Path(sys.executable).parent / 'colcon').exists():
        pytest.skip('colcon is not installed (pip install colcon-common-extensions)')
    if not (Path(sys.prefix) / 'share' / 'rosidl_default_generators').is_dir():
        pytest.skip('the rosidl build chain is not installed (make test installs it)')
    tool = [sys.executable, str(ROOT / 'tools/build_workspace.py'), str(tmp_path / 'ws')]
    out = subprocess.run(tool, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    install = tmp_path / 'ws/install'
    # Without ros2cli and launch (not built here: no ROS sources) the shell asks the ament
    # index what `ros2 pkg prefix` asks and imports the packages' Python modules.
    tools = not missing_ros_libraries(('ros2cli', 'launch', 'launch_ros'))
    found = (
        'ros2 pkg prefix kp2d_ros && ros2 pkg prefix kp2d_msgs && '
        'ros2 launch kp2d_ros kp2d.launch.py --show-args'
        if tools
        else 'python -c "from ament_index_python.packages import get_package_prefix as p; '
        "print(p('kp2d_ros')); print(p('kp2d_msgs')); import kp2d_msgs.msg, kp2d_ros.parameters\""
    )
    clean = {'HOME': str(tmp_path), 'PATH': '/usr/bin:/bin'}  # no ROS, no venv: only the script
    shown = subprocess.run(
        ['bash', '-c', f'source {tmp_path}/ws/activate.bash && {found}'],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    lines = shown.stdout.splitlines()
    assert lines[:2] == [str(install / 'kp2d_ros'), str(install / 'kp2d_msgs')]
    if tools:
        assert 'params_file' in shown.stdout and str(install / 'kp2d_ros/share') in shown.stdout
    assert (install / 'kp2d_ros/share/ament_index/resource_index/packages/kp2d_ros').is_file()
    site = 'kp2d_ros/lib/python3*/site-packages'
    assert list(install.glob(f'{site}/kp2d_core/inference/extractor.py'))
    assert (install / 'kp2d_ros/lib/kp2d_ros/kp2d_lifecycle_node').is_file()
    assert (install / 'kp2d_ros/share/kp2d_ros/launch/kp2d.launch.py').is_file()
    assert (install / 'kp2d_ros/share/kp2d_ros/config/kp2d.rviz').is_file()
    assert list(install.glob('kp2d_msgs/lib/python3*/site-packages/kp2d_msgs/msg'))


def test_launch_and_params_files():
    launch = ROOT / 'launch' / 'kp2d.launch.py'
    compile(launch.read_text(), str(launch), 'exec')
    import yaml

    from kp2d_core.vo.frame_pipeline import PipelineConfig
    from kp2d_ros.parameter_docs import yaml_text
    from kp2d_ros.parameters import DEFAULTS, options_from_values
    from kp2d_ros.params_file import params_file_values

    shipped = ROOT / 'config' / 'kp2d.yaml'
    assert shipped.read_text() == yaml_text(), 'regenerate: python -m kp2d_ros.parameter_docs'
    assert list(yaml.safe_load(shipped.read_text())) == ['/**']  # any namespace and node name
    values, unknown = params_file_values(str(shipped))
    assert values == DEFAULTS and unknown == []
    assert options_from_values(values).pipeline == PipelineConfig()  # one set of defaults


def launch_argument_names() -> list[str]:
    """Names of the launch file's arguments, read from its source (no launch import)."""
    import ast

    tree = ast.parse((ROOT / 'launch' / 'kp2d.launch.py').read_text())
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'ARGUMENTS'
    )
    return ['params_file'] + [entry.elts[0].value for entry in table.elts]


def test_the_parameter_table_keeps_five_columns_on_every_row():
    import re

    from kp2d_ros.parameter_docs import markdown_table

    for row in markdown_table().splitlines():
        cells = re.split(r'(?<!\\)\|', row)  # a bar escaped as \| stays inside its cell
        assert len(cells) == 7, row


def test_readme_documents_every_parameter_launch_argument_and_topic():
    from kp2d_ros.parameter_docs import markdown_table

    readme = (ROOT / 'README.md').read_text()
    assert markdown_table() in readme, 'regenerate: python -m kp2d_ros.parameter_docs --markdown'
    names = launch_argument_names()
    assert {'namespace', 'image_transport', 'lifecycle'} <= set(names)
    for name in names:
        assert f'| `{name}` |' in readme, name
    topics = ('keypoints', 'features', 'homography', 'tracks', 'feature_cloud', 'odometry')
    for topic in (*topics, 'debug_image'):
        assert f'| `~/{topic}` |' in readme, topic
