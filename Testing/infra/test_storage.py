"""Atomic writes, content hashes and the per-case result cache."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.infra.storage import (
    ResultCache,
    atomic_path,
    file_sha256,
    settings_hash,
    write_csv_atomic,
    write_json_atomic,
)


def test_atomic_path_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_outputs_get_umask_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_csv_and_json_writes(tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.0]}, index=pd.Index(["a", "b"], name="case_id"))
    write_csv_atomic(tmp_path / "t.csv", frame)
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).equals(frame)
    write_json_atomic(tmp_path / "r.json", {"v": np.float32(1.5), "a": np.arange(2), "p": tmp_path})
    assert '"v": 1.5' in (tmp_path / "r.json").read_text()


def test_hashes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert settings_hash({"a": 1, "b": [2, 3]}) == settings_hash({"b": [2, 3], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


def test_cache_round_trip(tmp_path):
    cache = ResultCache(tmp_path, "radiomics")
    key = cache.key("imagehash", "maskhash", {"binWidth": 25}, "3.1.4")
    assert cache.get_json(key) is None and key not in cache
    cache.put_json(key, {"original_firstorder_Mean": 0.1 + 0.2})
    assert cache.get_json(key) == {"original_firstorder_Mean": 0.1 + 0.2}
    cache.put_array("k2", np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(cache.get_array("k2"), np.arange(5, dtype=np.float32))
    assert key in cache and "k2" in cache


def _writer(root, value):
    cache = ResultCache(root, "ns")
    for _ in range(200):
        cache.put_json("samekey", {"v": value, "pad": "x" * 20000})


def test_concurrent_writers_never_corrupt_an_entry(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, v)) for v in (1, 2)]
    for p in procs:
        p.start()
    cache = ResultCache(tmp_path, "ns")
    seen = set()
    while any(p.is_alive() for p in procs):
        got = cache.get_json("samekey")
        if got is not None:
            seen.add(got["v"])
            assert len(got["pad"]) == 20000
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert cache.get_json("samekey")["v"] in (1, 2)
    assert not list((tmp_path / "ns").rglob("*.tmp"))
