"""Song analysis: duration, loudness, tempo, beat times and bar (downbeat) times.

The beat tracker is librosa's (``librosa.beat.beat_track``: an onset envelope, a tempo
estimate, then dynamic programming over the beat grid). Around it crowdcut adds what
librosa does not do:

- **The onset envelope** is the sum of two normalized spectral-flux curves: the whole mel
  spectrum and its bands under 200 Hz. Kick drum and bass mark the beat in most songs;
  hi-hats and melody notes land on the off-beats too, and a full-band envelope alone lets
  the tracker lock onto them (half a beat off).
- **Tempo** is the slope of a least-squares line through the beat times (each beat
  numbered by the median beat interval, so a skipped beat does not bend the line), which is
  far finer than librosa's tempo bins (at 120 BPM they are about 2 BPM apart).
- **Half, double and 3/2 tempo.** librosa's tempo estimate can be a multiple of the true
  one. A 3/2 or 2/3 reading puts beats on off-beats, so those grids are tracked too and the
  one whose beats carry the strongest onsets is kept. Half and double readings still sit
  on beats; they are handled by how beats group into bars, and the planner checks the
  bars against the clip length (see :func:`bot.core.slots.bar_grid`).
- **Bars.** librosa has no downbeat tracker. Each beat gets a downbeat score: its low-band
  onset plus the chord change at it (chroma distance between the beat before and the beat
  after), both z-scored, so bars start on the accented kick and where the chord changes.
  Beats are grouped 4 at a time from the phase with the highest mean score, or 8 at a time
  when the chords change every 8 beats and not 4 beats later (a double-time reading: see
  :func:`_bar_grouping`).
- **No beat.** A song has no beat when its onset envelope barely repeats at the tracked
  beat period (``pulse`` below :data:`MIN_PULSE`: the autocorrelation there, relative to lag
  0: speech, noise), when its onsets at the beats are too soft to be beats (a median
  full-band spectral flux under :data:`MIN_ONSET_DB`: ambient pads, drones, whose slow
  swells the tracker still finds a period in), or when it has fewer than
  :data:`MIN_BEATS` beats. The slot planner then splits it evenly.
- **Silence** (RMS under :data:`SILENT_DB`) is reported as such; the service refuses it.

Decoding uses PyAV (already how crowdcut reads media), so any format ffmpeg reads works,
M4A included (librosa's own loader would need ``audioread`` for AAC).

Everything here blocks: measured on 2 cores, a 4-minute song takes about 2 s, a
20-minute one (the longest accepted) 12 s in about 0.5 GB at peak (the STFT is made in
blocks, the tempo first estimated on 3 minutes), and the very first call in a process also
loads numba's compiled code (about 5 s). Call :func:`analyse_song` from async code: it runs
the analysis in a worker thread, and since librosa's numpy and numba work mostly releases
the GIL the event loop keeps ticking (measured: at most ~75 ms of loop lag).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

if TYPE_CHECKING:
    from storage.media import MediaStore

log = logging.getLogger(__name__)

#: bump when the analysis changes: cached results of older versions are computed again
VERSION = 1
SAMPLE_RATE = 22050
HOP = 256  # 11.6 ms frames: beat times within about a frame of the onset
N_FFT = 2048
BLOCK_FRAMES = 8192  # STFT frames per block (about 95 s of song)
TEMPO_EXCERPT = 180.0  # seconds of the song the tempo is first estimated on
LOW_HZ = 200.0  # kick and bass
SILENT_DB = -60.0
MIN_PULSE = 0.3
#: median spectral flux (dB) at the beats; a drum hit reads 5 to 15, a pad's swell under 0.3
MIN_ONSET_DB = 1.0
MIN_BEATS = 8
MIN_BPM, MAX_BPM = 50.0, 220.0
#: the mean chord change (cosine distance) on downbeats below which harmony says nothing
MIN_CHORD_CHANGE = 0.1

#: why a song has no beat
SILENT, NO_REGULAR_BEAT, TOO_FEW_BEATS = "silent", "no regular beat", "too few beats"

#: name of the cached analysis beside the song in the media store
DERIVED_NAME = f"beats-v{VERSION}.json"


class NotAudio(ValueError):
    """The file has no audio crowdcut can decode."""


@dataclass(frozen=True)
class SongAnalysis:
    """What :func:`analyse` found. Times are seconds from the start of the song."""

    duration: float
    rms_db: float
    peak_db: float
    tempo: float | None = None  # BPM; None when the song has no beat
    beats: tuple[float, ...] = ()
    #: downbeats: every ``beats_per_bar``-th beat from ``beats[first_downbeat]``
    bars: tuple[float, ...] = ()
    beats_per_bar: int = 4
    first_downbeat: int = 0
    #: how clearly the onsets repeat at the beat period, 0..1 (see the module docstring)
    pulse: float = 0.0
    #: why there is no beat (:data:`SILENT`, :data:`NO_REGULAR_BEAT`, :data:`TOO_FEW_BEATS`),
    #: None when there is one
    no_beat_reason: str | None = None
    version: int = field(default=VERSION)

    @property
    def silent(self) -> bool:
        return self.no_beat_reason == SILENT

    @property
    def has_beat(self) -> bool:
        return self.tempo is not None and len(self.bars) >= 2

    @property
    def bar_seconds(self) -> float | None:
        """The median bar length, None without bars."""
        if len(self.bars) < 2:
            return None
        return float(np.median(np.diff(self.bars)))

    def to_json(self) -> bytes:
        data = asdict(self)
        data["beats"] = [round(t, 4) for t in self.beats]
        data["bars"] = [round(t, 4) for t in self.bars]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> SongAnalysis:
        data: dict[str, Any] = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        data["beats"] = tuple(data.get("beats") or ())
        data["bars"] = tuple(data.get("bars") or ())
        return cls(**data)


# ---------------------------------------------------------------------------- decoding
def decode(path: Path | str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 samples at ``sr`` Hz."""
    chunks: list[np.ndarray] = []
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise NotAudio("The file could not be read as audio.") from exc
    with container:
        if not container.streams.audio:
            raise NotAudio("The file has no audio track.")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            if not chunks:
                raise NotAudio("The audio track could not be decoded.") from exc
            log.warning("decoding %s stopped early: %s", path, exc)  # keep what was read
    if not chunks:
        raise NotAudio("The audio track is empty.")
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- analysis
def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-10))


