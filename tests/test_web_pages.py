"""The project pages: what they show, to whom, and that members' text is only ever text."""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser

import pytest

from bot.web.links import new_token
from bot.web.pages import state_text
from tests.web_fixtures import HOSTILE, build_site, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def approved_site(tmp_path):
    async for site in serve(build_site(tmp_path, approved=True)):
        yield site


@pytest.fixture
async def open_site(tmp_path):
    async for site in serve(build_site(tmp_path, approved=False)):
        yield site


class Parsed(HTMLParser):
    """Elements, attributes and text of a page."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]

    def meta(self, key: str) -> str | None:
        for a in self.all("meta"):
            if a.get("property") == key or a.get("name") == key:
                return a.get("content")
        return None


async def page_of(site, path: str = "") -> tuple[int, Parsed, str]:
    status, _, body = await site.get(f"p/{site.token}/{path}")
    text = body.decode()
    return status, Parsed(text), text


def assert_inert(page: Parsed, markup: str) -> None:
    """Members' HTML shows as text: no script but the page's own, no event handler, and
    the hostile text among the page's text nodes."""
    scripts = page.all("script")
    assert all((s.get("src") or "").startswith("../") for s in scripts), scripts
    assert all(s.get("src") for s in scripts)  # no inline script at all
    for _, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), attrs
    assert not any(t == "img" and a.get("src") == "x" for t, a in page.tags)
    assert "<script>alert" not in markup


async def test_a_prompt_full_of_html_and_script_shows_as_text(approved_site):
    site = approved_site
    status, page, markup = await page_of(site)
    assert status == 200
    assert_inert(page, markup)
    text = "".join(page.text)
    assert HOSTILE in text  # the prompt, in the credits, exactly as typed
    assert f"Night {HOSTILE}" in text  # the title
    assert "song <b>bold</b>.m4a" in text
    assert page.meta("og:title") == f"Night {HOSTILE}"  # attribute values escaped too
    status, page, markup = await page_of(site, f"clip/{site.clips['hostile'].id}")
    assert status == 200
    assert_inert(page, markup)
    assert HOSTILE in "".join(page.text)


async def test_the_open_page_escapes_standings_and_its_json_is_plain_text(open_site):
    site = open_site
    _, page, markup = await page_of(site)
    assert_inert(page, markup)
    status, headers, body = await site.get(f"p/{site.token}/standings.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert any(c["prompt"] == HOSTILE for s in data["slots"] for c in s["clips"])


async def test_pages_send_headers_that_keep_the_token_and_scripts_in(approved_site):
    site = approved_site
    status, headers, _ = await site.get(f"p/{site.token}/")
    assert status == 200
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Robots-Tag"] == "noindex"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_the_approved_page_has_the_master_the_storyboard_and_credits_for_every_slot(
    approved_site,
):
    site = approved_site
    _, page, _ = await page_of(site)
    videos = page.all("video")
    master = next(v for v in videos if v.get("id") == "master")
    assert master["src"] == f"media/{site.keys['alice']}"
    assert master.get("preload") == "metadata"
    assert any(a.get("href") == f"media/{site.keys['alice']}?download=1" for a in page.all("a"))
    credits = [a for a in page.all("li") if a.get("data-slot") is not None]
    assert [c["data-slot"] for c in credits] == ["0", "1", "2"]
    text = "".join(page.text)
    assert "0:00–0:04" in text and "0:08–0:12" in text
    assert "alice" in text and "bob" in text
    assert "local · stand-in" in text
    assert "Approved by mod_mira." in text
    # each credit links to its clip page and its Discord post
    hrefs = {a.get("href") for a in page.all("a")}
    alice = site.clips["alice"]
    assert f"clip/{alice.id}" in hrefs
    assert f"https://discord.com/channels/77/88/{alice.message_id}" in hrefs
    # the storyboard: drawn for a cut that kept none
    assert any(i.get("src") == "storyboard.png" for i in page.all("img"))
    status, headers, body = await site.get(f"p/{site.token}/storyboard.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG")


