"""Songs for the analysis and slot-plan tests: synthesized ones of known tempo (the demo's
synthesizer, with its downbeat accent) and beatless ones (noise, speech-like syllables, an
ambient pad, silence) written as WAV with the standard library."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from bot.media.song import synthesize_song

SR = 22050


def _song_path(folder: Path, bpm: int, seconds: float, accent: float) -> Path:
    return folder / f"song-{bpm}-{seconds:g}-{accent:g}.m4a"


def song(folder: Path, bpm: int, seconds: float = 20.0, *, accent: float = 0.5) -> Path:
    """A synthesized song at ``bpm`` (kept in ``folder``: made once per folder)."""
    path = _song_path(folder, bpm, seconds, accent)
    if not path.exists():
        asyncio.run(synthesize_song(path, seconds, bpm=bpm, seed=bpm, accent=accent))
    return path


async def song_async(folder: Path, bpm: int, seconds: float = 20.0, *, accent: float = 0.5) -> Path:
    """:func:`song`, from a coroutine."""
    path = _song_path(folder, bpm, seconds, accent)
    if not path.exists():
        await synthesize_song(path, seconds, bpm=bpm, seed=bpm, accent=accent)
    return path


def write_wav(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    """Mono 16-bit WAV of the samples ``y`` (-1..1)."""
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(SR * seconds)) / SR


def noise(seconds: float = 20.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(len(_t(seconds)))


def speech_like(seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """Voiced syllables of random length, pitch and spacing, with pauses: onsets that never
    settle into a pulse, as in speech."""
    rng = np.random.default_rng(seed)
    n = len(_t(seconds))
    y = np.zeros(n)
    i = 0
    while i < n:
        length = int(SR * rng.uniform(0.08, 0.3))
        seg = np.arange(min(length, n - i)) / SR
        f0 = rng.uniform(100, 220)
        tone = sum(np.sin(2 * np.pi * f0 * h * seg) / h for h in range(1, 8))
        envelope = np.sin(np.pi * seg / (length / SR)) ** 2
        y[i : i + len(seg)] = 0.2 * envelope * tone * (1 + 0.3 * rng.standard_normal(len(seg)))
        i += length + int(SR * rng.uniform(0.02, 0.4))
        if rng.random() < 0.1:
            i += int(SR * rng.uniform(0.3, 0.8))  # a breath
    return y


def ambient(seconds: float = 20.0) -> np.ndarray:
    """Three slowly swelling tones: sound without onsets."""
    t = _t(seconds)
    return (
        0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t))
        + 0.15 * np.sin(2 * np.pi * 330 * t + np.sin(2 * np.pi * 0.07 * t))
        + 0.1 * np.sin(2 * np.pi * 277 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.23 * t))
    )


def off_grid(times: list[float] | tuple[float, ...], period: float) -> float:
    """The largest distance (s) from ``times`` to the nearest multiple of ``period``."""
    phase = np.mod(np.asarray(times), period)
    return float(np.max(np.minimum(phase, period - phase))) if len(times) else 0.0
