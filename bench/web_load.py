"""Project pages under load, served from the bot's own process while it takes a burst.

The real bot runs as an operator starts it (``crowdcut run``, pointed at the Discord
emulator, ``WEB_PORT`` set), so its pages share its process and event loop. Then:

1. 200 viewers (in a niced process of their own: real viewers are elsewhere) open an
   approved project's page and stream its master the way a ``<video>`` does: range
   requests of 512 KiB, paced at twice the video's bitrate (a player reading ahead), a
   seek to a random point now and then, and the page reloaded every few seconds.
2. While they watch, a burst of 500 ``/prompt`` from 100 members, all sent at once
   (``PREMODERATION=true`` as in ``bench/discord_load.py``: the figure is the bot's own
   answer time). Measured: the time to the bot's first callback (p50, p99, max; the target
   is p99 < 250 ms), and the page's time to first byte (p50, p99) and the range requests'.

The same burst runs first with nobody watching (the baseline), and then, as a stress
case, with the viewers unpaced (each downloads as fast as it can).

Run: ``python bench/web_load.py [--viewers 200] [--prompts 500] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.discord_load import PeakPSS, machine, percentile, seed, tiny_clip  # noqa: E402
from bot.emulator import DiscordEmulator  # noqa: E402
from bot.media.ffmpeg import resolve_ffmpeg  # noqa: E402
from storage import MediaStore, Store  # noqa: E402
from storage.models import Slot  # noqa: E402

CHUNK = 512 * 1024


def make_master(dest: Path, seconds: float) -> Path:
    """A 720p H.264 + AAC master of ``seconds`` (moov first, as the assembly writes it)."""
    subprocess.run(
        [
            resolve_ffmpeg(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s=1280x720:r=24:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:d={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
            str(dest),
        ],
        check=True,
    )
    return dest


def seed_approved(data: Path, guild_id: int, channel_id: int, master: Path, clip: Path) -> str:
    """An approved project whose cut has ``master``; returns its page token."""
    store = Store(data / "crowdcut.db")
    media = MediaStore(data / "media")
    master_key = media.put_file(master, "mp4")
    clip_key = media.put_file(clip, "mp4")
    store.upsert_member(1, "mod")
    p = store.create_project(
        guild_id=guild_id,
        channel_id=channel_id,
        title="Watched while the bot is busy",
        created_by=1,
        slot_plan=[Slot(i, i * 4.0, 4.0) for i in range(15)],
        state="open",
    )
    slots = []
    for i in range(15):
        job = store.add_job(
            project_id=p.id,
            member_id=1,
            prompt=f"slot {i}",
            channel_id=channel_id,
            duration=1.0,
            aspect="16:9",
            seed=i,
            slot=i,
        )
        store.claim_job(job.id, "local")
        c = store.complete_job(
            job.id,
            media_key=clip_key,
            duration=1.0,
            width=160,
            height=90,
            fps=12,
            has_audio=False,
            size_bytes=clip.stat().st_size,
        )
        store.mark_clip_posted(c.id, channel_id=channel_id, message_id=10**12 + c.id)
        slots.append(
            {
                "index": i,
                "start": i * 4.0,
                "duration": 4.0,
                "clip_id": c.id,
                "author": "mod",
                "prompt": f"slot {i}",
                "backend": "local",
                "model": "",
                "votes": {"up": 0, "down": 0, "score": 0},
                "reused": False,
            }
        )
    cut = store.save_cut(
        project_id=p.id,
        slots=slots,
        master_key=master_key,
        preview_key=master_key,
        manifest_key=None,
        created_by=1,
    )
    store.approve_cut(cut.id, by=1)
    token = store.project_web_token(p.id)
    store.close()
    assert token
    return token


# ---------------------------------------------------------------------- the viewers
async def viewer(
    http, base: str, key: str, size: int, bytes_per_s: float, stop: asyncio.Event, out: dict
) -> None:
    import aiohttp

    rng = random.Random()
    offset = 0
    next_page = time.monotonic()
    while not stop.is_set():
        try:
            now = time.monotonic()
            if now >= next_page:
                t0 = time.monotonic()
                async with http.get(base) as r:
                    await r.content.readany()
                    out["page"].append(time.monotonic() - t0)
                    await r.read()
                next_page = now + rng.uniform(1, 3)
            if rng.random() < 0.03:
                offset = rng.randrange(0, size - CHUNK)  # a seek
            end = min(size, offset + CHUNK) - 1
            t0 = time.monotonic()
            async with http.get(
                f"{base}media/{key}", headers={"Range": f"bytes={offset}-{end}"}
            ) as r:
                first = await r.content.readany()
                out["range"].append(time.monotonic() - t0)
                got = len(first) + len(await r.read())
                if r.status != 206:
                    out["errors"] += 1
            out["bytes"] += got
            offset = 0 if end + 1 >= size else end + 1
            if bytes_per_s:
                await asyncio.sleep(got / bytes_per_s)
        except (aiohttp.ClientError, OSError):
            out["errors"] += 1
            await asyncio.sleep(0.1)


async def run_viewers(base: str, key: str, size: int, n: int, bytes_per_s: float) -> None:
    """The viewers' process: watch until stdin closes, then print what was measured.
    Niced: real viewers are elsewhere, so here they take only the CPU the bot leaves."""
    import aiohttp

    os.nice(10)

    stop = asyncio.Event()
    out = {"page": [], "range": [], "bytes": 0, "errors": 0}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        tasks = [
            asyncio.create_task(viewer(http, base, key, size, bytes_per_s, stop, out))
            for _ in range(n)
        ]
        while len(out["page"]) < n:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        out.update(page=[], range=[], bytes=0, errors=0)  # measure the burst window only
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # the driver closes stdin: stop
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started

    def pct(values: list[float], p: float) -> float | None:
        return percentile(values, p) if values else None

    print(
        json.dumps(
            {
                "page_p50": pct(out["page"], 50),
                "page_p99": pct(out["page"], 99),
                "pages": len(out["page"]),
                "range_p50": pct(out["range"], 50),
                "range_p99": pct(out["range"], 99),
                "ranges": len(out["range"]),
                "mbit_s": out["bytes"] * 8 / elapsed / 1e6,
                "errors": out["errors"],
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------- the driver
def ms(seconds: float | None) -> float | str:
    return "—" if seconds is None else round(seconds * 1000, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def burst(emu: DiscordEmulator, members, channel: int, n: int) -> list[float]:
    # the emulator plays Discord: its collector's full passes (70-180 ms with this
    # process's heap) would be counted as the bot's latency, so it does not collect while
    # a burst is timed (as timeit does)
    gc.collect()
    gc.disable()
    try:
        return await _burst(emu, members, channel, n)
    finally:
        gc.enable()


async def _burst(emu: DiscordEmulator, members, channel: int, n: int) -> list[float]:
    its = await asyncio.gather(
        *(
            emu.invoke_slash(
                members[i % len(members)].id, channel, "prompt", {"text": f"burst prompt {i}"}
            )
            for i in range(n)
        )
    )
    lat = []
    for it in its:
        try:
            lat.append(await it.wait_acked(timeout=30))
        except Exception:
            lat.append(float("inf"))
    return lat


async def run(args: argparse.Namespace, tmp: Path) -> list[dict[str, object]]:
    clip = tiny_clip(tmp / "clip.mp4")
    master = make_master(tmp / "master.mp4", args.seconds)
    size = master.stat().st_size
    bitrate = size / args.seconds  # bytes per second of video
    emu = DiscordEmulator()
    await emu.start()
    emu.interaction_timeout = 30.0
    channel = emu.channels["crowdcut"]
    members = [emu.add_member(f"member{i}") for i in range(args.members)]
    emu.add_member("mod", roles=["Moderator"])
    data = tmp / "data"
    data.mkdir()
    seed(data, emu.guild_id, channel, [m.id for m in members], args.clips, clip)
    # the approved project is not the channel's current one: the burst goes to the open one
    token = seed_approved(data, emu.guild_id, channel, master, clip)
    master_key = MediaStore(data / "media").put_file(master, "mp4")
    port = free_port()
    env = dict(
        os.environ,
        DISCORD_API_BASE=emu.api_base,
        DISCORD_GATEWAY_URL=emu.gateway_url,
        DISCORD_TOKEN=emu.bot_token,
        DATA_DIR=str(data),
        PREMODERATION="true",
        MAX_JOBS_PER_MEMBER="1000",
        LOG_LEVEL="WARNING",
        STATUS_EDIT_SECONDS="3",
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(port),
    )
    cli = [sys.executable, "-m", "bot", "--env-file", str(tmp / "none.env")]
    log = open(tmp / "bot.log", "wb")
    sync = await asyncio.create_subprocess_exec(
        *cli, "sync-commands", "--guild", str(emu.guild_id), env=env, stdout=log, stderr=log
    )
    await sync.wait()
    bot = await asyncio.create_subprocess_exec(*cli, "run", env=env, stdout=log, stderr=log)
    rss = PeakPSS(bot.pid)
    rows: list[dict[str, object]] = []
    base = f"http://127.0.0.1:{port}/p/{token}/"
    try:
        await emu.wait_for_bot(timeout=60)
        db = data / "crowdcut.db"
        from bench.discord_load import wait_db

        await wait_db(
            db,
            "select count(*) from clips where message_id is not null",
            lambda r: r[0][0] >= args.clips + 15,
            timeout=600,
        )
        await asyncio.sleep(1.0)
        # a first, smaller burst warms the bot up (its first commands cost more), so the
        # baseline is not the one that pays for it
        await burst(emu, members, channel, 50)
        await wait_db(
            db, "select count(*) from jobs where state = 'queued'", lambda r: r[0][0] >= 50, 60
        )
        cases = [("nobody watching", 0, 0.0)]
        cases.append((f"{args.viewers} viewers, paced", args.viewers, 2 * bitrate))
        if not args.skip_stress:
            cases.append((f"{args.viewers} viewers, unpaced", args.viewers, 0.0))
        for label, n, pace in cases:
            viewers = None
            if n:
                viewers = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--as-viewers",
                    base,
                    master_key,
                    str(size),
                    str(n),
                    str(pace),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                assert viewers.stdout is not None and viewers.stdin is not None
                line = await asyncio.wait_for(viewers.stdout.readline(), 120)
                assert line.strip() == b"ready", line
            t0 = time.monotonic()
            lat = await burst(emu, members, channel, args.prompts)
            window = time.monotonic() - t0
            row: dict[str, object] = {
                "case": label,
                "acked": sum(1 for x in lat if x < 30),
                "ack p50 ms": round(percentile(lat, 50) * 1000, 1),
                "ack p99 ms": round(percentile(lat, 99) * 1000, 1),
                "ack max ms": round(max(lat) * 1000, 1),
                "burst s": round(window, 1),
            }
            if viewers is not None:
                assert viewers.stdin is not None and viewers.stdout is not None
                # keep watching a while after the burst: page loads sampled around it
                await asyncio.sleep(max(0.0, args.watch - (time.monotonic() - t0)))
                viewers.stdin.close()
                stats = json.loads(await asyncio.wait_for(viewers.stdout.readline(), 120))
                await viewers.wait()
                row.update(
                    {
                        "page loads": stats["pages"],
                        "page TTFB p50 ms": ms(stats["page_p50"]),
                        "page TTFB p99 ms": ms(stats["page_p99"]),
                        "ranges": stats["ranges"],
                        "range TTFB p99 ms": ms(stats["range_p99"]),
                        "served Mbit/s": round(stats["mbit_s"], 1),
                        "errors": stats["errors"],
                    }
                )
            print(row, flush=True)
            rows.append(row)
            # the next case starts once the bot has queued every prompt of this one and
            # posted what they caused (cards, status messages): each case starts from a
            # bot that is done with the last one, as in bench/discord_load.py
            want = 50 + len(rows) * args.prompts
            await wait_db(
                db,
                "select count(*) from jobs where state = 'queued'",
                lambda r, want=want: r[0][0] >= want,
                timeout=120,
            )
            await wait_db(
                db,
                "select count(*) from outbox where state in ('pending', 'running')",
                lambda r: r[0][0] == 0,
                timeout=300,
            )
            await asyncio.sleep(1.0)
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(bot.wait(), 20)
        except TimeoutError:
            bot.kill()
        peak = rss.stop()
        for r in rows:
            r["bot peak PSS MiB"] = round(peak / 2**20, 1)
        await emu.close()
    return rows


async def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-viewers":
        base, key, size, n, pace = sys.argv[2:7]
        await run_viewers(base, key, int(size), int(n), float(pace))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the master")
    ap.add_argument("--skip-stress", action="store_true", help="no unpaced case")
    ap.add_argument(
        "--watch", type=float, default=15.0, help="seconds the viewers watch from the burst on"
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="crowdcut-webload-") as t:
        rows = await run(args, Path(t))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print()
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "—")) for k in keys) + " |")


if __name__ == "__main__":
    asyncio.run(main())
