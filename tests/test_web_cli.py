"""`crowdcut web` serves the pages alone, read-only; `crowdcut demo` says where its page is."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.web_fixtures import build_site

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)


async def test_crowdcut_web_serves_the_pages_read_only_until_ctrl_c(tmp_path):
    site = build_site(tmp_path, approved=True)
    token = site.token
    site.store.close()
    db = site.settings.db_path
    before = db.read_bytes()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--env-file",
        str(tmp_path / "none.env"),
        "web",
        "--data-dir",
        str(site.settings.data_dir),
        "--port",
        "0",
        cwd=ROOT,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert "project pages on http://127.0.0.1:" in line and "read-only" in line, line
        url = line.split(" on ")[1].split(" ")[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}p/{token}/") as r:
                assert r.status == 200 and "Credits" in await r.text()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert db.read_bytes() == before  # nothing written


async def test_crowdcut_web_without_a_database_says_so(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--env-file",
        str(tmp_path / "none.env"),
        "web",
        "--data-dir",
        str(tmp_path / "nothing"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"no database at" in err


async def test_the_demo_prints_its_page_and_how_to_serve_it(tmp_path, capsys):
    from bot.demo import _page

    site = build_site(tmp_path, approved=True)
    token = site.token
    site.store.close()
    await _page(site.settings, serve=False)
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:8080/p/{token}/" in out
    assert "crowdcut demo --serve" in out
