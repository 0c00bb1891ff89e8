"""The MNIST TFX-style pipeline as an installable package (`pip install -e .`).

The exact versions of every transitive dependency live in requirements.lock; the pins below
are the direct dependencies, at the same versions.
"""

from setuptools import find_packages, setup

setup(
    name="mnist-tfx-pipeline",
    version="0.1.0",
    description="A TFX-style MNIST pipeline: Beam ExampleGen, TFDV validation, Estimator CNN, "
    "TFMA-gated pushes",
    python_requires="==3.11.*",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*"]),
    py_modules=["run_local"],
    install_requires=[
        "tensorflow==2.15.1",
        "tensorflow-data-validation==1.15.1",
        "tensorflow-model-analysis==0.46.0",
        "tfx-bsl==1.15.1",
        "ml-metadata==1.15.0",
        "apache-beam[gcp,dill,tfrecord]==2.72.0",
        "pyarrow==10.0.1",
        "numpy==1.26.4",
        "pandas==1.5.3",
        "protobuf==4.25.9",
        "pillow==12.3.0",
        "pymysql==1.2.4",
    ],
    extras_require={"test": ["pytest==9.2.0", "hypothesis==6.170.15"]},
    entry_points={"console_scripts": ["mnist-pipeline=pipeline.cli:main"]},
)
