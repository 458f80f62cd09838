"""Package discovery only; all metadata lives in pyproject.toml.

components/ and pipelines/ are top-level folders in the repository but ship as
trainpipe.components and trainpipe.pipelines, so every sub-folder is found here and
mapped under that name.
"""

from setuptools import find_packages, setup


def _mapped(folder: str, package: str) -> list[str]:
    return [package] + [f"{package}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages("src")
    + _mapped("components", "trainpipe.components")
    + _mapped("pipelines", "trainpipe.pipelines"),
)