def _normalized(x: np.ndarray) -> np.ndarray:
    top = float(np.max(x)) if x.size else 0.0
    return x / top if top > 0 else x


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(np.std(x))
    return (x - float(np.mean(x))) / sd if sd > 0 else np.zeros_like(x)


def _fit_tempo(beats: np.ndarray) -> tuple[float, float]:
    """(period, phase) of the least-squares grid through ``beats``; each beat is numbered
    by the median interval, so a beat the tracker skipped leaves a gap, not a bend."""
    ibi = np.diff(beats)
    period0 = float(np.median(ibi))
    # number each interval on its own: rounding the distance from the first beat would let
    # the median's frame quantization add up over a long song and misnumber late beats
    n = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(ibi / period0)))])
    slope, intercept = np.polyfit(n, beats, 1)
    return float(slope), float(intercept)


def _extend(beats: np.ndarray, period: float, duration: float) -> np.ndarray:
    """``beats`` continued at ``period`` to both ends of the song. librosa trims the beats
    whose onsets are weak at the start and the end (a soft first bar, the fade-out); the
    grid goes on through them, so the first slot can start on a beat and the last end on
    one."""
    before = beats[0] - period * np.arange(1, int(beats[0] / period) + 1)
    after = beats[-1] + period * np.arange(1, int((duration - beats[-1]) / period) + 1)
    after = after[after < duration - 0.05]
    return np.concatenate([before[::-1], beats, after])


