"""Serving files of the content-addressed media store over HTTP.

A media key is ``<sha256>.<ext>``, so the key *is* a strong validator: the ETag is the
digest, and the bytes behind a URL never change (``Cache-Control: immutable``). Range
requests (one range; ``If-Range`` honoured) answer 206 with ``Content-Range``, so a
``<video>`` seeks without downloading the whole master.

Only a strict key (64 hex digits, an extension from ``SERVED_TYPES``) is looked up, and
only a regular file at exactly ``root/<ab>/<key>`` is opened: no ``..``, no encoded
slash, no absolute path, no symlink (anywhere under the root) ever reaches a file.
Which keys a page may serve at all is decided by the caller (``bot.web.pages``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

SERVED_TYPES = {
    "mp4": "video/mp4",
    "png": "image/png",
    "jpg": "image/jpeg",
}
KEY_PATTERN = r"[0-9a-f]{64}\.(?:mp4|png|jpg)"
_KEY = re.compile(rf"^{KEY_PATTERN}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    """The Range header names no byte of the file (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks for, or None for the whole file (no header,
    a header this server ignores: several ranges, another unit, a malformed one).
    Raises ``Unsatisfiable`` when the range starts past the end."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # malformed: ignored, as RFC 9110 says
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, end)


def etag_of(key: str) -> str:
    return f'"{key.partition(".")[0]}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip() for t in header.split(",")]
    return etag in tags or f"W/{etag}" in tags


def open_media(root: Path, key: str) -> tuple[int, os.stat_result]:
    """Open the file of ``key`` under ``root`` for reading: (fd, stat). Raises
    ``FileNotFoundError`` for anything but a regular file at exactly its place."""
    if not _KEY.match(key):
        raise FileNotFoundError(key)
    real_root = os.path.realpath(root)
    expected = os.path.join(real_root, key[:2], key)
    # a symlink anywhere on the way (the shard folder, the file) changes the real path
    if os.path.realpath(os.path.join(root, key[:2], key)) != expected:
        raise FileNotFoundError(key)
    try:
        fd = os.open(expected, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise FileNotFoundError(key) from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError(key)
    return fd, st


async def serve_media(
    request: web.Request, root: Path, key: str, *, download_name: str | None = None
) -> web.StreamResponse:
    """Answer ``request`` with the media file ``key``: 200, 206, 304 or 416 (404 when
    the file is not there)."""
    ext = key.rpartition(".")[2]
    try:
        fd, st = await asyncio.to_thread(open_media, root, key)
    except FileNotFoundError:
        raise web.HTTPNotFound() from None
    try:
        size = st.st_size
        etag = etag_of(key)
        headers = {
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "Accept-Ranges": "bytes",
            "Content-Type": SERVED_TYPES[ext],
            "X-Content-Type-Options": "nosniff",
        }
        if download_name:
            headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        byte_range: ByteRange | None = None
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() == etag:
            try:
                byte_range = parse_range(request.headers.get("Range"), size)
            except Unsatisfiable:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
        if byte_range is None:
            status, start, length = 200, 0, size
        else:
            status, start, length = 206, byte_range.start, byte_range.length
            headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(request)  # the headers go out now
        if request.method == "HEAD" or length == 0:
            return resp
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the viewer left")
        with os.fdopen(os.dup(fd), "rb") as fobj:
            # the kernel copies the bytes (sendfile): a crowd of viewers costs the event
            # loop little; asyncio falls back to reading and writing where it cannot
            await asyncio.get_running_loop().sendfile(transport, fobj, start, length)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)
