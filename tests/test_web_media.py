"""The pages serve media from the content-addressed store: ranges, validators, caching,
and nothing but a project's own media files."""

from __future__ import annotations

import os

import pytest

from bot.web.media import ByteRange, Unsatisfiable, parse_range
from tests.web_fixtures import build_site, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def approved_site(tmp_path):
    async for site in serve(build_site(tmp_path, approved=True)):
        yield site


def test_ranges_are_parsed_as_rfc_9110_says():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 9)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-500", 100) == ByteRange(0, 99)
    assert parse_range("bytes=50-5000", 100) == ByteRange(50, 99)
    assert parse_range("bytes=9-0", 100) is None  # malformed: ignored
    assert parse_range("bytes=0-1,5-6", 100) is None  # several: the whole file
    assert parse_range("items=0-1", 100) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=100-", 100)


async def test_the_master_is_served_whole_with_a_strong_etag_and_immutable_caching(
    approved_site,
):
    site = approved_site
    key = site.keys["alice"]  # the master
    status, headers, body = await site.get(f"p/{site.token}/media/{key}")
    assert status == 200
    assert body == site.media.read_bytes(key)
    assert headers["Content-Type"] == "video/mp4"
    assert headers["ETag"] == f'"{key.split(".")[0]}"'  # the content's own hash: strong
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Accept-Ranges"] == "bytes"
    assert int(headers["Content-Length"]) == len(body)


async def test_a_range_request_gets_206_with_its_content_range(approved_site):
    site = approved_site
    key = site.keys["alice"]
    whole = site.media.read_bytes(key)
    status, headers, body = await site.get(
        f"p/{site.token}/media/{key}", headers={"Range": "bytes=100-199"}
    )
    assert status == 206
    assert body == whole[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert headers["Content-Length"] == "100"
    status, headers, body = await site.get(
        f"p/{site.token}/media/{key}", headers={"Range": "bytes=-50"}
    )
    assert status == 206 and body == whole[-50:]


async def test_a_range_past_the_end_is_416_and_says_the_size(approved_site):
    site = approved_site
    key = site.keys["alice"]
    size = len(site.media.read_bytes(key))
    status, headers, _ = await site.get(
        f"p/{site.token}/media/{key}", headers={"Range": f"bytes={size}-"}
    )
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{size}"


async def test_a_cached_copy_is_confirmed_with_304_and_a_stale_if_range_gets_the_whole_file(
    approved_site,
):
    site = approved_site
    key = site.keys["alice"]
    etag = f'"{key.split(".")[0]}"'
    status, _, body = await site.get(f"p/{site.token}/media/{key}", headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    status, _, body = await site.get(
        f"p/{site.token}/media/{key}", headers={"Range": "bytes=0-9", "If-Range": '"old"'}
    )
    assert status == 200 and len(body) == len(site.media.read_bytes(key))
    status, _, body = await site.get(
        f"p/{site.token}/media/{key}", headers={"Range": "bytes=0-9", "If-Range": etag}
    )
    assert status == 206 and len(body) == 10


async def test_head_answers_the_headers_without_the_body(approved_site):
    site = approved_site
    assert site.http is not None
    key = site.keys["alice"]
    async with site.http.head(f"{site.page}media/{key}") as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == len(site.media.read_bytes(key))
        assert await r.read() == b""


async def test_the_download_link_names_the_file(approved_site):
    site = approved_site
    _, headers, _ = await site.get(f"p/{site.token}/media/{site.keys['alice']}?download=1")
    assert headers["Content-Disposition"] == (
        f'attachment; filename="crowdcut-{site.project.id}.mp4"'
    )


@pytest.mark.parametrize(
    "path",
    [
        "/p/{token}/media/../../crowdcut.db",
        "/p/{token}/media/%2e%2e/%2e%2e/crowdcut.db",
        "/p/{token}/media/..%2F..%2Fcrowdcut.db",
        "/p/{token}/media/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/p/{token}/media/%2Fetc%2Fpasswd",
        "/p/{token}/media//etc/passwd",
        "/p/{token}/media/{shard}%2F{key}",
        "/p/{token}/media/{shard}/{key}",
        "/p/{token}/media/{upper}",
        "/p/{token}/media/{digest}",
        "/p/{token}/media/{digest}.db",
        "/p/{token}/media/{key}%00.png",
        "/p/{token}/../../crowdcut.db",
        "/p/{token}/%2e%2e/%2e%2e/crowdcut.db",
        "/static/../bot/settings.py",
        "/static/..%2F..%2Fbot%2Fsettings.py",
        "/static/%2e%2e/web/app.py",
        "/static/app.py",
        "/etc/passwd",
        "//etc/passwd",
        "/crowdcut.db",
        "/data/crowdcut.db",
        "/media/{shard}/{key}",
        "/{shard}/{key}",
    ],
)
async def test_paths_that_try_to_reach_other_files_are_refused(approved_site, path):
    site = approved_site
    key = site.keys["alice"]
    digest = key.split(".")[0]
    target = path.format(token=site.token, key=key, shard=key[:2], digest=digest, upper=key.upper())
    status, body = await site.raw(target)
    assert status in (400, 404), (target, status)
    assert b"SQLite format" not in body and b"root:" not in body and b"import" not in body


async def test_a_symlink_planted_in_the_media_store_is_not_followed(approved_site, tmp_path):
    site = approved_site
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    # a key the project uses, its file swapped for a symlink to elsewhere
    key = site.keys["bob"]
    path = site.media.path(key)
    path.unlink()
    os.symlink(secret, path)
    status, body = await site.raw(f"/p/{site.token}/media/{key}")
    assert status == 404 and b"not yours" not in body
    # a shard folder that is a symlink is refused as well
    key = site.keys["hostile"]
    shard = site.media.path(key).parent
    elsewhere = tmp_path / "elsewhere"
    shard.rename(elsewhere)
    os.symlink(elsewhere, shard)
    status, _ = await site.raw(f"/p/{site.token}/media/{key}")
    assert status == 404


async def test_media_outside_the_project_is_not_served(approved_site):
    site = approved_site
    # in the store, but no clip or cut of this project uses it: the song, a reference
    # image, another project's file
    other = site.media.put_bytes(b"\x89PNG another project's image", "png")
    status, _, _ = await site.get(f"p/{site.token}/media/{other}")
    assert status == 404


async def test_a_wrong_token_answers_404_for_the_page_and_its_media(approved_site):
    site = approved_site
    wrong = "0" * 32
    for path in (f"p/{wrong}/", f"p/{wrong}/media/{site.keys['alice']}", f"p/{wrong}/clip/1"):
        status, _, _ = await site.get(path)
        assert status == 404


async def test_only_get_and_head_are_answered(approved_site):
    site = approved_site
    assert site.http is not None
    async with site.http.post(site.page) as r:
        assert r.status == 405
    async with site.http.delete(f"{site.page}media/{site.keys['alice']}") as r:
        assert r.status == 405
