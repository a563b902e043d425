"""Only what pyproject.toml cannot say: the task cards live in the top-level `tasks/` folder (where a
reader looks for them) yet ship inside the package as `xbench._cards`, so an installed xbench finds
them with importlib.resources. pyproject's `packages.find` cannot add a package from another folder,
hence this file; everything else is in pyproject.toml."""
from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["xbench", "xbench.*"], exclude=["*.__pycache__"]), "xbench._cards"],
    package_dir={"xbench._cards": "tasks"},
)