def analyse(y: np.ndarray, sr: int = SAMPLE_RATE) -> SongAnalysis:
    """Analyse mono samples ``y`` at ``sr`` Hz (blocks: see :func:`analyse_song`)."""
    import librosa  # a heavy import (scipy, numba): only where songs are analysed

    y = np.asarray(y, dtype=np.float32)
    duration = len(y) / sr
    if len(y) == 0:
        return SongAnalysis(0.0, -200.0, -200.0, no_beat_reason=SILENT)
    rms_db = _db(math.sqrt(max(0.0, float(np.dot(y, y))) / len(y)))  # no 20-minute temporary
    peak_db = _db(float(np.max(np.abs(y))))
    base: dict[str, Any] = {
        "duration": round(duration, 4),
        "rms_db": round(rms_db, 2),
        "peak_db": round(peak_db, 2),
    }
    if rms_db < SILENT_DB:
        return SongAnalysis(**base, no_beat_reason=SILENT)

    mel, chroma = _spectra(y, sr, librosa)
    mel_db = librosa.power_to_db(mel, ref=np.max)
    low = librosa.mel_frequencies(n_mels=mel_db.shape[0], fmax=sr / 2) < LOW_HZ
    full_env = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=HOP)
    low_env = librosa.onset.onset_strength(S=mel_db[low], sr=sr, hop_length=HOP)
    env = _normalized(full_env) + _normalized(low_env)

    frames = _track(env, sr, librosa)
    if len(frames) < MIN_BEATS:
        return SongAnalysis(**base, no_beat_reason=TOO_FEW_BEATS)
    tracked = librosa.frames_to_time(frames, sr=sr, hop_length=HOP)
    period, _ = _fit_tempo(tracked)
    beats = _extend(tracked, period, duration)
    frames = np.minimum(librosa.time_to_frames(beats, sr=sr, hop_length=HOP), len(env) - 1)
    strength = float(np.median(full_env[frames]))

    # pulse clarity: does the onset envelope repeat at the beat period?
    centred = env - float(np.mean(env))
    ac = librosa.autocorrelate(centred)
    lag = int(round(period * sr / HOP))
    pulse = 0.0
    if ac[0] > 0 and 1 <= lag < len(ac):
        pulse = float(np.max(ac[max(1, lag - 2) : lag + 3]) / ac[0])
    if pulse < MIN_PULSE or strength < MIN_ONSET_DB:
        return SongAnalysis(**base, pulse=round(pulse, 3), no_beat_reason=NO_REGULAR_BEAT)

    score, change = _downbeat_score(frames, low_env, chroma, librosa)
    per_bar, first = _bar_grouping(score, change)
    return SongAnalysis(
        **base,
        tempo=round(60.0 / period, 3),
        beats=tuple(float(round(t, 4)) for t in beats),
        bars=tuple(float(round(t, 4)) for t in beats[first::per_bar]),
        beats_per_bar=per_bar,
        first_downbeat=first,
        pulse=round(pulse, 3),
    )


def _spectra(y: np.ndarray, sr: int, librosa: Any) -> tuple[np.ndarray, np.ndarray]:
    """The mel power spectrogram (onsets) and the chroma (harmony) from one STFT, made a
    block of :data:`BLOCK_FRAMES` frames at a time: the whole STFT of a 20-minute song at
    this hop would take about 1.3 GB, a block takes 70 MB. Frames are those of a centred
    STFT (``librosa.stft``'s default), so times read the same."""
    half = N_FFT // 2
    padded = np.pad(y, half)
    frames = 1 + len(y) // HOP
    mels, chromas = [], []
    for f0 in range(0, frames, BLOCK_FRAMES):
        f1 = min(frames, f0 + BLOCK_FRAMES)
        part = padded[f0 * HOP : (f1 - 1) * HOP + N_FFT]
        if len(part) < N_FFT:
            part = np.pad(part, (0, N_FFT - len(part)))
        power = np.abs(librosa.stft(part, n_fft=N_FFT, hop_length=HOP, center=False)) ** 2
        mels.append(librosa.feature.melspectrogram(S=power, sr=sr))
        chromas.append(librosa.feature.chroma_stft(S=power, sr=sr, tuning=0.0))
    return np.concatenate(mels, axis=1), np.concatenate(chromas, axis=1)


