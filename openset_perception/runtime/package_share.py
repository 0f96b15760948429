"""Where the package's installed files (package.xml, models/, config/, launch/) are, with or without ROS.

colcon installs them under ``<prefix>/share/openset_perception`` and registers the package in the ament
index. ``pip install`` puts the same data files under the environment's data prefix
(``<venv>/share/openset_perception``), where there is no ament index (``AMENT_PREFIX_PATH`` unset, or
set by another ROS installation that lacks this package). A source checkout has them at its root.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "openset_perception"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when running from one


def package_share_dir() -> Path | None:
    """The first of the ament share directory, the source checkout and the pip data prefix that holds
    the package's ``package.xml``; None if none does."""
    for candidate in _candidates():
        if (candidate / "package.xml").is_file():
            return candidate
    return None


def _candidates() -> Iterator[Path]:
    ament_share = _ament_share_dir()
    if ament_share is not None:
        yield ament_share
    yield _SOURCE_ROOT
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        yield Path(sysconfig.get_path("data", scheme)) / "share" / PACKAGE


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, OSError):  # not in the index (a KeyError); no AMENT_PREFIX_PATH (an OSError)
        return None
