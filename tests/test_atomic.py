from __future__ import annotations

import pytest

from xbench.atomic import atomic_dir, atomic_write_json, atomic_write_text, hash_json


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_json(p, {"a": Boom()})
    assert p.read_text().strip() == '{\n  "a": 1\n}'
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_atomic_dir_is_all_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "half").write_text("x")
            raise ValueError
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "full").write_text("y")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("z")
    assert [p.name for p in target.iterdir()] == ["new"]
    atomic_write_text(tmp_path / "t.txt", "ok")


def test_hash_is_canonical():
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})
