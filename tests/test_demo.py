"""The demo: its synthetic data has what the issue asks for, and a short run prints the comparison."""

import io

import numpy as np
import soundfile as sf

from lyra.apps.demo import run_demo
from lyra.audio.synth import voiced_clip
from lyra.train.metrics_log import read_metrics


def test_synthetic_clips_are_voiced_with_moving_pitch_pauses_and_stereo():
    clip = voiced_clip(np.random.default_rng(0), 4.0)
    assert clip.shape == (2, 4 * 44100) and clip.dtype == np.float32
    assert 0.45 < np.abs(clip).max() < 0.55
    frames = clip[0, : 4 * 44100 // 2048 * 2048].reshape(-1, 2048)
    rms_db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-12)
    assert (rms_db < -60).any() and (rms_db > -30).any()          # pauses at the noise floor, and voice
    assert not np.allclose(clip[0], clip[1])                         # a stereo image
    # Pitch moves: the strongest low partial differs between voiced frames.
    voiced = frames[rms_db > -30]
    peaks = {int(np.argmax(np.abs(np.fft.rfft(f * np.hanning(2048)))[2:60])) for f in voiced}
    assert len(peaks) > 3
    assert np.array_equal(clip, voiced_clip(np.random.default_rng(0), 4.0))   # same seed, same clip


def test_a_short_demo_run_prints_before_and_after_scores(tmp_path):
    out = io.StringIO()
    before, after = run_demo(tmp_path / "demo", steps=2, stream=out, files=(4, 1, 1.0))
    text = out.getvalue()
    assert "SI-SDR" in text and "mel distance" in text
    # Each row says which model and which audio it scores: the held-out clip, and the training
    # log's validation crops (whose SI-SDR differs, and which the log prints as "validation").
    rows = {line.strip().split("  ")[0]: line.split()[-2:] for line in text.splitlines()
            if line.startswith("    ") and (", held-out clip " in line or ", validation crops " in line)}
    assert rows["untrained, held-out clip"] == [f"{before.si_sdr:.2f}", f"{before.mel_distance:.3f}"]
    assert rows["trained, held-out clip"] == [f"{after.si_sdr:.2f}", f"{after.mel_distance:.3f}"]
    val = [r for r in read_metrics(tmp_path / "demo" / "run" / "metrics.jsonl") if r["split"] == "val"][-1]
    assert rows["trained, validation crops *"] == [f"{val['si_sdr']:.2f}", f"{val['mel_distance']:.3f}"]
    assert f"validation loss {val['loss']:.4f}" in text and f"SI-SDR {val['si_sdr']:.2f} dB" in text   # the log's line
    assert f"the training log's validation at step {val['step']}" in text
    assert after.mel_distance != before.mel_distance                  # the trained weights were used
    for name in ("held-out-untrained.wav", "held-out-trained.wav"):
        audio, rate = sf.read(tmp_path / "demo" / name)
        assert rate == 44100 and audio.shape == (44100, 2)
    assert (tmp_path / "demo" / "run" / "best.pt").exists()
