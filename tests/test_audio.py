"""Audio I/O: every input format generated here, resampling (streamed == whole), channels,
stdin pipes, bad files, and atomic writing."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional

from lyra.audio.channels import check_channels
from lyra.audio.reading import conform, load_audio, open_audio, open_audio_fd
from lyra.audio.resample import resample, resample_stream, resampled_length
from lyra.audio.writing import AudioWriter
from lyra.core.errors import LyraError


def signal(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 44100
    tones = 0.5 * np.sin(2 * np.pi * (1100 + 800 * np.arange(channels)) * t)
    return (tones + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)   # [n, C]


# (suffix, soundfile format, subtype, rate, lossless?)
FORMATS = [
    ("wav", "WAV", "PCM_16", 44100, True),
    ("wav", "WAV", "PCM_24", 48000, True),
    ("wav", "WAV", "PCM_U8", 22050, True),
    ("wav", "WAV", "FLOAT", 96000, True),
    ("flac", "FLAC", "PCM_24", 44100, True),
    ("ogg", "OGG", "VORBIS", 44100, False),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, False),
]


def test_this_libsndfile_writes_and_reads_every_format_we_claim():
    formats = sf.available_formats()
    for key in ("WAV", "FLAC", "OGG", "MP3"):
        assert key in formats, f"libsndfile {sf.__libsndfile_version__} lacks {key}"


@pytest.mark.parametrize("suffix, fmt, subtype, rate, lossless", FORMATS, ids=lambda v: str(v))
def test_each_format_reads_as_soundfile_decodes_it(tmp_path, suffix, fmt, subtype, rate, lossless):
    path = tmp_path / f"x.{suffix}"
    data = signal(rate // 4, 2)
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    reference, ref_rate = sf.read(path, dtype="float32", always_2d=True)    # independent decode
    with open_audio(path) as src:
        assert (src.sample_rate, src.channels) == (rate, 2)
        blocks = list(src.blocks(block_frames=1000))
        assert src.frames_read == len(reference)
    x = torch.cat(blocks, dim=-1)
    np.testing.assert_array_equal(x.numpy(), reference.T)
    if lossless:   # and the file holds what was written, to its bit depth
        np.testing.assert_allclose(x.numpy(), data.T, atol=2.0 ** -6 if subtype == "PCM_U8" else 1e-4)
    else:          # a lossy codec: the same waveform, closely (libsndfile removes the codec delay)
        assert x.shape[-1] == len(data)
        for c in range(2):
            assert np.corrcoef(x.numpy()[c], data[:, c])[0, 1] > 0.95


@pytest.mark.parametrize("orig, new", [(48000, 44100), (22050, 44100), (44100, 48000), (8000, 44100), (96000, 44100)])
def test_streamed_resampling_equals_resampling_the_whole(orig, new):
    gen = torch.Generator().manual_seed(orig)
    x = torch.randn(2, orig // 3 + 17, generator=gen)
    whole = torchaudio.functional.resample(x, orig, new)
    sizes = torch.randint(1, 5000, (200,), generator=gen).tolist()
    blocks, start = [], 0
    for n in sizes:
        if start >= x.shape[-1]:
            break
        blocks.append(x[:, start:start + n])
        start += n
    streamed = torch.cat(list(resample_stream(iter(blocks), orig, new)), dim=-1)
    assert streamed.shape == whole.shape == (2, resampled_length(x.shape[-1], orig, new))
    assert (streamed - whole).abs().max() <= 1e-5


def test_an_irregular_rate_ratio_is_refused_not_a_huge_kernel():
    with pytest.raises(LyraError, match="too irregular"):
        resample(torch.zeros(1, 100), 44099, 44100)


def test_conform_resamples_and_duplicates_mono(tmp_path):
    path = tmp_path / "mono.flac"
    data = signal(12000, 1)
    sf.write(path, data, 24000)
    with open_audio(path) as src:
        out = torch.cat(list(conform(src, 44100, 2, block_frames=777)), dim=-1)
    stored, _ = sf.read(path, dtype="float32", always_2d=True)     # 16-bit, as the file holds it
    expected = torchaudio.functional.resample(torch.from_numpy(stored.T.copy()), 24000, 44100)
    assert out.shape == (2, expected.shape[-1])
    assert torch.equal(out[0], out[1])
    assert (out[0] - expected[0]).abs().max() <= 1e-5
    whole, info = load_audio(path, 44100, 2)
    assert (info.sample_rate, info.channels, info.frames) == (24000, 1, 12000)
    assert (whole - out).abs().max() <= 1e-5


def test_more_channels_than_the_model_needs_a_downmix(tmp_path):
    path = tmp_path / "six.wav"
    data = signal(3000, 6)
    sf.write(path, data, 44100, subtype="FLOAT")
    with pytest.raises(LyraError, match=r"six\.wav: has 6 channels but the model takes 2; pass --downmix"):
        load_audio(path, 44100, 2)
    x, _ = load_audio(path, 44100, 2, downmix=True)
    mix = data.mean(axis=1)
    np.testing.assert_allclose(x.numpy(), np.stack([mix, mix]), atol=1e-6)
    with pytest.raises(LyraError, match="has 2 channels; the model takes 4"):
        check_channels(2, 4, downmix=True, name="x")


@pytest.mark.parametrize("value, word", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_samples_are_named_by_position(tmp_path, value, word):
    path = tmp_path / "bad.wav"
    data = signal(5000, 2)
    data[4321, 1] = value
    sf.write(path, data, 44100, subtype="FLOAT")
    with pytest.raises(LyraError, match=rf"bad\.wav: sample 4321 \(0:00\.098\) of channel 2 is {word}; audio must be finite"):
        load_audio(path, 44100, 2)
    with open_audio(path) as src, pytest.raises(LyraError, match="sample 4321"):
        list(src.blocks(block_frames=1000))        # found in the 5th block, position still absolute


def test_bad_files_get_one_line_messages(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "header_only.wav", np.zeros((0, 2), np.float32), 44100)
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    (tmp_path / "text.mp3").write_text("this is not audio either\n" * 20)
    (tmp_path / "folder.wav").mkdir()
    cases = {
        "missing.wav": "missing.wav: no such file",
        "empty.wav": r"empty.wav: empty file \(0 bytes\), not audio",
        "header_only.wav": "header_only.wav: contains no audio samples",
        "text.wav": r"text.wav: not a readable audio file \(Format not recognised\)",
        "text.mp3": "text.mp3: not a readable audio file",
        "folder.wav": "folder.wav: is a directory",
    }
    for name, message in cases.items():
        with pytest.raises(LyraError, match=message) as info:
            load_audio(tmp_path / name, 44100, 2)
        assert "\n" not in str(info.value)


def test_shorter_than_one_hop_is_read_fine(tmp_path):
    sf.write(tmp_path / "click.wav", signal(100, 2), 44100)
    x, info = load_audio(tmp_path / "click.wav", 44100, 2)
    assert x.shape == (2, 100) and info.frames == 100


def _pipe(data: bytes) -> int:
    """A real OS pipe fed by a thread, like a shell's `cat file |`; returns the read end."""
    r, w = os.pipe()

    def feed():
        with open(w, "wb") as f:
            for i in range(0, len(data), 4096):
                f.write(data[i:i + 4096])

    threading.Thread(target=feed, daemon=True).start()
    return r


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("RF64", "PCM_24"), ("OGG", "VORBIS"),
                                         ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_reading_from_a_pipe(tmp_path, fmt, subtype):
    """WAV and OGG stream straight from the pipe; RF64, FLAC and MP3 are spooled first."""
    path = tmp_path / "x.audio"
    sf.write(path, signal(20000, 2), 44100, format=fmt, subtype=subtype)
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    fd = _pipe(path.read_bytes())
    try:
        with open_audio_fd(fd, "<stdin>") as src:
            x = src.read_all()
    finally:
        os.close(fd)
    np.testing.assert_array_equal(x.numpy(), reference.T)


