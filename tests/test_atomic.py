"""Atomic writes leave either the old file or the new one, never a partial file."""

import json

import pytest

from utils.atomic import atomic_directory, atomic_open, atomic_write_json, atomic_write_text


def test_write_and_replace(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_failure_keeps_old_content_and_no_temp(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_read_mode_refused(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "rb"):
            pass


def test_finished_file_has_umask_mode_not_0600(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "m.txt"
    atomic_write_text(path, "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out" / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("interrupted before the weights")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with atomic_directory(target) as staging:
        (staging / "config.json").write_text("{}")
        assert not target.exists()
    assert [p.name for p in target.iterdir()] == ["config.json"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"]
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        with atomic_directory(target):
            pass
    assert [p.name for p in target.iterdir()] == ["config.json"]
