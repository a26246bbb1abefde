"""The pages' HTML: plain server-rendered markup, one stylesheet, one small script.

Every value goes through ``bot.web.html.h`` (escaped); links are relative (``root`` is the
way back to the site's root from the page), so the pages work behind a reverse proxy that
mounts them under a path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from bot.web.html import Safe, h, join, when
from bot.web.pages import (
    CreditLine,
    ProjectPage,
    SlotStanding,
    clock,
    cuts_using,
    discord_url,
    state_text,
)
from storage.pages import PageClip, PublicProject

NOTHING = Safe("")


def _asset(name: str) -> bytes:
    return resources.files("bot.web").joinpath("static", name).read_bytes()


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:16]


ASSETS = {
    "style.css": Asset(_asset("style.css"), "text/css; charset=utf-8"),
    "live.js": Asset(_asset("live.js"), "text/javascript; charset=utf-8"),
    "icon.svg": Asset(_asset("icon.svg"), "image/svg+xml"),
}


@dataclass(frozen=True)
class Share:
    """Absolute addresses for the Open Graph and Twitter card tags."""

    url: str
    video: str | None = None
    image: str | None = None
    embed: str | None = None
    width: int | None = None
    height: int | None = None


def document(
    title: str,
    body: Safe,
    *,
    root: str,
    head: Safe = NOTHING,
    script: bool = False,
    noindex: bool = True,
) -> Safe:
    css = ASSETS["style.css"]
    js = ASSETS["live.js"]
    return h(
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>{title}</title>\n{robots}"
        '<link rel="stylesheet" href="{root}static/style.css?v={css}">\n'
        '<link rel="icon" href="{root}static/icon.svg?v={icon}" type="image/svg+xml">\n'
        "{head}{script}"
        "</head>\n<body>\n<main>\n{body}</main>\n"
        "<footer>Made together in Discord with crowdcut. "
        '<a href="{root}">More projects</a></footer>\n</body>\n</html>\n',
        title=title,
        robots=when(noindex, Safe('<meta name="robots" content="noindex">\n')),
        root=root,
        css=css.version,
        icon=ASSETS["icon.svg"].version,
        head=head,
        script=when(
            script,
            h(
                '<script src="{root}static/live.js?v={v}" defer></script>\n',
                root=root,
                v=js.version,
            ),
        ),
        body=body,
    )


def share_tags(title: str, description: str, share: Share) -> Safe:
    tags = [
        h('<meta property="og:type" content="{t}">', t="video.other" if share.video else "website"),
        h('<meta property="og:title" content="{v}">', v=title),
        h('<meta property="og:description" content="{v}">', v=description),
        h('<meta property="og:url" content="{v}">', v=share.url),
        h('<meta property="og:site_name" content="crowdcut">'),
        h('<meta name="twitter:title" content="{v}">', v=title),
        h('<meta name="twitter:description" content="{v}">', v=description),
    ]
    if share.image:
        tags += [
            h('<meta property="og:image" content="{v}">', v=share.image),
            h('<meta name="twitter:image" content="{v}">', v=share.image),
        ]
    if share.video:
        tags += [
            h('<meta property="og:video" content="{v}">', v=share.video),
            h('<meta property="og:video:type" content="video/mp4">'),
        ]
        if share.video.startswith("https://"):
            tags.append(h('<meta property="og:video:secure_url" content="{v}">', v=share.video))
        if share.width and share.height:
            tags += [
                h('<meta property="og:video:width" content="{v}">', v=share.width),
                h('<meta property="og:video:height" content="{v}">', v=share.height),
            ]
        tags += [
            h('<meta name="twitter:card" content="player">'),
            h('<meta name="twitter:player" content="{v}">', v=share.embed or share.url),
            h('<meta name="twitter:player:stream" content="{v}">', v=share.video),
            h('<meta name="twitter:player:stream:content_type" content="video/mp4">'),
        ]
        if share.width and share.height:
            tags += [
                h('<meta name="twitter:player:width" content="{v}">', v=share.width),
                h('<meta name="twitter:player:height" content="{v}">', v=share.height),
            ]
    else:
        card = "summary_large_image" if share.image else "summary"
        tags.append(h('<meta name="twitter:card" content="{v}">', v=card))
    return join(tags, "\n") + Safe("\n")


def _time(start: float, duration: float) -> str:
    return f"{clock(start)}–{clock(start + duration)}"


def _vote_text(up: int, down: int) -> str:
    return f"{up} up · {down} down"


def _score(score: int) -> str:
    return f"+{score}" if score > 0 else str(score)


def credit_line(page: ProjectPage, line: CreditLine) -> Safe:
    clip = line.clip
    made_with = " · ".join(x for x in (line.backend, line.model) if x)
    parts = [
        h('<span class="time">{t}</span>', t=_time(line.start, line.duration)),
        h('<b class="author">{a}</b>', a=line.author),
    ]
    if line.prompt:
        parts.append(h(': <q class="prompt">{p}</q>', p=line.prompt))
    meta = [h("slot {n}", n=line.index + 1)]
    if made_with:
        meta.append(h("{m}", m=made_with))
    if line.parent is not None:
        meta.append(
            h(
                '{how} <a href="clip/{id}">clip #{id}</a> by {who}',
                how="chained from" if line.lineage == "chain" else "continues",
                id=line.parent.id,
                who=line.parent.author,
            )
        )
    if line.reused:
        meta.append(h("reused"))
    meta.append(h("{v}", v=_vote_text(line.up, line.down)))
    links = []
    if clip is not None:
        links.append(h('<a href="clip/{id}">clip #{id}</a>', id=clip.id))
        url = discord_url(page.project.guild_id, clip)
        if url:
            links.append(h('<a href="{u}" rel="noreferrer">in Discord</a>', u=url))
    return h(
        '<li data-slot="{i}">{parts}<br><span class="meta">{meta}{links}</span></li>',
        i=line.index,
        parts=join(parts),
        meta=join(meta, " · "),
        links=join([Safe(" · "), join(links, " · ")]) if links else Safe(""),
    )


def candidate(clip: PageClip) -> Safe:
    return h(
        '<li data-clip="{id}"><video controls preload="metadata" playsinline '
        'src="media/{key}"></video><div><span class="score">{score}</span> '
        '<span class="meta votes">{votes}</span>'
        '<p><b class="author">{author}</b>: <q class="prompt">{prompt}</q></p>'
        '<a href="clip/{id}">clip #{id}</a></div></li>',
        id=clip.id,
        key=clip.media_key,
        score=_score(clip.score),
        votes=_vote_text(clip.up, clip.down),
        author=clip.author,
        prompt=clip.prompt,
    )


def slot_standing(s: SlotStanding) -> Safe:
    return h(
        '<div class="slot" data-slot="{i}"><h3>Slot {n} · {t}</h3><ol class="candidates">'
        '{clips}<li class="empty"{hidden}>No clips yet.</li></ol></div>',
        i=s.index,
        n=s.index + 1,
        t=_time(s.start, s.duration),
        clips=join(candidate(c) for c in s.clips),
        hidden=Safe(" hidden") if s.clips else Safe(""),
    )


def project_page(page: ProjectPage, share: Share, *, storyboard: str | None) -> Safe:
    p = page.project
    body = [
        h(
            '<header><h1>{title}</h1>{song}<p class="state" id="state">{state}</p></header>\n',
            title=p.title,
            song=when(
                p.song_credit or p.song_name,
                h('<p class="dim song">Song: {s}</p>', s=p.song_credit or p.song_name),
            ),
            state=state_text(p, approved_by=page.approved_by),
        )
    ]
    if page.master_key:
        body.append(
            h(
                '<section class="watch" id="watch"><video id="master" controls preload="metadata" '
                'playsinline src="media/{key}"{poster}></video>'
                '<p><a href="media/{key}?download=1" download>Download the video</a></p>'
                "</section>\n",
                key=page.master_key,
                poster=h(' poster="{s}"', s=storyboard) if storyboard else Safe(""),
            )
        )
    if storyboard:
        body.append(
            h(
                '<section id="storyboard"><h2>Storyboard</h2><img src="{s}" '
                'alt="One frame of every slot of the video" loading="lazy"></section>\n',
                s=storyboard,
            )
        )
    if page.credits:
        body.append(
            h(
                '<section id="credits"><h2>Credits</h2><ol class="credits">{lines}</ol>'
                "</section>\n",
                lines=join(credit_line(page, line) for line in page.credits),
            )
        )
    if page.standings or page.unslotted:
        heading = "Standings" if page.live else "Final standings"
        hint = "Updates live while voting is open." if page.live else ""
        body.append(
            h(
                '<section id="standings"{live}><h2>{heading}</h2>'
                '<p class="hint">{hint}</p>{slots}'
                '<div class="unslotted"{unslotted_hidden}><h3>For any slot</h3>'
                '<ol class="candidates">{unslotted}<li class="empty" hidden></li></ol></div>'
                "</section>\n",
                live=h(' data-events="events" data-media="media/" data-clips="clip/"')
                if page.live
                else Safe(""),
                heading=heading,
                hint=hint,
                slots=join(slot_standing(s) for s in page.standings),
                unslotted_hidden=Safe("") if page.unslotted else Safe(" hidden"),
                unslotted=join(candidate(c) for c in page.unslotted),
            )
        )
    description = _description(page)
    return document(
        p.title,
        join(body),
        root="../../",
        head=share_tags(p.title, description, share),
        script=page.live,
    )


def _description(page: ProjectPage) -> str:
    authors = {line.author for line in page.credits if line.author != "anonymous"}
    if page.credits:
        return (
            f"A music video made together: {len(page.credits)} slots, "
            f"clips by {len(authors) or 'anonymous'} members."
        )
    n = len(page.clips)
    return f"A music video in the making: {n} clip{'s' if n != 1 else ''} so far."


def clip_page(page: ProjectPage, clip: PageClip, children: list[PageClip]) -> Safe:
    parent = page.visible_clip(clip.parent_clip_id)
    used = cuts_using(page, clip.id)
    rows = [
        h('<dt>Author</dt><dd class="author">{a}</dd>', a=clip.author),
        h('<dt>Prompt</dt><dd><q class="prompt">{p}</q></dd>', p=clip.prompt),
        h(
            "<dt>Score</dt><dd>{s} ({v})</dd>",
            s=_score(clip.score),
            v=_vote_text(clip.up, clip.down),
        ),
        h("<dt>Slot</dt><dd>{s}</dd>", s="any" if clip.slot is None else clip.slot + 1),
    ]
    made_with = " · ".join(x for x in (clip.backend, clip.model) if x)
    if made_with:
        rows.append(h("<dt>Made with</dt><dd>{m}</dd>", m=made_with))
    if parent is not None:
        rows.append(
            h(
                '<dt>Continues</dt><dd><a href="{id}">clip #{id}</a> by {who}</dd>',
                id=parent.id,
                who=parent.author,
            )
        )
    if children:
        rows.append(
            h(
                "<dt>Continued by</dt><dd>{links}</dd>",
                links=join((h('<a href="{id}">clip #{id}</a>', id=c.id) for c in children), ", "),
            )
        )
    if used:
        rows.append(
            h(
                "<dt>Used in</dt><dd>{cuts}</dd>",
                cuts=join(
                    (
                        h(
                            "{what} #{id} (slot {slots})",
                            what="the approved cut" if cut.state == "approved" else "preview cut",
                            id=cut.id,
                            slots=", ".join(str(s + 1) for s in slots),
                        )
                        for cut, slots in used
                    ),
                    "; ",
                ),
            )
        )
    url = discord_url(page.project.guild_id, clip)
    if url:
        rows.append(
            h('<dt>Discord</dt><dd><a href="{u}" rel="noreferrer">the post</a></dd>', u=url)
        )
    body = h(
        '<header><p><a href="../">← {title}</a></p><h1>Clip #{id}</h1></header>'
        '<video id="clip" controls preload="metadata" playsinline src="../media/{key}"></video>'
        "<dl>{rows}</dl>",
        title=page.project.title,
        id=clip.id,
        key=clip.media_key,
        rows=join(rows),
    )
    return document(f"Clip #{clip.id} · {page.project.title}", body, root="../../../")


def embed_page(page: ProjectPage, video_key: str) -> Safe:
    body = h(
        '<video controls playsinline preload="metadata" src="media/{key}"></video>',
        key=video_key,
    )
    return document(page.project.title, body, root="../../")


def index_page(projects: list[PublicProject]) -> Safe:
    items = join(
        h(
            '<li><a href="p/{token}/">{title}</a> <span class="meta">{state}</span></li>',
            token=p.web_token,
            title=p.title,
            state=p.state,
        )
        for p in projects
    )
    body = h(
        '<header><h1>crowdcut</h1><p class="dim">Music videos made together in Discord.</p>'
        "</header><h2>Projects</h2><ol>{items}</ol>{none}",
        items=items,
        none=when(not projects, h('<p class="dim">No server lists its projects here yet.</p>')),
    )
    return document("crowdcut", body, root="", noindex=False)


def not_found_page() -> Safe:
    return document(
        "Not found", h("<h1>Not found</h1><p>There is nothing at this address.</p>"), root="/"
    )
