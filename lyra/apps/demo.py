"""The demo: synthesise a small data set, train the small model on it for a few minutes on a
CPU, and show on a held-out clip that reconstructions got better.

    lyra demo                      # writes demo-out/: data/, run/, held-out WAVs
    lyra demo --steps 50           # a shorter run

Its config is `demo_config(out)`; configs/demo.toml is the same config for ``out = demo-out``
(``lyra train configs/demo.toml`` after a demo has generated the data).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import torch

from lyra.model.config import ModelConfig
from lyra.model.vae import VAE

TRAIN_FILES, VAL_FILES, CLIP_SECONDS = 32, 4, 4.0
# configs/demo.toml is `commented_toml(demo_config("demo-out"), DEMO_TOML_HEADER)`.
DEMO_TOML_HEADER = """The demo run (`lyra demo` trains this after synthesising its data in demo-out/data):
the small model on 16,384-sample crops, a brisk learning rate, a few minutes on a CPU.
After a demo has generated the data, `lyra train configs/demo.toml` trains the same run."""


def demo_config(out: str | Path = "demo-out"):
    """The demo's run: the small model, short crops, a brisk learning-rate schedule."""
    from lyra.train.config import (CheckpointConfig, DataConfig, LoggingConfig, LossConfig,
                                   OptimConfig, RuntimeConfig, TrainConfig)

    out = Path(out).as_posix()
    return TrainConfig(
        run_dir=f"{out}/run",
        seed=0,
        model=ModelConfig.small(),
        data=DataConfig(train_dir=f"{out}/data/train", val_dir=f"{out}/data/val", val_clips=8,
                        segment_length=16384, batch_size=4, num_workers=1),
        optim=OptimConfig(lr=1e-3, warmup_steps=50, schedule="cosine", min_lr=1e-4, max_steps=300, weight_decay=0.0),
        loss=LossConfig(kl_weight=1e-4, kl_anneal=100, kl_anneal_unit="steps"),
        runtime=RuntimeConfig(device="cpu", precision="fp32", threads=1),
        logging=LoggingConfig(log_every=10, eval_every=100, val_audio=2),
        checkpoint=CheckpointConfig(save_every=100, keep_last=2),
    )


@dataclass
class Scores:
    si_sdr: float
    mel_distance: float


def reconstruction_scores(model: VAE, clip: torch.Tensor) -> tuple[Scores, torch.Tensor]:
    """Encode [C, T] -> posterior mean -> decode; (SI-SDR, mel distance), reconstruction."""
    from lyra.eval.metrics import mel_distance, si_sdr

    model.eval()
    with torch.inference_mode():
        mean, _ = model.encode(clip[None])                   # [1, C, T] -> [1, D, F]
        recon = model.decode(mean, clip.shape[-1])[0]        # [1, D, F] -> [C, T]
    return Scores(float(si_sdr(clip, recon)), float(mel_distance(clip, recon, model.config.sample_rate))), recon


def run_demo(out: str | Path = "demo-out", steps: int | None = None, stream: TextIO | None = None,
             files: tuple[int, int, float] = (TRAIN_FILES, VAL_FILES, CLIP_SECONDS)) -> tuple[Scores, Scores]:
    """Generate data, score the untrained model, train, score the trained one; print both.

    `files` is (training clips, held-out clips, seconds per clip).
    """
    from lyra.audio.synth import write_dataset

    stream = stream or sys.stdout
    out = Path(out)
    cfg = demo_config(out)
    if steps is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, max_steps=steps))
    say = _Printer(stream)

    started = time.perf_counter()
    n_train, n_val, seconds = files
    say(f"1/4 synthesising {n_train} training and {n_val} held-out clips of {seconds:g} s "
        f"(voiced, gliding pitch, pauses) in {out}/data ...")
    write_dataset(cfg.data.train_dir, n_train, seconds, seed=1, sample_rate=cfg.model.sample_rate)
    held_out = write_dataset(cfg.data.val_dir, n_val, seconds, seed=2, sample_rate=cfg.model.sample_rate)
    run_dir = Path(cfg.run_dir)
    if run_dir.exists():
        say(f"    (replacing the previous demo run in {run_dir})")
        shutil.rmtree(run_dir)

    threads = torch.get_num_threads()   # the scoring below runs outside train(): same threads
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    try:
        return _train_and_compare(cfg, held_out[0], say, started, out)
    finally:
        torch.set_num_threads(threads)


