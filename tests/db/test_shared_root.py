"""A host joining a shared database checks its items folder before it claims anything."""

from __future__ import annotations

import os

import pytest

from engine import ownership


def test_the_shared_folder_passes_and_leaves_nothing(tmp_path):
    ownership.claim_new(tmp_path / "items", "a" * 32)
    ownership.check_shared_root(tmp_path / "items", "a" * 32, "host-1")
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == [ownership.ITEMS_MARKER]


def test_an_unmounted_or_foreign_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ownership.OwnershipError, match="does not exist on this host"):
        ownership.check_shared_root(tmp_path / "items", "a" * 32, "h")
    (tmp_path / "items").mkdir()
    with pytest.raises(
        ownership.OwnershipError, match="has no ownership marker.*mount the shared items folder"
    ):
        ownership.check_shared_root(tmp_path / "items", "a" * 32, "h")
    ownership.claim_new(tmp_path / "other", "b" * 32)
    with pytest.raises(ownership.OwnershipError, match="names another database"):
        ownership.check_shared_root(tmp_path / "other", "a" * 32, "h")


def test_a_folder_where_rename_fails_is_refused(tmp_path, monkeypatch):
    ownership.claim_new(tmp_path / "items", "a" * 32)

    def no_rename(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(ownership.OwnershipError, match="does not work atomically.*cross-device"):
        ownership.check_shared_root(tmp_path / "items", "a" * 32, "h")
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == [ownership.ITEMS_MARKER]
