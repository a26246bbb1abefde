"""``MediaStore``: content-addressed files under the data directory.

A file's name is the SHA-256 of its bytes plus an extension the program picks
from a short allow-list, never a name a user sent. Writes are atomic: the bytes
go to a temporary file in the same folder, are fsynced, then renamed into
place, so a crash mid-write leaves no half file under a real name (a stray
``.tmp`` at worst, swept by ``sweep_temp``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ALLOWED_EXTENSIONS = frozenset({"mp4", "png", "jpg", "m4a", "mp3", "wav", "ogg", "json", "bin"})
_CHUNK = 1024 * 1024


class MediaStore:
    """Content-addressed media under ``root``: ``root/ab/<sha256>.<ext>``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check_ext(ext: str) -> str:
        ext = ext.lower().lstrip(".")
        if ext not in ALLOWED_EXTENSIONS:
            raise ValueError(f"extension {ext!r} is not one the media store writes")
        return ext

    def path(self, key: str) -> Path:
        """Where the file for ``key`` (``<sha256>.<ext>``) lives."""
        digest, _, ext = key.partition(".")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a media key: {key!r}")
        self._check_ext(ext)
        return self.root / digest[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put_bytes(self, data: bytes, ext: str) -> str:
        """Store ``data``; returns its key. Storing the same bytes twice is a no-op."""
        key = f"{hashlib.sha256(data).hexdigest()}.{self._check_ext(ext)}"

        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        self._place(key, fill)
        return key

    def put_file(self, src: Path | str, ext: str, *, move: bool = False) -> str:
        """Store the file at ``src`` (copied, or moved when ``move``); returns its key."""
        src = Path(src)
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        key = f"{h.hexdigest()}.{self._check_ext(ext)}"

        def fill(tmp: Path) -> None:
            if move:
                try:
                    os.replace(src, tmp)
                    return
                except OSError:  # another filesystem
                    pass
            shutil.copyfile(src, tmp)

        self._place(key, fill)
        if move:
            src.unlink(missing_ok=True)
        return key

    def _place(self, key: str, fill: Callable[[Path], None]) -> None:
        """Write the file for ``key`` atomically: ``fill`` writes a temporary file in the
        same folder, which is fsynced and renamed into place (then the folder is fsynced).
        Nothing happens when the file is already there: the name is its content."""
        dest = self.path(key)
        if dest.is_file():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            fill(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir(dest.parent)

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def derived_path(self, key: str, name: str) -> Path:
        """Where a file computed from the file ``key`` is kept (a song's beat analysis):
        beside it as ``<sha256>.<name>``, found again from the key alone. ``name`` is the
        program's (``beats-v1.json``), never a user's."""
        if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
            raise ValueError(f"not a derived file name: {name!r}")
        src = self.path(key)
        return src.with_name(f"{key.partition('.')[0]}.{name}")

    def put_derived(self, key: str, name: str, data: bytes) -> Path:
        """Write (or replace) a file derived from ``key``, atomically like every write."""
        dest = self.derived_path(key, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir(dest.parent)
        return dest

    def read_derived(self, key: str, name: str) -> bytes | None:
        """The file derived from ``key`` under ``name``, None when there is none."""
        try:
            return self.derived_path(key, name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> bool:
        p = self.path(key)
        if p.is_file():
            p.unlink()
            return True
        return False

    def sweep_temp(self) -> int:
        """Remove temporary files left by a crash mid-write; returns how many."""
        n = 0
        for p in self.root.glob("*/.incoming-*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
