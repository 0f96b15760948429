"""Install script shared by `pip install -e .` (no ROS) and `colcon build` (ament_python)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "openset_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.md")),
    ],
    package_data={PACKAGE: ["py.typed"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="openset_perception maintainers",
    maintainer_email="perception@openset-perception.dev",
    description="Dense open-set semantic segmentation (DenseHybrid) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "openset-perception = openset_perception.cli.main:main",
            "segmenter_node = openset_perception.ros.segmenter_node:main",
            "eval_live = openset_perception.ros.eval_live:main",
        ],
    },
)
