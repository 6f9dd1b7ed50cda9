"""Python packaging for pip users; colcon builds the same tree through CMakeLists.txt.

Ranges are loose on purpose so that a robot's existing CUDA torch and ROS 2 Python are kept;
CI pins exact versions in requirements/.
"""
from setuptools import find_packages, setup

setup(
    name="lmeec_ros",
    version="0.1.0",
    description="LM-EEC ego-exo object correspondence for ROS 2 (SAM 2 + Memory-View MoE)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lmeec_core", "lmeec_core.*", "lmeec_ros", "lmeec_ros.*"]),
    package_data={"lmeec_core": ["assets/*"]},
    install_requires=[
        "torch>=2.3",
        "sam2>=1.1.0,<1.2",
        "hydra-core>=1.3.2",
        "iopath>=0.1.10",
        "numpy>=1.24",
        "pillow>=9.4",
        "pyyaml>=6",
        "tqdm>=4.66",
        "pycocotools>=2.0.7",
    ],
    extras_require={
        "demo": ["opencv-python-headless>=4.8", "matplotlib>=3.7", "rosbags>=0.10"],
        "train": ["tensorboard>=2.14"],
    },
    entry_points={
        "console_scripts": [
            "lmeec = lmeec_core.cli:main",
            "lmeec_node = lmeec_ros.node:main",
            "lmeec_bag = lmeec_ros.bag_tools:main",
            "lmeec_demo = lmeec_ros.demo:main",
            "lmeec_bench_node = lmeec_ros.bench_node:main",
        ],
    },
)
