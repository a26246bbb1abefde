"""The simulated community of ``crowdcut demo``: members, their prompts, images and votes.

Pure data and a seeded random source, shared by the direct demo and the one that runs
through the Discord emulator, so both tell the same story.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

NAMES = [
    "aurora",
    "basslines",
    "cinder",
    "dune_rider",
    "echo",
    "fable",
    "glitchkid",
    "halo",
    "ivy",
    "juno",
    "kestrel",
    "lumen",
]

PROMPTS = [
    "a neon city at night seen from a slow drone, rain on the lens",
    "paper boats sailing through a sea of clouds at sunrise",
    "a choir of glowing jellyfish pulsing to a kick drum",
    "an endless hallway of doors opening one by one",
    "a desert highway where the road markings dance",
    "close-up of an old vinyl record turning into a galaxy",
    "a forest of crystal trees ringing in the wind",
    "a skateboarder riding a ribbon of light across the sky",
    "origami birds unfolding into fireworks",
    "a lighthouse beam sweeping across a sea of synthesizers",
    "rain falling upward in a quiet japanese alley",
    "a giant cassette tape unspooling into rivers",
    "tiny astronauts climbing a mountain of sugar",
    "sunflowers turning their heads to follow the beat",
]


@dataclass
class SimMember:
    name: str
    is_bot: bool = False
    prompts: list[tuple[str, int | None, bool]] = field(default_factory=list)  # text, slot, image


def reference_image(seed: int, size: tuple[int, int] = (480, 270)) -> bytes:
    """A made-on-the-fly reference picture: bold shapes in a seeded palette (PNG bytes)."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        r = rng.randrange(15, 90)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            d.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def community(n_members: int, n_slots: int, seed: int = 7) -> list[SimMember]:
    """``n_members`` members, their prompts spread over the slots (some unslotted, some
    with a reference image), enough for every slot to have a candidate."""
    rng = random.Random(seed)
    members = [
        SimMember(NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i)))
        for i in range(n_members)
    ]
    prompts = PROMPTS[:]
    rng.shuffle(prompts)
    k = 0
    total = max(n_slots + 2, n_members)
    for i in range(total):
        m = members[i % n_members]
        slot = i if i < n_slots else None
        text = prompts[k % len(prompts)] + ("" if k < len(prompts) else f", take {k}")
        k += 1
        m.prompts.append((text, slot, i % 3 == 1))
    return members


def votes(
    clip_ids: list[int], authors: dict[int, int], voter_ids: list[int], seed: int = 11
) -> list[tuple[int, int, str]]:
    """(voter, clip, emoji) triples: most members vote on most clips, with taste."""
    rng = random.Random(seed)
    taste = {c: rng.random() for c in clip_ids}
    out = []
    for v in voter_ids:
        for c in clip_ids:
            if rng.random() < 0.7:
                out.append((v, c, "👍" if rng.random() < taste[c] else "👎"))
    # a self-vote, which does not count
    if clip_ids:
        c = clip_ids[0]
        out.append((authors[c], c, "👍"))
    return out