async def test_open_graph_and_twitter_tags_point_at_the_preview_and_the_storyboard(
    tmp_path,
):
    built = build_site(tmp_path, approved=True, public_url="https://video.example.org/cc")
    async for site in serve(built):
        _, page, _ = await page_of(site)
        base = f"https://video.example.org/cc/p/{site.token}/"
        assert page.meta("og:url") == base
        assert page.meta("og:video") == f"{base}media/{site.keys['bob']}"  # the preview
        assert page.meta("og:video:secure_url") == page.meta("og:video")
        assert page.meta("og:video:type") == "video/mp4"
        assert page.meta("og:video:width") == "1280" and page.meta("og:video:height") == "720"
        assert page.meta("og:image") == f"{base}storyboard.png"
        assert page.meta("twitter:card") == "player"
        assert page.meta("twitter:player") == f"{base}embed"
        assert page.meta("twitter:player:stream") == page.meta("og:video")
        status, headers, body = await site.get(f"p/{site.token}/embed")
        assert status == 200 and b"<video" in body
        assert "frame-ancestors" not in headers["Content-Security-Policy"]


async def test_a_clip_page_shows_its_prompt_author_parent_children_score_and_cuts(
    approved_site,
):
    site = approved_site
    alice, extended = site.clips["alice"], site.clips["extended"]
    status, page, _ = await page_of(site, f"clip/{alice.id}")
    assert status == 200
    text = "".join(page.text)
    assert "a neon city at night" in text and "alice" in text
    assert "+3 (3 up · 0 down)" in text
    assert "the approved cut #" in text and "(slot 1)" in text
    assert any(a.get("href") == str(extended.id) for a in page.all("a"))  # continued by
    assert any(v.get("src") == f"../media/{alice.media_key}" for v in page.all("video"))
    status, page, _ = await page_of(site, f"clip/{extended.id}")
    text = "".join(page.text)
    assert "Continues" in text and f"clip #{alice.id}" in text
    status, _, _ = await site.get(f"p/{site.token}/clip/99999")
    assert status == 404


async def test_a_forgotten_member_is_anonymous_and_their_deleted_clips_are_gone(approved_site):
    site = approved_site
    store = site.store
    hostile = site.clips["hostile"]  # in the approved cut: stays, anonymous
    keep = store.approved_clip_ids(4)
    assert keep == {hostile.id}
    # bob: one clip in the cut (kept), one not (deleted with its file)
    bob_extended = site.clips["extended"]
    for member in (4, 3):
        summary = store.forget_member(member, keep_clip_ids=store.approved_clip_ids(member))
        for key in summary["orphaned_media"]:
            site.media.delete(key)
    _, page, markup = await page_of(site)
    text = "".join(page.text)
    assert "bob" not in text
    assert text.count("anonymous") >= 2  # slot 2 (bob's) and slot 3 (the hostile name's)
    assert f"clip/{bob_extended.id}" not in markup
    for path in (f"clip/{bob_extended.id}", f"media/{bob_extended.media_key}"):
        status, _, _ = await site.get(f"p/{site.token}/{path}")
        assert status == 404, path
    # the kept clip's page names nobody
    status, page, _ = await page_of(site, f"clip/{site.clips['bob'].id}")
    assert status == 200
    assert "anonymous" in "".join(page.text) and "bob" not in "".join(page.text)
    # the author's name in the cut's record (and manifest) is never shown
    assert "name at render time" not in markup


async def test_a_rotated_link_answers_404_and_the_new_one_works(approved_site):
    site = approved_site
    old = site.token
    site.store.rotate_web_token(site.project.id, new_token())
    assert site.token != old
    for path in ("", f"media/{site.keys['alice']}", f"clip/{site.clips['alice'].id}"):
        status, _, _ = await site.get(f"p/{old}/{path}")
        assert status == 404
    status, _, _ = await site.get(f"p/{site.token}/")
    assert status == 200


async def test_the_index_lists_only_the_projects_of_servers_that_made_theirs_public(
    approved_site,
):
    site = approved_site
    status, _, body = await site.get("")
    assert status == 200 and site.token.encode() not in body
    site.store.set_guild_public(77, True, by=1)
    _, headers, body = await site.get("")
    assert f'href="p/{site.token}/"'.encode() in body
    assert "X-Robots-Tag" not in headers
    site.store.set_guild_public(77, False, by=1)
    _, _, body = await site.get("")
    assert site.token.encode() not in body