def test_wav_from_a_pipe_is_read_as_it_arrives(tmp_path):
    """Streaming, not spooling: the first blocks come out while the writer still holds the rest."""
    path = tmp_path / "x.wav"
    sf.write(path, signal(20000, 2), 44100, subtype="PCM_16")
    data = path.read_bytes()
    r, w = os.pipe()
    release, finished = threading.Event(), threading.Event()

    def feed():
        with open(w, "wb") as f:
            f.write(data[:len(data) // 2])
            f.flush()
            release.wait(5)
            f.write(data[len(data) // 2:])
        finished.set()

    threading.Thread(target=feed, daemon=True).start()
    try:
        with open_audio_fd(r, "<stdin>") as src:
            blocks = src.blocks(block_frames=1000)
            first = next(blocks)
            assert not finished.is_set()
            release.set()
            x = torch.cat([first, *blocks], dim=-1)
    finally:
        os.close(r)
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(x.numpy(), reference.T)


def test_an_empty_pipe_is_an_error():
    fd = _pipe(b"")
    try:
        with pytest.raises(LyraError, match=r"<stdin>: empty input \(0 bytes\)"):
            open_audio_fd(fd, "<stdin>")
    finally:
        os.close(fd)


@pytest.mark.parametrize("suffix, subtype, atol", [("wav", "FLOAT", 0), ("wav", "PCM_24", 2e-7), ("flac", "PCM_16", 4e-5)])
def test_writer_round_trip_and_clipping(tmp_path, suffix, subtype, atol):
    x = torch.from_numpy(signal(5000, 2).T.copy())
    x[0, 10] = 1.5
    path = tmp_path / f"out.{suffix}"
    with AudioWriter(path, 44100, 2, subtype) as out:
        for block in x.split(999, dim=-1):
            out.write(block)
    back, rate = sf.read(path, dtype="float32", always_2d=True)
    expected = x if subtype == "FLOAT" else x.clamp(-1, 1)
    assert rate == 44100 and out.written == 5000
    assert out.clipped == (0 if subtype == "FLOAT" else 1)
    np.testing.assert_allclose(back.T, expected.numpy(), atol=atol)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_writer_interrupted_leaves_nothing(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        with AudioWriter(path, 44100, 2) as out:
            out.write(torch.zeros(2, 100))
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
    assert path.read_bytes() == b"previous"


def test_output_must_be_wav_or_flac(tmp_path):
    with pytest.raises(LyraError, match=r"out\.mp3: decoded audio is written as \.wav or \.flac"):
        AudioWriter(tmp_path / "out.mp3", 44100, 2)
    with pytest.raises(LyraError, match="FLAC stores integers"):
        AudioWriter(tmp_path / "out.flac", 44100, 2, "FLOAT")


@pytest.mark.parametrize("subtype, atol", [("PCM_16", 4e-5), ("PCM_24", 2e-7), ("FLOAT", 0)])
@pytest.mark.parametrize("known_length", [True, False])
def test_wav_on_stdout_is_written_front_to_back(tmp_path, capfdbinary, subtype, atol, known_length):
    x = torch.from_numpy(signal(3000, 2).T.copy())
    with AudioWriter("-", 22050, 2, subtype, frames=3000 if known_length else None) as out:
        for block in x.split(700, dim=-1):
            out.write(block)
    data = capfdbinary.readouterr().out
    (tmp_path / "s.wav").write_bytes(data)
    back, rate = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    assert rate == 22050 and back.shape == (3000, 2)
    np.testing.assert_allclose(back.T, x.numpy(), atol=atol)


# ---------------------------------------------------------------------------------------
# Truncated files: the length a header promises
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("RF64", "PCM_24"), ("AIFF", "PCM_16")])
def test_a_file_holding_less_than_its_header_promises_is_read_with_a_warning(tmp_path, fmt, subtype):
    path = tmp_path / "full.audio"
    sf.write(path, signal(63063, 2), 44100, format=fmt, subtype=subtype)
    with open_audio(path) as src:
        src.read_all()
        assert src.declared_frames == 63063 and src.truncation is None      # a whole file: no warning
    data = path.read_bytes()
    cut = tmp_path / "cut.audio"
    cut.write_bytes(data[:len(data) // 40])
    x, info = load_audio(cut, 44100, 2)
    held = x.shape[-1]
    assert 0 < held < 63063 // 30
    assert info.truncation == (f"{cut}: warning: truncated file: its header promises 1.430 s (63,063 samples) "
                               f"but it holds {held / 44100:.3f} s ({held:,} samples); only those are used")


def test_a_truncated_wav_from_a_pipe_is_read_with_a_warning(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, signal(20000, 2), 44100, subtype="PCM_16")
    fd = _pipe(path.read_bytes()[:44 + 4 * 1000])
    try:
        with open_audio_fd(fd, "<stdin>") as src:
            assert src.read_all().shape == (2, 1000)
            assert src.truncation.startswith("<stdin>: warning: truncated file: its header promises 0.454 s "
                                             "(20,000 samples) but it holds 0.023 s (1,000 samples)")
    finally:
        os.close(fd)


def test_a_wav_stream_of_unknown_length_promises_nothing(tmp_path, capfdbinary):
    """Lyra's own (and ffmpeg's) WAV on a pipe says 0xFFFFFFFF: no warning when it ends."""
    with AudioWriter("-", 44100, 2) as out:
        out.write(torch.zeros(2, 3000))
    data = capfdbinary.readouterr().out
    fd = _pipe(data)
    try:
        with open_audio_fd(fd, "<stdin>") as src:
            assert src.read_all().shape == (2, 3000)
            assert src.declared_frames is None and src.truncation is None
    finally:
        os.close(fd)


def test_a_named_pipe_is_read_as_a_stream(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, signal(20000, 2), 44100, subtype="PCM_16")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        with fifo.open("wb") as f:
            f.write(path.read_bytes())

    threading.Thread(target=feed, daemon=True).start()
    with open_audio(fifo) as src:            # the old code refused it as "empty file (0 bytes)"
        x = src.read_all()
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(x.numpy(), reference.T)


# ---------------------------------------------------------------------------------------
# Streams out: every byte or an OSError; FLAC through a pipe
# ---------------------------------------------------------------------------------------
class _Stdout:
    """Stands in for sys.stdout: `.buffer` is `raw`, as under PYTHONUNBUFFERED=1."""

    def __init__(self, raw) -> None:
        self.buffer = raw

    def fileno(self) -> int:
        return self.buffer.fileno()

    def flush(self) -> None:
        pass


class _Trickle:
    """A raw sink taking at most 1000 bytes a call; after `capacity` bytes, `error`."""

    def __init__(self, capacity: int | None = None, error: OSError | None = None) -> None:
        self.out, self.capacity, self.error = bytearray(), capacity, error

    def write(self, b) -> int:
        room = len(b) if self.capacity is None else self.capacity - len(self.out)
        if room <= 0:
            raise self.error
        n = min(len(b), 1000, room)
        self.out += bytes(b[:n])
        return n

    def flush(self) -> None:
        pass


def test_a_wav_on_stdout_is_written_whole_through_short_writes(tmp_path, monkeypatch):
    import sys

    sink = _Trickle()
    monkeypatch.setattr(sys, "stdout", _Stdout(sink))
    x = torch.from_numpy(signal(5000, 2).T.copy())
    with AudioWriter("-", 44100, 2, "FLOAT", frames=5000) as out:
        out.write(x)
    (tmp_path / "s.wav").write_bytes(bytes(sink.out))
    back, _ = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(back.T, x.numpy())


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), BrokenPipeError(32, "Broken pipe")])
def test_a_wav_on_stdout_that_cannot_be_written_raises(monkeypatch, error):
    import sys

    monkeypatch.setattr(sys, "stdout", _Stdout(_Trickle(capacity=10000, error=error)))
    with pytest.raises(type(error)) as info:
        with AudioWriter("-", 44100, 2, frames=5000) as out:
            out.write(torch.zeros(2, 5000))
    assert info.value.errno == error.errno


def test_flac_on_stdout_through_a_real_pipe_is_a_valid_flac(tmp_path, monkeypatch):
    import sys

    r, w = os.pipe()
    received = []
    reader = threading.Thread(target=lambda: received.append(open(r, "rb").read()), daemon=True)
    reader.start()
    x = torch.from_numpy(signal(30000, 2).T.copy())
    with open(w, "wb", buffering=0) as raw:
        monkeypatch.setattr(sys, "stdout", _Stdout(raw))
        with AudioWriter("-", 44100, 2, "PCM_16", fmt="flac") as out:
            for block in x.split(7000, dim=-1):
                out.write(block)
    reader.join(timeout=60)
    (tmp_path / "piped.flac").write_bytes(received[0])
    back, rate = sf.read(tmp_path / "piped.flac", dtype="float32", always_2d=True)
    assert rate == 44100 and back.shape == (30000, 2)
    np.testing.assert_allclose(back.T, x.numpy(), atol=4e-5)
