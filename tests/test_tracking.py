"""TensorBoard and Weights & Biases get the validation audio and spectrograms with the scalars.

One tiny training run with both trackers and the plots on (W&B in offline mode: no network, no
API key); its event file and W&B's media are read back with the trackers' own readers.
"""

import glob
import io
import re

import numpy as np
import pytest
import soundfile as sf

import lyra.train.engine as engine
from lyra.core.errors import LyraError
from lyra.core.extras import install_hint
from lyra.train.config import LoggingConfig
from lyra.train.metrics_log import check_trackers
from train_helpers import make_data, tiny_config

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    make_data(tmp)
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **{f"WANDB_{k}_DIR": str(tmp / f"wandb-{k.lower()}")
                                                               for k in ("CONFIG", "CACHE", "DATA")}}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("WANDB_API_KEY", raising=False)
        engine.train(tiny_config(tmp, logging={"tensorboard": True, "wandb": True, "plots": True}))
    return tmp / "run"


def test_tensorboard_holds_the_validation_audio_and_spectrograms(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/kl_weight", "val/si_sdr"} <= set(tags["scalars"])
    assert set(tags["audio"]) == {"val/clip0/original", "val/clip0/reconstruction"}
    assert tags["images"] == ["val/clip0/spectrogram"]
    for name in ("original", "reconstruction"):
        clips = events.Audio(f"val/clip0/{name}")
        assert [c.step for c in clips] == [2, 4]
        for clip in clips:
            assert clip.sample_rate == 44100 and clip.length_frames == 4096 and clip.content_type == "audio/wav"
            audio, rate = sf.read(io.BytesIO(clip.encoded_audio_string))
            written, _ = sf.read(run / "samples" / f"step-{clip.step:08d}" / f"clip0-{name}.wav")
            assert rate == 44100 and audio.shape == (4096, 2)           # stereo, as the WAV files
            np.testing.assert_array_equal(audio, written)
    images = events.Images("val/clip0/spectrogram")
    assert [i.step for i in images] == [2, 4]
    for image in images:
        png = (run / "samples" / f"step-{image.step:08d}" / "clip0.png").read_bytes()
        np.testing.assert_array_equal(_png_pixels(image.encoded_image_string), _png_pixels(png))


def test_wandb_offline_run_holds_the_validation_audio_and_spectrograms(run):
    (folder,) = glob.glob(str(run / "wandb" / "offline-run-*" / "files" / "media"))
    found = {}
    for path in glob.glob(f"{folder}/**/*.*", recursive=True):
        m = re.search(r"media/(audio|images)/val/clip0/(\w+)_(\d+)_\w+\.(wav|png)$", path)
        assert m, path
        found[(m[2], int(m[3]))] = path
    assert sorted(found) == sorted((name, step) for name in ("original", "reconstruction", "spectrogram")
                                   for step in (2, 4))
    for (name, step), path in found.items():
        sample = run / "samples" / f"step-{step:08d}"
        if name == "spectrogram":
            np.testing.assert_array_equal(_png_pixels(open(path, "rb").read()),
                                          _png_pixels((sample / "clip0.png").read_bytes()))
        else:
            audio, rate = sf.read(path)
            written, _ = sf.read(sample / f"clip0-{name}.wav")
            assert rate == 44100 and audio.shape == written.shape == (4096, 2)
            np.testing.assert_allclose(audio, written, atol=2 / 32768)   # W&B's own WAV encoding


def test_training_with_plots_draws_labelled_spectrograms_and_the_metrics_plot(run):
    for step in (2, 4):
        picture = _png_pixels((run / "samples" / f"step-{step:08d}" / "clip0.png").read_bytes())
        assert picture.shape == (420, 1200, 3)          # the labelled figure, not the 515-row pixel dump
    metrics = _png_pixels((run / "metrics.png").read_bytes())
    assert metrics.shape[1] == 1200 and metrics.std() > 10


@pytest.mark.parametrize("package", ["wandb", "tensorboard"])
def test_a_tracker_that_is_not_installed_is_a_one_line_error_with_the_install_command(package, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, package, None)   # as if not installed
    with pytest.raises(LyraError) as info:
        check_trackers(LoggingConfig(**{package: True}))
    assert str(info.value) == f"logging.{package} = true needs the '{package}' package: {install_hint(package)}"
    check_trackers(LoggingConfig())                                   # off: never looked for