async def test_the_project_address_without_its_slash_redirects_to_the_page(approved_site):
    site = approved_site
    assert site.http is not None
    async with site.http.get(f"{site.url}p/{site.token}", allow_redirects=False) as r:
        assert r.status == 301 and r.headers["Location"] == f"{site.token}/"


async def read_events(resp, n: int) -> list[dict]:
    """The next ``n`` data events of a server-sent event stream."""
    out = []
    buf = b""
    while len(out) < n:
        chunk = await resp.content.readany()
        assert chunk, "the stream ended"
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    out.append(json.loads(line[6:]))
    return out


async def test_the_standings_stream_sends_each_change_of_the_votes(open_site):
    site = open_site
    assert site.http is not None
    bob = site.clips["bob"]
    async with site.http.get(f"{site.page}events") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        [first] = await asyncio.wait_for(read_events(resp, 1), 10)
        slot1 = first["slots"][1]["clips"]
        assert [c["id"] for c in slot1] == [bob.id] and slot1[0]["score"] == -1
        # two up votes arrive (as the bot records them from Discord)
        for voter in (1, 4):
            site.store.apply_reaction(bob.id, voter, "👍", added=True, values={"👍": 1, "👎": -1})
        while True:  # each change is one event; wait for the one with both votes
            [event] = await asyncio.wait_for(read_events(resp, 1), 10)
            if event["slots"][1]["clips"][0]["score"] == 1:
                break
        assert event["live"] is True
        # voting closes: a last event says so, and the stream ends
        site.store.set_project_state(site.project.id, "closed", by=1)
        while event["live"]:
            [event] = await asyncio.wait_for(read_events(resp, 1), 10)
        assert event["state"] == "closed"


async def test_standings_rank_each_slot_and_leave_out_deleted_posts(open_site):
    site = open_site
    _, _, body = await site.get(f"p/{site.token}/standings.json")
    data = json.loads(body)
    slot2 = [c["id"] for c in data["slots"][2]["clips"]]
    assert slot2 == [site.clips["hostile"].id, site.clips["extended"].id]  # tie: earlier first
    assert [c["id"] for c in data["unslotted"]] == [site.clips["any"].id]
    site.store.mark_post_deleted(site.clips["hostile"].id)
    _, _, body = await site.get(f"p/{site.token}/standings.json")
    data = json.loads(body)
    assert [c["id"] for c in data["slots"][2]["clips"]] == [site.clips["extended"].id]
    status, _, _ = await site.get(f"p/{site.token}/media/{site.keys['hostile']}")
    assert status == 404


def test_the_state_line_says_when_voting_closes_and_who_approved():
    from storage.models import Project

    p = Project(id=1, guild_id=1, channel_id=1, title="t", state="open", created_at=0)
    p.voting_ends_at = 1000 + 2 * 3600 + 13 * 60
    assert state_text(p, approved_by=None, now=1000) == "Voting is open: it closes in 2 h 13 min."
    p.state = "approved"
    assert state_text(p, approved_by="mod_mira") == "Approved by mod_mira."


async def test_the_credits_show_each_clips_lineage(tmp_path):
    from tests.web_fixtures import approve_cut

    built = build_site(tmp_path, approved=False)
    c = built.clips
    approve_cut(built.store, built.media, built.project, [c["alice"], c["bob"], c["extended"]])
    # a chained clip, as the cut's record names it (chain mode has no /extend job)
    cut = built.store.latest_cut(built.project.id, "approved")
    slots = cut.slots
    slots[1]["parent_clip_id"], slots[1]["lineage"] = c["alice"].id, "chain"
    again = built.store.save_cut(
        project_id=built.project.id,
        slots=slots,
        master_key=cut.master_key,
        preview_key=cut.preview_key,
        manifest_key=cut.manifest_key,
        created_by=1,
    )
    built.store.approve_cut(again.id, by=1)
    async for site in serve(built):
        _, page, _ = await page_of(site)
        lines = {li["data-slot"]: li for li in page.all("li") if li.get("data-slot")}
        assert set(lines) == {"0", "1", "2"}
        text = "".join(page.text)
        assert f"continues clip #{c['alice'].id} by alice" in text  # the /extend, slot 3
        assert f"chained from clip #{c['alice'].id} by alice" in text  # slot 2
