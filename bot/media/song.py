"""A synthesized, copyright-free song for the demo, the benchmark and tests.

The whole song is one ffmpeg ``aevalsrc`` expression: a kick drum on every beat (louder on
the first beat of each 4/4 bar, the downbeat, by ``accent``), a hi-hat on the off-beats, a
bass line following a four-bar minor progression and a plucked pentatonic melody of
sixteen eighth notes chosen from ``seed``. It is deterministic for a given
``(seconds, bpm, seed, accent)`` and ends with a two-second fade.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from bot.media.ffmpeg import part_path, publish, run_ffmpeg

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
#: semitone offsets of the bass roots, bar by bar: i - VI - III - VII in a minor key
_PROGRESSION = (0, 8, 3, 10)
#: minor pentatonic over two octaves, the melody's palette
_PENTATONIC = (0, 3, 5, 7, 10, 12, 15)


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _table(index: str, values: list[str]) -> str:
    """An expression picking ``values[index]`` (nested ``if``: aevalsrc has no arrays)."""
    expr = "0"
    for i in reversed(range(len(values))):
        expr = f"if(eq({index},{i}),{values[i]},{expr})"
    return expr


def song_expression(*, bpm: int = 120, seed: int = 0, accent: float = 0.5) -> str:
    """Return the ``aevalsrc`` expression of the song (mono, about -18 dB RMS).

    ``accent`` (0 to 1) is how much quieter the kick is off the downbeat: 0 plays every
    beat alike, 0.5 plays beats 2 to 4 at half the downbeat's level."""
    if not 40 <= bpm <= 240:
        raise ValueError(f"bpm must be between 40 and 240, not {bpm}")
    if not 0 <= accent <= 1:
        raise ValueError(f"accent must be between 0 and 1, not {accent}")
    rng = random.Random(seed)
    root = rng.choice((45, 47, 48, 50, 52))  # A2..E3
    melody = [rng.choice(_PENTATONIC) if rng.random() > 0.2 else None for _ in range(16)]
    beat = 60.0 / bpm
    u = f"mod(t,{beat:.6f})"  # time since the beat
    eighth = f"mod(t,{beat / 2:.6f})"  # time since the eighth note
    step = f"mod(floor(t/{beat / 2:.6f}),16)"  # which of the 16 melody notes
    bar = f"mod(floor(t/{4 * beat:.6f}),4)"  # which bar of the progression
    mel_hz = _table(step, [f"{_hz(root + 24 + n):.3f}" if n is not None else "0" for n in melody])
    bass_hz = _table(bar, [f"{_hz(root + p):.3f}" for p in _PROGRESSION])
    # kick: a sine swept down from ~150 Hz to 50 Hz, decaying within the beat; full on the
    # downbeat (beat 0 of each bar), scaled by 1 - accent on the other three
    level = f"if(lt(mod(t,{4 * beat:.6f}),{beat:.6f}),1,{1 - accent:.3f})"
    kick = f"0.9*{level}*sin(2*PI*(50*{u}+4*(1-exp(-25*{u}))))*exp(-7*{u})"
    hat = f"0.12*(2*random(0)-1)*exp(-60*mod(t+{beat / 2:.6f},{beat:.6f}))"
    # st(1,...) keeps the melody frequency so the table is evaluated once per sample
    lead = f"0.22*(sin(2*PI*st(1,{mel_hz})*t)+0.3*sin(4*PI*ld(1)*t))*exp(-5*{eighth})"
    bass = f"0.25*sin(2*PI*{bass_hz}*t)*(1-exp(-40*{u}))"
    return f"({kick}+{hat}+{lead}+{bass})*0.6"


async def synthesize_song(
    dest: Path,
    seconds: float,
    *,
    bpm: int = 120,
    seed: int = 0,
    accent: float = 0.5,
    binary: str | None = None,
) -> Path:
    """Write a ``seconds``-long synthesized song to ``dest`` as stereo AAC in ``.m4a``.

    Written atomically (temporary name, then rename). Returns ``dest``.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    dest = Path(dest)
    fade = min(2.0, seconds / 4)
    tmp = part_path(dest, ".m4a")
    expr = song_expression(bpm=bpm, seed=seed, accent=accent)
    args = [
        "-f", "lavfi",
        "-i", f"aevalsrc='{expr}':s={SAMPLE_RATE}:d={seconds}",
        "-af", f"afade=t=out:st={seconds - fade:.3f}:d={fade:.3f}",
        "-ac", "2", "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart",
        "-f", "mp4", str(tmp),
    ]  # fmt: skip
    try:
        await run_ffmpeg(args, binary=binary)
        await publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("synthesized %.1f s song at %d bpm into %s", seconds, bpm, dest)
    return dest


def song_credit_from_tags(path: Path) -> str:
    """The song's credit as its own tags give it ("“Title” by Artist", or the title or the
    artist alone); empty when it has none or cannot be read. Blocking: run it in a
    thread."""
    import av

    try:
        with av.open(str(path)) as container:
            tags = {k.lower(): str(v) for k, v in (container.metadata or {}).items()}
            for stream in container.streams.audio[:1]:
                for k, v in (stream.metadata or {}).items():
                    tags.setdefault(k.lower(), str(v))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return ""
    title = " ".join(tags.get("title", "").split())[:100]
    artist = " ".join((tags.get("artist") or tags.get("album_artist") or "").split())[:100]
    if title and artist:
        return f"“{title}” by {artist}"
    return title or artist
