"""Packaging for kp2d: an ament_python ROS 2 package that is also pip-installable."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'kp2d_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    description='KP2D keypoints, descriptors and frame-to-frame homographies for ROS 2',
    license='MIT',
    python_requires='>=3.10',
    packages=find_packages(include=['kp2d_core', 'kp2d_core.*', 'kp2d_ros', 'kp2d_ros.*']),
    package_data={
        'kp2d_core': ['weights/*.pt', 'weights/*.onnx', 'weights/*.json', 'assets/*', 'py.typed'],
    },
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    install_requires=[  # inference runs on ONNX Runtime (onnxruntime-gpu on CUDA machines)
        'numpy>=1.23',
        'opencv-python-headless>=4.7,<5',
        'pyyaml>=5.4',
        'onnxruntime>=1.16',
    ],
    extras_require={
        'torch': ['torch>=2.2'],  # the PyTorch backend and weights without an ONNX export
        'train': [
            'torch>=2.2',
            'onnx>=1.14',
            'tqdm>=4.60',
            'tensorboard>=2.10',
            'matplotlib>=3.6',
        ],
        'bag': ['rosbags>=0.10'],
        'onnx': ['onnx>=1.14'],  # ONNX export
        'dev': ['pytest>=7', 'ruff>=0.5', 'hypothesis>=6.80', 'colcon-common-extensions>=0.3'],
    },
    zip_safe=False,
    entry_points={
        'console_scripts': [
            'kp2d_node = kp2d_ros.node:main',
            'kp2d_lifecycle_node = kp2d_ros.node:lifecycle_main',
            'kp2d_replay = kp2d_ros.node:replay_main',
        ],
    },
)
