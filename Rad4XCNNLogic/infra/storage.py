"""Atomic file writes, content hashes and the on-disk cache of per-case results.

Every output is written to a temporary name in the same folder and renamed into place, so an interrupted
run never leaves a half-written file behind, and two processes writing the same entry cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_UMASK: int | None = None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    Examples
    --------
    >>> with atomic_path("out.csv") as tmp:  # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file readable by its owner only; outputs get the usual umask permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    # Reading the umask means setting it; doing so on every write would race with other threads.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy scalars and paths are converted)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def write_csv_atomic(path: str | os.PathLike, frame, **kwargs) -> Path:
    """Write a pandas DataFrame to CSV atomically (``index=True`` by default: case_id first)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np  # here: the stage records and the command line's help import this module

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, memoised per (path, size, mtime) within the process.

    A folder (a DICOM series) hashes the names and contents of the files directly in it, sorted.
    """
    path = Path(path)
    if path.is_dir():
        folder = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            folder.update(f"{child.name}\0{file_sha256(child)}\n".encode())
        return folder.hexdigest()
    st = path.stat()
    memo_key = (os.fspath(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASH_MEMO[memo_key] = digest.hexdigest()
    return _HASH_MEMO[memo_key]


def settings_hash(settings: Any) -> str:
    """A stable SHA-256 of JSON-serialisable settings (keys sorted), for cache keys."""
    text = json.dumps(settings, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResultCache:
    """A content-addressed store of per-case results under ``root/namespace``.

    Keys are hex digests built by :meth:`key` from everything that determines a result (input file hashes,
    settings, library versions); values are JSON documents or numpy arrays. Entries are written atomically,
    so concurrent writers of the same key are safe (the last complete write wins, and both are identical).

    Examples
    --------
    >>> cache = ResultCache(tmp_path, "radiomics")  # doctest: +SKIP
    >>> k = cache.key(image_hash, mask_hash, params_hash, "3.1.4")  # doctest: +SKIP
    >>> cache.get_json(k) is None  # doctest: +SKIP
    True
    """

    def __init__(self, root: str | os.PathLike, namespace: str):
        self.root = Path(root) / namespace
        self.namespace = namespace

    @staticmethod
    def key(*parts: Any) -> str:
        return settings_hash(list(parts))

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get_json(self, key: str) -> Any | None:
        path = self._path(key, ".json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put_json(self, key: str, value: Any) -> None:
        write_json_atomic(self._path(key, ".json"), value)

    def get_array(self, key: str) -> np.ndarray | None:
        import numpy as np

        path = self._path(key, ".npy")
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put_array(self, key: str, value: np.ndarray) -> None:
        import numpy as np

        with atomic_path(self._path(key, ".npy")) as tmp, tmp.open("wb") as fh:
            np.save(fh, np.asarray(value), allow_pickle=False)

    def __contains__(self, key: str) -> bool:
        return self._path(key, ".json").exists() or self._path(key, ".npy").exists()
