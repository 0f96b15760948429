"""The package's share directory (and so the shipped model) is found through the ament index, in a
source checkout, and under a pip install's data prefix, with no ament environment needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from openset_perception.runtime import package_share
from openset_perception.runtime.package_share import package_share_dir
from openset_perception.runtime.parameters import DEFAULT_MODEL, resolve_model_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def fake_share(prefix: Path) -> Path:
    share = prefix / "share" / "openset_perception"
    (share / "models").mkdir(parents=True)
    (share / "package.xml").write_text("<package/>")
    (share / "models" / DEFAULT_MODEL).write_bytes(b"")
    return share


def test_without_an_ament_environment_the_source_checkout_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert package_share_dir() == REPO_ROOT
    shipped = resolve_model_path(DEFAULT_MODEL, package_share_dir(), cwd=Path("/nonexistent"))
    assert shipped == REPO_ROOT / "models" / DEFAULT_MODEL


def test_a_pip_install_is_found_in_its_data_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(package_share, "_SOURCE_ROOT", tmp_path / "site-packages")  # not a checkout
    share = fake_share(tmp_path / "venv")
    monkeypatch.setattr(package_share.sysconfig, "get_path", lambda name, scheme: str(tmp_path / "venv"))
    assert package_share_dir() == share
    monkeypatch.setattr(package_share.sysconfig, "get_path", lambda name, scheme: str(tmp_path / "other"))
    assert package_share_dir() is None


def test_the_ament_index_comes_first_and_a_foreign_one_is_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("ament_index_python")
    workspace = tmp_path / "install"
    share = fake_share(workspace)
    index = workspace / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "openset_perception").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(workspace))
    assert package_share_dir() == share

    other = tmp_path / "other_ros"  # an ament prefix without this package: the checkout again
    (other / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(other))
    assert package_share_dir() == REPO_ROOT
