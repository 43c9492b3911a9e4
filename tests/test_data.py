"""The dataset: scanning, crops, silence rejection, resampling, the split, the data order, workers."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from lyra.core.errors import LyraError
from lyra.train.data import (CropDataset, CropSpec, EpochBatchSampler, check_data_dirs, level_db, read_crop,
                             scan_audio, seed_worker, split_files, validation_set)
from train_helpers import write_tones

SPEC = CropSpec(length=4096, sample_rate=44100, channels=2)
EXTS = ("wav", "flac", "ogg", "mp3")


def _sine(path, freq, seconds, sample_rate=44100, channels=2, level_db=-10.0, fmt=None):
    """A sine whose RMS is `level_db` dBFS (amplitude = sqrt(2) * 10^(dB/20))."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = math.sqrt(2) * 10 ** (level_db / 20) * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([x] * channels, axis=1), sample_rate, subtype="FLOAT" if fmt is None else fmt)
    return path


def test_scan_is_recursive_by_extension_and_skips_bad_files_with_one_warning_each(tmp_path):
    write_tones(tmp_path / "a", 2)
    write_tones(tmp_path / "a" / "deeper", 1, prefix="deep")
    _sine(tmp_path / "a" / "mono.FLAC", 440, 0.2, channels=1, fmt="PCM_16")
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    _sine(tmp_path / "a" / "surround.wav", 440, 0.1, channels=6)
    warnings = []
    files = scan_audio(tmp_path / "a", EXTS, channels=2, warn=warnings.append)
    names = sorted(p.rsplit("/", 1)[-1] for p in (f.path for f in files))
    assert names == ["deep-0.wav", "mono.FLAC", "tone-0.wav", "tone-1.wav"]
    assert len(warnings) == 2
    assert any("broken.wav" in w and "unreadable" in w for w in warnings)
    assert any("surround.wav" in w and "6 channels" in w for w in warnings)


def test_missing_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(LyraError, match="data.train_dir: folder .* does not exist"):
        check_data_dirs(str(tmp_path / "nope"), None, EXTS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LyraError, match="data.train_dir: folder .* has no audio files"):
        check_data_dirs(str(tmp_path / "empty"), None, EXTS)
    write_tones(tmp_path / "ok", 1)
    (tmp_path / "file.wav").write_text("x")
    with pytest.raises(LyraError, match="data.val_dir: .*file.wav is not a folder"):
        check_data_dirs(str(tmp_path / "ok"), str(tmp_path / "file.wav"), EXTS)
    check_data_dirs(str(tmp_path / "ok"), None, EXTS)


def test_crop_is_the_file_span_peak_normalised(tmp_path):
    rng = np.random.default_rng(0)
    data = (0.3 * rng.standard_normal((20000, 2))).clip(-1, 1).astype(np.float32)
    sf.write(tmp_path / "x.wav", data, 44100, subtype="FLOAT")
    [file] = scan_audio(tmp_path, EXTS, 2)
    crop = read_crop(file, 1234, SPEC)
    torch.testing.assert_close(crop, torch.from_numpy(data[1234:1234 + 4096].T.copy()))
    tail = read_crop(file, 19000, SPEC)  # runs past the end: zero-padded
    assert tail.shape == (2, 4096) and tail[:, 1000:].abs().max() == 0

    ds = CropDataset([file], SPEC, seed=0, folder=str(tmp_path))
    audio, seed = ds[3]
    assert audio.shape == (2, 4096) and audio.dtype == torch.float32 and seed.dtype == torch.int64
    assert audio.abs().max().item() == pytest.approx(0.95, abs=1e-6)


def test_items_are_pure_functions_of_their_index(tmp_path):
    write_tones(tmp_path, 3, seconds=1.0)
    files = scan_audio(tmp_path, EXTS, 2)
    a = CropDataset(files, SPEC, seed=7, folder=str(tmp_path))
    b = CropDataset(files, SPEC, seed=7, folder=str(tmp_path))
    for index in (0, 5, a.epoch_size + 5):
        torch.testing.assert_close(a[index][0], b[index][0], rtol=0, atol=0)
        assert a[index][1] == b[index][1]
    assert not torch.equal(a[5][0], a[a.epoch_size + 5][0])          # next epoch: a new crop
    c = CropDataset(files, SPEC, seed=8, folder=str(tmp_path))
    assert not torch.equal(a[0][0], c[0][0])                          # another seed: other crops
    assert a.epoch_size == (3 * 44100) // 4096


def test_mono_becomes_stereo_and_other_rates_are_resampled(tmp_path):
    _sine(tmp_path / "mono22k.wav", 1000.0, 1.0, sample_rate=22050, channels=1)
    [file] = scan_audio(tmp_path, EXTS, 2)
    crop = read_crop(file, 8000, CropSpec(length=8192, sample_rate=44100, channels=2))
    assert crop.shape == (2, 8192)
    torch.testing.assert_close(crop[0], crop[1])
    spectrum = torch.fft.rfft(crop[0] * torch.hann_window(8192)).abs()
    peak_hz = spectrum.argmax().item() * 44100 / 8192
    assert abs(peak_hz - 1000.0) < 44100 / 8192                     # still a 1 kHz tone at 44.1 kHz
    # A resampled crop is the same span of the whole resampled file (the filter had context).
    import torchaudio

    whole, _ = sf.read(tmp_path / "mono22k.wav", dtype="float32")
    reference = torchaudio.functional.resample(torch.from_numpy(whole)[None], 22050, 44100)[0, 8000:8000 + 8192]
    torch.testing.assert_close(crop[0], reference, atol=2e-3, rtol=0)


