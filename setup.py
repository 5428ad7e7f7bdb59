"""Install qdr_ros (ROS 2 runtime) and qdr_train (training) as one ament_python package."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'qdr_ros'
HERE = os.path.dirname(os.path.abspath(__file__))
SHARE = os.path.join('share', PACKAGE)
ROBOT_MODEL_FILES = ('models/**/efm_int8*.onnx', 'models/**/efm_int8*.onnx.data', 'models/**/MODEL_CARD_int8.md',
                     'models/**/model_card_int8.json')


def _files(*patterns: str) -> list[str]:
    """Return repo-relative files matching ``patterns``; empty when nothing exists yet."""
    found: set[str] = set()
    for pattern in patterns:
        found.update(glob(pattern, root_dir=HERE, recursive=True))
    return sorted(f for f in found if os.path.isfile(os.path.join(HERE, f)))


def _data_files() -> list[tuple[str, list[str]]]:
    """Map ROS share/ paths to files; models keep their ``models/<task>/`` layout.

    A robot runs the INT8 files (and reads their cards); FP32 checkpoints and ONNX stay in the
    repository for training and benchmarks.
    """
    entries = [
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        (SHARE, ['package.xml']),
        (os.path.join(SHARE, 'launch'), _files('launch/*.launch.py')),
        (os.path.join(SHARE, 'config'), _files('config/*.yaml', 'config/*.rviz')),
    ]
    by_dir: dict[str, list[str]] = {}
    # *.data: ONNX external weights (e.g. model.onnx.data) must sit next to their model.
    for path in _files(*ROBOT_MODEL_FILES):
        by_dir.setdefault(os.path.join(SHARE, os.path.dirname(path)), []).append(path)
    entries.extend(sorted(by_dir.items()))
    return [(target, files) for target, files in entries if files]


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={'qdr_train': ['configs/*.yaml']},
    data_files=_data_files(),
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='QDR maintainers',
    maintainer_email='maintainers@qdr-robotics.org',
    description='Restore degraded camera frames with an INT8 network in ROS 2, and train that network.',
    license='Apache-2.0',
    python_requires='>=3.10',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'qdr-train = qdr_train.cli:main',
            'qdr-run = qdr_ros.tools.run:main',
            'restore_node = qdr_ros.nodes.restore_node:main',
            'detect_node = qdr_ros.nodes.detect_node:main',
            'camera_source = qdr_ros.nodes.camera_source:main',
            'qdr-bench = qdr_ros.tools.bench.cli:main',
        ],
    },
)
