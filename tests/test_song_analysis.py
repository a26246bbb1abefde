"""Song analysis: tempo, beats and bars of synthesized songs of known tempo; songs with no
beat; silence; files that are not audio; the analysis kept beside the song."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.media import beats
from bot.media.beats import NotAudio, SongAnalysis, analyse, analyse_file, song_analysis
from storage.media import MediaStore
from tests.song_helpers import ambient, noise, off_grid, song, speech_like, write_wav


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("songs")


@pytest.mark.parametrize("bpm", [92, 120, 140])
def test_tempo_beats_and_bars_of_a_song_of_known_tempo(songs, bpm):
    a = analyse_file(song(songs, bpm))
    beat = 60 / bpm
    assert a.has_beat
    assert a.tempo == pytest.approx(bpm, abs=1.0)
    assert off_grid(a.beats, beat) < 0.05
    # no beat left out between the first and the last one found
    assert len(a.beats) == round((a.beats[-1] - a.beats[0]) / beat) + 1
    assert a.beats[0] < 2 * beat and a.beats[-1] > a.duration - 3 * beat
    assert a.beats_per_bar == 4
    assert off_grid(a.bars, 4 * beat) < 0.05  # bars start on downbeats
    assert len(a.bars) >= 4


def test_bars_are_found_by_the_chords_when_no_beat_is_accented(songs):
    a = analyse_file(song(songs, 120, accent=0.0))
    assert a.tempo == pytest.approx(120, abs=1.0)
    assert off_grid(a.bars, 2.0) < 0.05


def test_a_slow_song_read_at_double_tempo_still_has_its_bars_on_downbeats(songs):
    a = analyse_file(song(songs, 70))
    # librosa may read 70 BPM as 140: then a bar is 8 of its beats
    assert a.tempo is not None
    assert a.tempo == pytest.approx(70, abs=1.0) or a.tempo == pytest.approx(140, abs=2.0)
    assert a.beats_per_bar * 60 / a.tempo == pytest.approx(4 * 60 / 70, rel=0.02)
    assert off_grid(a.bars, 4 * 60 / 70) < 0.05


@pytest.mark.parametrize(
    "signal", [noise, speech_like, ambient], ids=["noise", "speech", "ambient"]
)
def test_a_song_with_no_beat_says_so(signal):
    a = analyse(signal().astype(np.float32))
    assert not a.has_beat and not a.silent
    assert a.no_beat_reason == "no regular beat"
    assert a.bars == () and a.tempo is None


def test_quiet_noise_is_not_silence_but_has_no_beat():
    a = analyse(noise(level=0.003).astype(np.float32))
    assert not a.silent and not a.has_beat


def test_silence_is_reported_silent(tmp_path):
    a = analyse_file(write_wav(tmp_path / "silence.wav", np.zeros(22050 * 5)))
    assert a.silent and not a.has_beat
    assert a.duration == pytest.approx(5.0, abs=0.01)


def test_a_file_that_is_not_audio_is_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a song\n" * 100)
    with pytest.raises(NotAudio):
        analyse_file(text)


def test_the_analysis_survives_a_round_trip_through_json(songs):
    a = analyse_file(song(songs, 120))
    b = SongAnalysis.from_json(a.to_json())
    assert b.tempo == a.tempo and b.bars == a.bars and b.beats == a.beats
    assert b.first_downbeat == a.first_downbeat and b.beats_per_bar == a.beats_per_bar


async def test_the_analysis_is_kept_beside_the_song_and_read_again(tmp_path, songs, monkeypatch):
    media = MediaStore(tmp_path / "media")
    key = media.put_file(song(songs, 92), "m4a")
    first = await song_analysis(media, key)
    assert media.derived_path(key, beats.DERIVED_NAME).is_file()

    async def must_not_run(path):
        raise AssertionError("the song was analysed again")

    monkeypatch.setattr(beats, "analyse_song", must_not_run)
    again = await song_analysis(media, key)
    assert again == first


async def test_an_analysis_of_an_older_version_is_made_again(tmp_path, songs, monkeypatch):
    media = MediaStore(tmp_path / "media")
    key = media.put_file(song(songs, 92), "m4a")
    old = SongAnalysis(duration=20.0, rms_db=-20, peak_db=-3, version=beats.VERSION - 1)
    media.put_derived(key, beats.DERIVED_NAME, old.to_json())
    fresh = await song_analysis(media, key)
    assert fresh.version == beats.VERSION and fresh.has_beat