def test_near_silent_crops_are_rejected_at_minus_40_dbfs(tmp_path):
    quiet, loud = tmp_path / "quiet", tmp_path / "loud"
    quiet.mkdir()
    loud.mkdir()
    _sine(quiet / "q.wav", 440, 1.0, level_db=-41.0)
    _sine(loud / "l.wav", 440, 1.0, level_db=-39.0)
    assert level_db(read_crop(scan_audio(quiet, EXTS, 2)[0], 0, SPEC)) == pytest.approx(-41.0, abs=0.1)

    ds = CropDataset(scan_audio(loud, EXTS, 2), SPEC, seed=0, folder=str(loud))
    assert ds[0][0].abs().max().item() == pytest.approx(0.95, abs=1e-6)
    silent = CropDataset(scan_audio(quiet, EXTS, 2), SPEC, seed=0, folder=str(quiet), attempts=5)
    with pytest.raises(LyraError, match=r"quiet: no usable audio: 5 crops in a row were near-silent \(RMS below -40 dBFS\)"):
        silent[0]


def test_silent_files_and_passages_are_skipped_not_fatal(tmp_path):
    _sine(tmp_path / "silent.wav", 440, 2.0, level_db=-90.0)
    # A file that is silent for its first half and loud after.
    t = np.arange(44100) / 44100
    half = np.concatenate([np.zeros(22050), 0.5 * np.sin(2 * np.pi * 440 * t[22050:])])
    sf.write(tmp_path / "half.wav", np.stack([half, half], 1), 44100)
    files = scan_audio(tmp_path, EXTS, 2)
    ds = CropDataset(files, SPEC, seed=0, folder=str(tmp_path))
    for i in range(12):
        audio, _ = ds[i]
        assert level_db(audio) > -40


def test_split_is_fixed_disjoint_and_independent_of_listing_order(tmp_path):
    write_tones(tmp_path, 20, seconds=0.1)
    files = scan_audio(tmp_path, EXTS, 2)
    train, val = split_files(files, 0.1, tmp_path)
    assert len(val) == 2 and len(train) == 18
    assert not {f.path for f in train} & {f.path for f in val}
    train2, val2 = split_files(list(reversed(files)), 0.1, tmp_path)
    assert {f.path for f in val2} == {f.path for f in val}
    assert split_files(files[:1], 0.5, tmp_path) == (files[:1], [])   # one file: nothing to hold out
    assert split_files(files, 0.0, tmp_path) == (files, [])


def test_batch_sampler_resumes_mid_stream_and_shards_across_processes():
    full = EpochBatchSampler(epoch_size=20, batch_size=3, seed=1)
    assert full.batches_per_epoch == 6
    stream = iter(full)
    first = [next(stream) for _ in range(15)]                          # crosses two epoch boundaries
    resumed = iter(EpochBatchSampler(epoch_size=20, batch_size=3, seed=1, start=7))
    assert [next(resumed) for _ in range(8)] == first[7:]
    assert sorted(i for b in first[:6] for i in b) != list(range(18))  # shuffled, 18 of 20 used
    assert all(20 <= i < 40 for b in first[6:12] for i in b)          # epoch 1's global indices

    shards = [EpochBatchSampler(epoch_size=20, batch_size=2, seed=1, world_size=2, rank=r) for r in (0, 1)]
    epoch0 = [s.epoch_batches(0) for s in shards]
    seen = [i for batches in epoch0 for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 20                           # disjoint, everything once
    single = EpochBatchSampler(epoch_size=20, batch_size=4, seed=1).epoch_batches(0)
    # Batch k of one process with batch 4 = batch k of rank 0 + batch k of rank 1 (batch 2 each).
    assert [sorted(b) for b in single] == [sorted(epoch0[0][k] + epoch0[1][k]) for k in range(5)]
    with pytest.raises(LyraError, match="fewer than one batch"):
        EpochBatchSampler(epoch_size=3, batch_size=4, seed=0)


def test_worker_processes_load_the_same_batches(tmp_path):
    write_tones(tmp_path, 3, seconds=0.5)
    ds = CropDataset(scan_audio(tmp_path, EXTS, 2), SPEC, seed=3, folder=str(tmp_path))

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=EpochBatchSampler(ds.epoch_size, 2, seed=3, start=1),
                                             num_workers=workers, worker_init_fn=seed_worker)
        it = iter(loader)
        return [next(it) for _ in range(4)]

    for (a0, s0), (a2, s2) in zip(batches(0), batches(2)):
        assert torch.equal(a0, a2) and torch.equal(s0, s2)


def test_validation_crops_are_fixed_and_skip_silence(tmp_path):
    t = np.arange(44100) / 44100
    x = np.where(t < 0.5, 0.0, 0.5 * np.sin(2 * np.pi * 330 * t))
    sf.write(tmp_path / "v.wav", np.stack([x, x], 1), 44100)
    write_tones(tmp_path, 1, seconds=0.5, prefix="w")
    files = scan_audio(tmp_path, EXTS, 2)
    val = validation_set(files, SPEC, 4, str(tmp_path))
    assert val.shape == (4, 2, 4096)
    assert all(level_db(v) > -40 for v in val)
    assert torch.equal(val, validation_set(files, SPEC, 4, str(tmp_path)))
