"""Finding and running ffmpeg.

Argument lists are built with ffmpeg-python (``ffmpeg.input(...).output(...).get_args()``)
or by hand, and run here with :func:`asyncio.create_subprocess_exec`. ffmpeg-python's own
``run_async(quiet=True)`` is never used: it opens pipes it never drains, and ffmpeg blocks
for good once its stderr pipe fills up. :func:`run_ffmpeg` reads stdout (``-progress``
key=value lines) and stderr at the same time, keeps the last lines of stderr for the error
message, and kills the process when the calling task is cancelled or times out.

Long filter graphs go in a file passed as ``-/filter_complex FILE`` (ffmpeg 7+ syntax; the
old ``-filter_complex_script`` option is gone in ffmpeg 9); see :func:`filter_script_args`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.errors import ConfigError, MediaError

log = logging.getLogger(__name__)

#: options :func:`run_ffmpeg` puts in front of every argument list
GLOBAL_ARGS: tuple[str, ...] = ("-nostdin", "-hide_banner", "-y", "-progress", "pipe:1", "-nostats")

#: how many lines of stderr a :class:`MediaError` carries
STDERR_TAIL_LINES = 30

_READ_CHUNK = 64 * 1024


def resolve_ffmpeg(setting: str | None = None) -> str:
    """Return the path of the ffmpeg binary to use.

    ``setting`` is the ``FFMPEG_BINARY`` setting: when given it must name an executable
    file (a bare name is looked up on ``PATH``). Otherwise ``ffmpeg`` on ``PATH`` is used,
    and failing that the binary bundled with the ``imageio-ffmpeg`` wheel.

    Raises :class:`ConfigError` when no usable binary is found.
    """
    if setting:
        candidate = setting if os.sep in setting else (shutil.which(setting) or setting)
        path = Path(candidate).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(
                f"FFMPEG_BINARY={setting!r} is not an executable file; set it to the path "
                "of an ffmpeg binary, or leave it empty to use ffmpeg from PATH or the one "
                "bundled with imageio-ffmpeg"
            )
        return str(path)
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise ConfigError(
            "no ffmpeg found: install ffmpeg on PATH, install the imageio-ffmpeg wheel, "
            "or set FFMPEG_BINARY to the path of an ffmpeg binary"
        ) from exc
    return bundled


@functools.cache
def _default_binary() -> str:
    return resolve_ffmpeg(None)


def ffmpeg_version(binary: str) -> str:
    """Return the version string of ``binary`` (e.g. ``"n9.0.2-17-g2a571b6068"``).

    Synchronous: meant for ``crowdcut doctor`` and start-up checks, not the event loop.
    """
    try:
        proc = subprocess.run(
            [binary, "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        raise MediaError(f"cannot run {binary}: {exc}") from exc
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    parts = first.split()
    if proc.returncode != 0 or len(parts) < 3 or parts[1] != "version":
        raise MediaError(f"{binary} -version failed (exit {proc.returncode})", proc.stderr[-2000:])
    return parts[2]


def has_encoders(binary: str, names: Iterable[str]) -> dict[str, bool]:
    """Tell, for each encoder name, whether ``binary`` was built with it.

    Runs ``ffmpeg -hide_banner -encoders`` synchronously (for ``crowdcut doctor``).
    """
    try:
        proc = subprocess.run(
            [binary, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        raise MediaError(f"cannot run {binary}: {exc}") from exc
    if proc.returncode != 0:
        raise MediaError(f"{binary} -encoders failed (exit {proc.returncode})", proc.stderr[-2000:])
    available: set[str] = set()
    past_legend = False
    for line in proc.stdout.splitlines():
        if not past_legend:
            # the legend ends with a line of dashes; encoder rows follow it
            past_legend = line.strip().startswith("---")
            continue
        parts = line.split()
        if len(parts) >= 2:
            available.add(parts[1])
    return {name: name in available for name in names}


def filter_script_args(graph: str, path: Path) -> list[str]:
    """Write ``graph`` to ``path`` and return ``["-/filter_complex", str(path)]``.

    Use for graphs too long for a command line (dozens of inputs). The ``-/option FILE``
    form loads an option's value from a file; it replaced ``-filter_complex_script``.
    """
    path.write_text(graph, encoding="utf-8")
    return ["-/filter_complex", str(path)]


async def _read_lines(stream: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    """Feed every line of ``stream`` to ``on_line`` until EOF.

    Reads in chunks rather than ``readline()``: ffmpeg can write lines longer than the
    StreamReader limit, and ``readline()`` raises on those instead of returning them.
    """
    pending = b""
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        # ffmpeg ends some status lines with a bare \r
        pending = pending.replace(b"\r", b"\n")
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if raw:
                on_line(raw.decode("utf-8", "replace"))
        if len(pending) > _READ_CHUNK:
            on_line(pending.decode("utf-8", "replace"))
            pending = b""
    if pending:
        on_line(pending.decode("utf-8", "replace"))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    # Reap it so no process outlives us. A task is often cancelled twice (by a gather and
    # by its owner); the shield and the loop make sure a second cancel cannot skip this.
    waiter = asyncio.ensure_future(proc.wait())
    while not waiter.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(waiter)


#: seconds without a line from ffmpeg (it writes progress twice a second) after which it
#: is taken for stuck, killed and run again once: the ffmpeg 9 static build deadlocks now
#: and then at the end of a short render (about 1 run in 100 under load)
STALL_SECONDS = 60.0

#: how many times a stuck ffmpeg is run again before the render fails
STALL_RETRIES = 1


class _Stalled(Exception):
    pass


async def run_ffmpeg(
    args: list[str],
    *,
    binary: str | None = None,
    duration: float | None = None,
    progress: Callable[[float], None] | None = None,
    timeout: float | None = None,
    nice: float | None = None,
    stall: float | None = None,
) -> None:
    """Run ffmpeg with ``args`` and wait for it without blocking the event loop.

    ``args`` is what follows the binary name, e.g. from ffmpeg-python's ``get_args()``;
    ``-nostdin -hide_banner -y -progress pipe:1 -nostats`` are put in front. When
    ``duration`` (seconds of output expected) and ``progress`` are given, ``progress``
    receives the fraction done (0..1) as ffmpeg reports it, and 1.0 when it succeeds.

    ``nice`` lowers the process's scheduling priority by that much (background renders
    yield the CPU to generation and interactive work).

    An ffmpeg that writes nothing for ``stall`` seconds (default :data:`STALL_SECONDS`) is
    killed and run again, :data:`STALL_RETRIES` times; its output file is rewritten from
    the start (``-y``), so every caller's output must be a path of its own, as they are.

    Raises :class:`MediaError` carrying the last lines of stderr when ffmpeg exits non-zero,
    runs past ``timeout`` seconds or stays stuck. When the calling task is cancelled the
    process is killed and reaped before :class:`asyncio.CancelledError` propagates.
    """
    exe = binary or _default_binary()
    argv = [exe, *GLOBAL_ARGS, *args]
    log.debug("ffmpeg %s", " ".join(args))
    stall = STALL_SECONDS if stall is None else stall
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for tries in range(STALL_RETRIES + 1):
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await _run_once(argv, duration=duration, progress=progress, timeout=left,
                            total=timeout, nice=nice, stall=stall)  # fmt: skip
            return
        except _Stalled as stuck:
            if tries == STALL_RETRIES:
                raise MediaError(
                    f"ffmpeg wrote nothing for {stall:g} s, {tries + 1} times, and was stopped",
                    str(stuck),
                ) from None
            log.warning("ffmpeg wrote nothing for %g s; stopped it and running it again", stall)


async def _run_once(
    argv: list[str],
    *,
    duration: float | None,
    progress: Callable[[float], None] | None,
    timeout: float | None,
    total: float | None,
    nice: float | None,
    stall: float,
) -> None:
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    last_fraction = -1.0
    loop = asyncio.get_running_loop()
    heard = loop.time()

    def on_progress_line(line: str) -> None:
        nonlocal last_fraction, heard
        heard = loop.time()
        if progress is None or not duration or duration <= 0:
            return
        key, _, value = line.partition("=")
        if key != "out_time_us" or not value.strip().lstrip("-").isdigit():
            return  # "N/A" before the first packet
        fraction = min(1.0, max(0.0, int(value) / 1_000_000 / duration))
        if fraction > last_fraction:
            last_fraction = fraction
            progress(fraction)

    def on_stderr_line(line: str) -> None:
        nonlocal heard
        heard = loop.time()
        tail.append(line)

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise MediaError(f"cannot start ffmpeg ({argv[0]}): {exc}") from exc
    if nice:
        # set right after the start rather than in a preexec_fn (unsafe with threads);
        # the first milliseconds at normal priority do not matter
        with contextlib.suppress(OSError):
            base = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, proc.pid, base + int(nice))

    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(
        _read_lines(proc.stdout, on_progress_line),
        _read_lines(proc.stderr, on_stderr_line),
    )
    try:
        async with asyncio.timeout(timeout):
            while not readers.done():
                await asyncio.wait([readers], timeout=min(stall, 5.0))
                if not readers.done() and loop.time() - heard >= stall:
                    raise _Stalled("\n".join(tail))
            await readers
            returncode = await proc.wait()
    except TimeoutError:
        readers.cancel()
        await _kill(proc)
        raise MediaError(
            f"ffmpeg timed out after {total:g} s and was stopped", "\n".join(tail)
        ) from None
    except BaseException:
        # stuck, cancelled (or a bug in a progress callback): never leave ffmpeg running
        readers.cancel()
        await _kill(proc)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await readers
        raise
    if returncode != 0:
        raise MediaError(f"ffmpeg failed (exit {returncode})", "\n".join(tail))
    if progress is not None and last_fraction < 1.0:
        progress(1.0)


def _fsync_replace(tmp: Path, dest: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def publish(tmp: Path, dest: Path) -> Path:
    """Move a finished ``tmp`` file to ``dest`` atomically (fsync, rename, fsync the folder).

    Readers of ``dest`` see the old file or the complete new one, never half a file. Both
    paths must be on the same filesystem. Runs in a worker thread (fsync blocks).
    """
    await asyncio.to_thread(_fsync_replace, Path(tmp), Path(dest))
    return Path(dest)


def part_path(dest: Path, suffix: str | None = None) -> Path:
    """A temporary name next to ``dest`` for writing it (hidden, unique to this process).

    The suffix is kept (or set to ``suffix``) so ffmpeg still guesses the right format.
    """
    dest = Path(dest)
    ext = suffix if suffix is not None else dest.suffix
    return dest.with_name(f".{dest.stem}.{os.getpid()}.{secrets.token_hex(4)}.part{ext}")