def _track(env: np.ndarray, sr: int, librosa: Any) -> np.ndarray:
    """Beat frames. librosa's tempo estimate can be off by 3/2 or 2/3 (a 180 BPM song read
    as 120 puts every other beat on an off-beat), so the grids at those tempi are tracked
    too and the one whose beats carry the strongest onsets wins; half and double readings
    are left alone (both grids sit on beats; see :func:`_bar_grouping`)."""
    # the tempogram is the costly part, in time and memory: estimate on half the frame rate
    # (max of each pair), over at most TEMPO_EXCERPT seconds from the middle of the song
    coarse = env[: len(env) // 2 * 2].reshape(-1, 2).max(axis=1)
    keep = int(TEMPO_EXCERPT * sr / (2 * HOP))
    if len(coarse) > keep:
        start = (len(coarse) - keep) // 2
        coarse = coarse[start : start + keep]
    estimate = librosa.feature.tempo(onset_envelope=coarse, sr=sr, hop_length=2 * HOP)
    tempo = float(np.atleast_1d(estimate)[0])
    best: tuple[float, np.ndarray] | None = None
    for factor in (1.0, 2 / 3, 3 / 2):
        bpm = tempo * factor
        if factor != 1.0 and not MIN_BPM <= bpm <= MAX_BPM:
            continue
        _, frames = librosa.beat.beat_track(
            onset_envelope=env, sr=sr, hop_length=HOP, bpm=bpm, units="frames"
        )
        frames = np.asarray(frames, dtype=int)
        if len(frames) < MIN_BEATS:
            continue
        salience = float(np.mean(env[frames]))
        # another reading must be clearly better to replace librosa's own
        if factor != 1.0:
            salience /= 1.1
        if best is None or salience > best[0]:
            best = (salience, frames)
    return best[1] if best is not None else np.zeros(0, dtype=int)


def _downbeat_score(
    frames: np.ndarray, low_env: np.ndarray, chroma: np.ndarray, librosa: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(score, change) per beat. ``change`` is the chord change at the beat (cosine distance
    between the chroma of the beat before and the beat after); ``score``, how much the beat
    sounds like a downbeat, is its low-band onset (the peak within a frame either side)
    plus that change, each as a z-score over the song."""
    padded = np.pad(low_env, 1)
    end = len(padded) - 1
    kick = np.maximum.reduce([padded[np.minimum(frames + k, end)] for k in range(3)])
    sync = librosa.util.sync(chroma, frames, aggregate=np.median)  # segment k: beat k-1 to k
    sync = sync / np.maximum(np.linalg.norm(sync, axis=0, keepdims=True), 1e-9)
    change = np.zeros(len(frames))
    for k in range(1, min(len(frames), sync.shape[1] - 1)):
        change[k] = 1.0 - float(np.dot(sync[:, k], sync[:, k + 1]))
    return _zscore(kick.astype(float)) + _zscore(change), change


def _bar_grouping(score: np.ndarray, change: np.ndarray) -> tuple[int, int]:
    """(beats per bar, index of the first downbeat).

    Bars are 4 beats from the phase with the highest mean downbeat score, or 8 when the
    tracker counted double time. That shows in the harmony: chords change on downbeats,
    and a real bar's third beat rarely brings one, so in 8-beat groups a double-time
    reading has one strong change per group and next to none 4 beats later, where a true
    reading has a change at both (the next bar)."""
    if len(score) >= 16:
        changes = [float(np.mean(change[p::8])) for p in range(8)]
        top = int(np.argmax(changes))
        if changes[top] >= MIN_CHORD_CHANGE and changes[(top + 4) % 8] < 0.25 * changes[top]:
            eight = [float(np.mean(score[p::8])) for p in range(8)]
            return 8, int(np.argmax(eight))
    four = [float(np.mean(score[p::4])) for p in range(min(4, len(score)))]
    return 4, int(np.argmax(four))


def analyse_file(path: Path | str) -> SongAnalysis:
    """Decode and analyse the song at ``path`` (blocks). Raises :class:`NotAudio`."""
    return analyse(decode(path))


async def analyse_song(path: Path | str) -> SongAnalysis:
    """:func:`analyse_file` in a worker thread, off the event loop."""
    return await asyncio.to_thread(analyse_file, path)


# ---------------------------------------------------------------------------- the cache
def cached(media: MediaStore, song_key: str) -> SongAnalysis | None:
    """The stored analysis of the song ``song_key``, None when there is none (or it is of
    an older :data:`VERSION`, or unreadable). Blocks (a small file read)."""
    raw = media.read_derived(song_key, DERIVED_NAME)
    if raw is None:
        return None
    try:
        found = SongAnalysis.from_json(raw)
    except (ValueError, TypeError) as exc:
        log.warning("the stored analysis of %s is unreadable (%s); analysing again", song_key, exc)
        return None
    return found if found.version == VERSION else None


async def song_analysis(media: MediaStore, song_key: str) -> SongAnalysis:
    """The analysis of the stored song ``song_key``: the cached one, else analysed now (in a
    thread) and cached beside the song. The analysis is a function of the song's bytes, and
    the key names those bytes, so the same song in another project is not analysed again."""
    found = await asyncio.to_thread(cached, media, song_key)
    if found is not None:
        return found
    result = await analyse_song(media.path(song_key))
    await asyncio.to_thread(media.put_derived, song_key, DERIVED_NAME, result.to_json())
    log.info(
        "analysed song %s: %.1f s, %s BPM, %d bars%s",
        song_key[:12],
        result.duration,
        f"{result.tempo:.1f}" if result.tempo else "no",
        len(result.bars),
        f" ({result.no_beat_reason})" if result.no_beat_reason else "",
    )
    return result
