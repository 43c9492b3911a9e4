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


# -- the demo with a discrete bottleneck (issue 23) ------------------------------------------

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import lyra, lyra_executable
from lyra.apps.demo import DEMO_BOTTLENECKS, demo_config, demo_toml_header, quantizer_counts, reconstruction_scores
from lyra.model.config import ModelConfig
from lyra.train.config import TrainConfig, commented_toml

REPO = Path(__file__).resolve().parents[1]


def si_sdr_float64(ref: torch.Tensor, est: torch.Tensor) -> float:
    """SI-SDR in dB as `lyra eval` defines it (Le Roux et al.: zero-mean, per channel, the
    channels' dB averaged), in float64 numpy."""
    values = []
    for r, e in zip(ref.double().numpy(), est.double().numpy()):
        r, e = r - r.mean(), e - e.mean()
        target = (e @ r) / (r @ r) * r
        values.append(10 * np.log10((target @ target) / ((e - target) @ (e - target))))
    return float(np.mean(values))


@pytest.mark.parametrize("name", ["fsq", "rvq"])
def test_the_discrete_demo_configs_are_what_demo_config_writes(name):
    path = REPO / "configs" / f"demo-{name}.toml"
    assert path.read_text() == commented_toml(demo_config("demo-out", name), demo_toml_header(name))
    cfg = TrainConfig.load(path)
    assert cfg == demo_config("demo-out", name)
    # The same run as the vae demo's but for the bottleneck and the run folder.
    vae = demo_config("demo-out")
    assert vae == demo_config("demo-out", "vae") and vae.model == ModelConfig.small() and vae.run_dir == "demo-out/run"
    assert cfg.run_dir == f"demo-out/run-{name}"
    assert cfg.model.bottleneck == name and cfg.model.options == {name: DEMO_BOTTLENECKS[name]}
    assert TrainConfig.load(path).model.options[name] == DEMO_BOTTLENECKS[name]
    for table in ("data", "optim", "loss", "runtime", "logging", "checkpoint", "adversarial", "ema", "seed"):
        assert getattr(cfg, table) == getattr(vae, table), table
    from dataclasses import replace
    assert replace(cfg.model, bottleneck="vae", options={}) == vae.model


def test_a_bad_bottleneck_is_one_line_before_anything_is_written(tmp_path):
    done = lyra("demo", "--bottleneck", "vqgan", "--out", tmp_path / "demo", "--steps", "1")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == "lyra: error: --bottleneck: must be one of vae, fsq, rvq, got 'vqgan'\n"
    assert not (tmp_path / "demo").exists()
    assert "--bottleneck" in subprocess.run([lyra_executable(), "demo", "--help"], capture_output=True,
                                            text=True).stdout


def test_the_vae_demo_scores_the_posterior_mean_as_before():
    torch.manual_seed(0)
    from lyra.model.vae import build_model

    model = build_model(ModelConfig.small()).eval()
    clip = torch.randn(2, 5000) * 0.1
    scores, recon = reconstruction_scores(model, clip)
    with torch.inference_mode():
        mean, _ = model.encode(clip[None])
        before = model.decode(mean, clip.shape[-1])[0]       # what the demo computed before issue 23
    assert torch.equal(recon, before)
    assert scores.si_sdr == pytest.approx(si_sdr_float64(clip, before), abs=0.05)


def test_quantizer_counts():
    assert quantizer_counts(8) == [1, 2, 4, 8] and quantizer_counts(9) == [1, 2, 4, 8, 9]
    assert quantizer_counts(1) == [1] and quantizer_counts(3) == [1, 2, 3]


@pytest.mark.parametrize("name", ["fsq", "rvq"])
def test_a_short_discrete_demo_prints_its_bitrate_and_scores_its_codes(tmp_path, name):
    import soundfile as sf

    from lyra.eval.metrics import mel_distance, si_sdr
    from lyra.model.checkpoint import load_model

    out = io.StringIO()
    before, after = run_demo(tmp_path / "demo", steps=2, stream=out, files=(4, 1, 1.0), bottleneck=name)
    text = out.getvalue()
    run = tmp_path / "demo" / f"run-{name}"
    model = load_model(run / "best.pt").eval()
    assert model.config.bottleneck == name and model.discrete
    # 8 codes of ceil(log2 K) bits per frame, 44100 / 2048 frames per second.
    bits = math.ceil(math.log2(model.bottleneck.codebook_size))
    assert bits == 10 and model.bottleneck.num_quantizers == 8
    assert f"bitrate: {8 * bits * 44100 / 2048 / 1000:.2f} kbit/s (8 codes of 10 bits per frame" in text
    assert "1.72 kbit/s" in text and f"with an {name} bottleneck" in text and "from its codes" in text
    data, rate = sf.read(tmp_path / "demo" / "data" / "val" / "voice-000.wav", dtype="float32", always_2d=True)
    clip = torch.from_numpy(data.T.copy())
    with torch.inference_mode():
        codes = model.encode_latents(clip[None])
        assert codes.dtype == torch.int64 and codes.shape == (1, 8, math.ceil(44100 / 2048))
        full = model.decode_latents(codes, clip.shape[-1])[0]
    rows = {line[4:32].strip(): line.split()[-2:] for line in text.splitlines() if line.startswith("    ")}
    assert rows["trained, held-out clip"][0] == f"{after.si_sdr:.2f}"
    # The scores are of the audio decoded from these codes (lyra's metrics; after 2 steps SI-SDR is
    # near -60 dB, where the metric's 1e-8 guards move it by tenths of a dB from a guard-less formula).
    assert rows["trained, held-out clip"] == [f"{float(si_sdr(clip, full)):.2f}", f"{float(mel_distance(clip, full)):.3f}"]
    fewer = [key for key in rows if "quantiser" in key]
    if name == "fsq":                                     # not residual: one bitrate only
        assert fewer == [] and "[--quantizers N]" not in text
    else:
        assert fewer == [f"{n} quantiser{'s' if n > 1 else ''}, {n * bits * 44100 / 2048 / 1000:.2f} kbit/s"
                         for n in (1, 2, 4, 8)]
        for n, key in zip((1, 2, 4, 8), fewer):
            with torch.inference_mode():
                recon = model.decode_latents(codes[:, :n], clip.shape[-1])[0]
            assert rows[key] == [f"{float(si_sdr(clip, recon)):.2f}", f"{float(mel_distance(clip, recon)):.3f}"], key
        assert rows[fewer[-1]] == rows["trained, held-out clip"]
        assert "[--quantizers N]" in text
    for wav in ("untrained", "trained"):
        assert (tmp_path / "demo" / f"held-out-{name}-{wav}.wav").exists()
    assert not (tmp_path / "demo" / "held-out-trained.wav").exists()   # the vae demo's files are left alone
