"""Package discovery lives here because plugins/ ships under another name; everything else is in setup.cfg."""

from setuptools import find_packages, setup

PLUGINS = ["genrec_bench_plugins"] + [f"genrec_bench_plugins.{p}" for p in find_packages("plugins")]

setup(
    packages=find_packages(include=["genrec_bench", "genrec_bench.*"]) + PLUGINS,
    package_dir={"genrec_bench_plugins": "plugins"},
)
