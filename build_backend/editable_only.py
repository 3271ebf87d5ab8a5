"""Build backend of MedVLP: setuptools, but only for editable installs (``pip install -e .``).

MedVLP's packages have generic top-level names (``models``, ``data``, ``utils``,
``engine``, ``tasks``) and its scripts import them that way, as BLIP's do. An
editable install puts the repository folder on ``sys.path`` (one ``.pth`` line)
and adds the console scripts; nothing is copied into site-packages, where those
names would collide with other packages. A regular install would copy them there,
so it is refused with that explanation.
"""

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook as setuptools has it)

__all__ = [name for name in _setuptools.__all__ if name != "build_wheel"] + ["build_wheel"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise SystemExit(
        "MedVLP installs as an editable checkout only: run `pip install -e .` in the repository. "
        "A regular install would put the generic top-level packages models/, data/, utils/, engine/ and "
        "tasks/ into site-packages, where they collide with other packages."
    )