def _train_and_compare(cfg, held_out: Path, say: "_Printer", started: float, out: Path) -> tuple[Scores, Scores]:
    import soundfile as sf

    from lyra.core.atomic import atomic_path
    from lyra.model.checkpoint import load_model
    from lyra.model.vae import build_model
    from lyra.train.engine import train

    run_dir = Path(cfg.run_dir)
    data, rate = sf.read(str(held_out), dtype="float32", always_2d=True)
    clip = torch.from_numpy(data.T.copy())                  # [T, C] -> [C, T]
    torch.manual_seed(cfg.seed)                              # the same initial weights as training
    untrained = build_model(cfg.model)
    before, recon_before = reconstruction_scores(untrained, clip)

    say(f"2/4 training the small model ({sum(p.numel() for p in untrained.parameters()):,} "
        f"parameters) for {cfg.optim.max_steps} steps on the CPU ...")
    train(cfg, stream=say.stream)

    say("3/4 encoding and decoding the held-out clip with the trained checkpoint ...")
    checkpoint = trained_checkpoint(run_dir)
    model = load_model(checkpoint)
    after, recon_after = reconstruction_scores(model, clip)
    for name, audio in (("untrained", recon_before), ("trained", recon_after)):
        with atomic_path(out / f"held-out-{name}.wav") as tmp:
            sf.write(str(tmp), audio.clamp(-1, 1).T.numpy(), rate, subtype="PCM_16", format="WAV")

    validation = checkpoint_validation(run_dir / "metrics.jsonl", best=checkpoint.name == "best.pt")
    say(f"4/4 held-out clip {held_out} (the whole {clip.shape[-1] / rate:.1f} s), reconstructed from its "
        f"latent by the untrained model and by {checkpoint.name}:")
    say(f"    {'':28}{'SI-SDR (dB, higher is better)':>31}{'mel distance (lower is better)':>33}")
    say(f"    {'untrained, held-out clip':28}{before.si_sdr:>31.2f}{before.mel_distance:>33.3f}")
    say(f"    {'trained, held-out clip':28}{after.si_sdr:>31.2f}{after.mel_distance:>33.3f}")
    if validation is not None:
        say(f"    {'trained, validation crops *':28}{validation['si_sdr']:>31.2f}{validation['mel_distance']:>33.3f}")
        say(f"    * the training log's validation at step {validation['step']}: the mean over up to "
            f"{cfg.data.val_clips} peak-normalised crops")
        say(f"      of {cfg.data.segment_length:,} samples ({cfg.data.segment_length / rate:.2f} s) "
            "from the held-out clips, not the whole clip above")
    say("    The STFT loss teaches magnitudes first: the mel distance falls within minutes, while SI-SDR,")
    say("    which also needs the waveform's phase, rises from 'unrelated' and turns positive only after")
    say("    far longer training of a larger model (configs/default.toml).")
    say(f"done in {time.perf_counter() - started:.0f} s. Listen: {out}/held-out-untrained.wav, "
        f"{out}/held-out-trained.wav (original: {held_out}); validation audio and spectrograms in "
        f"{run_dir}/samples; metrics in {run_dir}/metrics.jsonl.")
    say(f"Your own audio: lyra encode song.wav song.lyra -c {checkpoint}; "
        f"lyra decode song.lyra decoded.wav -c {checkpoint}")
    return before, after


class _Printer:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def checkpoint_validation(metrics: Path, best: bool) -> dict | None:
    """The validation record (metrics.jsonl) of the checkpoint the demo scores: the last one
    marked best for best.pt, else the last one; None if the run never validated."""
    from lyra.train.metrics_log import read_metrics

    records = [r for r in read_metrics(metrics) if r.get("split") == "val" and (r.get("best") or not best)] \
        if metrics.exists() else []
    return records[-1] if records else None


def trained_checkpoint(run_dir: Path) -> Path:
    """best.pt (lowest validation loss) if the run validated, else latest.pt."""
    best = run_dir / "best.pt"
    return best if best.exists() else run_dir / "latest.pt"
