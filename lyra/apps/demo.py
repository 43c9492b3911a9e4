"""The demo: synthesise a small data set, train the small model on it for a few minutes on a
CPU, and show on a held-out clip that reconstructions got better.

    lyra demo                      # writes demo-out/: data/, run/, held-out WAVs
    lyra demo --steps 50           # a shorter run
    lyra demo --bottleneck rvq     # integer codes instead of float latents: run-rvq/, its bitrate

Its config is `demo_config(out, bottleneck)`; configs/demo.toml, configs/demo-fsq.toml and
configs/demo-rvq.toml are the same configs for ``out = demo-out`` (``lyra train
configs/demo.toml`` after a demo has generated the data). The three differ only in
``[model] bottleneck``, its options and ``run_dir``: same model, data, schedule and steps.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import torch

from lyra.core.errors import LyraError
from lyra.model.config import ModelConfig
from lyra.model.vae import VAE

TRAIN_FILES, VAL_FILES, CLIP_SECONDS = 32, 4, 4.0
# configs/demo.toml is `commented_toml(demo_config("demo-out"), DEMO_TOML_HEADER)`, and
# configs/demo-NAME.toml is `commented_toml(demo_config("demo-out", NAME), demo_toml_header(NAME))`.
DEMO_TOML_HEADER = """The demo run (`lyra demo` trains this after synthesising its data in demo-out/data):
the small model on 16,384-sample crops, a brisk learning rate, a few minutes on a CPU.
After a demo has generated the data, `lyra train configs/demo.toml` trains the same run."""

# The demo's bottlenecks and their options ([model.options.NAME]) for the small model (latent_dim
# 16, 44100 / 2048 = 21.53 frames/s). fsq and rvq store 80 bits per frame, 1.72 kbit/s: rvq as 8
# codebooks of 1,024 codes (10 bits), of which the first 1..8 decode (quantiser dropout),
# descript-audio-codec's lookup in 8 dimensions, k-means initialised from the first crops (with
# DAC's random codebooks every quantiser of this demo collapsed to one code by step 50:
# BENCHMARKS.md); fsq as 8 groups of levels (8, 5, 5, 5), 1,000 codes (10 bits) each, all of
# which decode together.
DEMO_BOTTLENECKS: dict[str, dict[str, object]] = {
    "vae": {},
    "fsq": {"levels": [8, 5, 5, 5], "groups": 8},
    "rvq": {"num_quantizers": 8, "codebook_size": 1024, "codebook_dim": 8, "quantizer_dropout": 0.5,
            "codebook_update": "loss", "init": "kmeans", "dead_code_threshold": 0.0},
}
_HEADERS = {
    "fsq": """The demo run with a finite-scalar-quantisation bottleneck (`lyra demo --bottleneck fsq` trains
this after synthesising its data in demo-out/data): configs/demo.toml's model, data and schedule,
its latent stored as 8 integer codes per frame (8 groups of levels 8, 5, 5, 5: 1,000 codes, 10 bits
each; 1.72 kbit/s, the bitrate of configs/demo-rvq.toml with all its quantisers).
After a demo has generated the data, `lyra train configs/demo-fsq.toml` trains the same run.""",
    "rvq": """The demo run with a residual-VQ bottleneck (`lyra demo --bottleneck rvq` trains this after
synthesising its data in demo-out/data): configs/demo.toml's model, data and schedule, its latent
stored as the codes of 8 codebooks of 1,024 codes (10 bits each: 1.72 kbit/s), k-means initialised
from the first training crops; trained with quantiser dropout, so the first 1..8 decode alone
(0.22..1.72 kbit/s, `lyra encode --quantizers N`).
After a demo has generated the data, `lyra train configs/demo-rvq.toml` trains the same run.""",
}


def check_bottleneck(bottleneck: str) -> str:
    """`bottleneck` if the demo has settings for it, else a one-line `LyraError`."""
    if bottleneck not in DEMO_BOTTLENECKS:
        raise LyraError(f"--bottleneck: must be one of {', '.join(DEMO_BOTTLENECKS)}, got {bottleneck!r}")
    return bottleneck


def demo_toml_header(bottleneck: str = "vae") -> str:
    """The comment at the top of configs/demo.toml (vae) or configs/demo-NAME.toml."""
    return _HEADERS.get(check_bottleneck(bottleneck), DEMO_TOML_HEADER)


def run_name(bottleneck: str = "vae") -> str:
    """The run folder's name under the demo's folder: run (vae, as always), run-fsq, run-rvq."""
    return "run" if check_bottleneck(bottleneck) == "vae" else f"run-{bottleneck}"


def demo_config(out: str | Path = "demo-out", bottleneck: str = "vae"):
    """The demo's run: the small model, short crops, a brisk learning-rate schedule; with
    `bottleneck` (vae, fsq, rvq) and its `DEMO_BOTTLENECKS` options, training into
    ``out/run_name(bottleneck)``. Nothing else differs between the three."""
    from lyra.train.config import (CheckpointConfig, DataConfig, LoggingConfig, LossConfig,
                                   OptimConfig, RuntimeConfig, TrainConfig)

    out = Path(out).as_posix()
    model = ModelConfig.small()
    if check_bottleneck(bottleneck) != "vae":
        model = replace(model, bottleneck=bottleneck, options={bottleneck: dict(DEMO_BOTTLENECKS[bottleneck])})
    return TrainConfig(
        run_dir=f"{out}/{run_name(bottleneck)}",
        seed=0,
        model=model,
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


def reconstruction_scores(model: VAE, clip: torch.Tensor, quantizers: int | None = None) -> tuple[Scores, torch.Tensor]:
    """Encode [C, T] -> what a .lyra file stores (the posterior mean, or integer codes: the
    first `quantizers` rows of a residual bottleneck's) -> decode; (SI-SDR, mel distance),
    reconstruction."""
    from lyra.eval.metrics import mel_distance, si_sdr

    model.eval()
    with torch.inference_mode():
        stored = model.encode_latents(clip[None], quantizers)          # [1, C, T] -> [1, D, F] or [1, Q, F]
        recon = model.decode_latents(stored, clip.shape[-1])[0]        # -> [1, C, T] -> [C, T]
    return Scores(float(si_sdr(clip, recon)), float(mel_distance(clip, recon, model.config.sample_rate))), recon


def run_demo(out: str | Path = "demo-out", steps: int | None = None, stream: TextIO | None = None,
             files: tuple[int, int, float] = (TRAIN_FILES, VAL_FILES, CLIP_SECONDS),
             bottleneck: str = "vae") -> tuple[Scores, Scores]:
    """Generate data, score the untrained model, train, score the trained one; print both.

    `files` is (training clips, held-out clips, seconds per clip); `bottleneck` one of
    `DEMO_BOTTLENECKS` (a discrete one also prints its bitrate, and an rvq its scores with fewer
    quantisers).
    """
    stream = stream or sys.stdout
    out = Path(out)
    cfg = demo_config(out, bottleneck)
    if steps is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, max_steps=steps))
    say = _Printer(stream)

    started = time.perf_counter()
    n_train, n_val, seconds = files
    say(f"1/4 synthesising {n_train} training and {n_val} held-out clips of {seconds:g} s "
        f"(voiced, gliding pitch, pauses) in {out}/data ...")
    held_out = synthesise_data(cfg, files)
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


def synthesise_data(cfg, files: tuple[int, int, float] = (TRAIN_FILES, VAL_FILES, CLIP_SECONDS)) -> list[Path]:
    """The demo's data set in `cfg`'s train and val folders (the same clips every time); the
    held-out clips' paths."""
    from lyra.audio.synth import write_dataset

    n_train, n_val, seconds = files
    write_dataset(cfg.data.train_dir, n_train, seconds, seed=1, sample_rate=cfg.model.sample_rate)
    return write_dataset(cfg.data.val_dir, n_val, seconds, seed=2, sample_rate=cfg.model.sample_rate)


def _describe(model: VAE) -> str:
    """'the small model (N parameters)' and, for a discrete bottleneck, what it stores."""
    b = model.bottleneck
    text = f"the small model ({sum(p.numel() for p in model.parameters()):,} parameters)"
    if not b.discrete:
        return text
    kind = f"{b.num_quantizers} residual codebooks" if b.residual else f"{b.num_quantizers} groups"
    return f"{text} with an {model.config.bottleneck} bottleneck ({kind} of {b.codebook_size:,} codes)"


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

    say(f"2/4 training {_describe(untrained)} for {cfg.optim.max_steps} steps on the CPU ...")
    train(cfg, stream=say.stream)

    say("3/4 encoding and decoding the held-out clip with the trained checkpoint ...")
    checkpoint = trained_checkpoint(run_dir)
    model = load_model(checkpoint)
    after, recon_after = reconstruction_scores(model, clip)
    tag = "" if cfg.model.bottleneck == "vae" else f"{cfg.model.bottleneck}-"   # vae: the names it always had
    wavs = {name: out / f"held-out-{tag}{name}.wav" for name in ("untrained", "trained")}
    for name, audio in (("untrained", recon_before), ("trained", recon_after)):
        with atomic_path(wavs[name]) as tmp:
            sf.write(str(tmp), audio.clamp(-1, 1).T.numpy(), rate, subtype="PCM_16", format="WAV")

    validation = checkpoint_validation(run_dir / "metrics.jsonl", best=checkpoint.name == "best.pt")
    say(f"4/4 held-out clip {held_out} (the whole {clip.shape[-1] / rate:.1f} s), reconstructed from its "
        f"{'codes' if model.discrete else 'latent'} by the untrained model and by {checkpoint.name}:")
    say(f"    {'':28}{'SI-SDR (dB, higher is better)':>31}{'mel distance (lower is better)':>33}")
    say(f"    {'untrained, held-out clip':28}{before.si_sdr:>31.2f}{before.mel_distance:>33.3f}")
    say(f"    {'trained, held-out clip':28}{after.si_sdr:>31.2f}{after.mel_distance:>33.3f}")
    if validation is not None:
        say(f"    {'trained, validation crops *':28}{validation['si_sdr']:>31.2f}{validation['mel_distance']:>33.3f}")
        say(f"    * the training log's validation at step {validation['step']}: the mean over up to "
            f"{cfg.data.val_clips} peak-normalised crops")
        say(f"      of {cfg.data.segment_length:,} samples ({cfg.data.segment_length / rate:.2f} s) "
            "from the held-out clips, not the whole clip above")
    if model.discrete:
        _say_bitrates(model, clip, say)
    say("    The STFT loss teaches magnitudes first: the mel distance falls within minutes, while SI-SDR,")
    say("    which also needs the waveform's phase, rises from 'unrelated' and turns positive only after")
    say("    far longer training of a larger model (configs/default.toml).")
    say(f"done in {time.perf_counter() - started:.0f} s. Listen: {wavs['untrained']}, "
        f"{wavs['trained']} (original: {held_out}); validation audio and spectrograms in "
        f"{run_dir}/samples; metrics in {run_dir}/metrics.jsonl.")
    fewer = " [--quantizers N]" if model.discrete and model.bottleneck.residual else ""
    say(f"Your own audio: lyra encode song.wav song.lyra -c {checkpoint}{fewer}; "
        f"lyra decode song.lyra decoded.wav -c {checkpoint}")
    return before, after


def quantizer_counts(total: int) -> list[int]:
    """The rows a residual bottleneck's demo scores: 1, 2, 4, ... and all `total`."""
    return sorted({*(2 ** i for i in range(total.bit_length()) if 2 ** i < total), total})


def _say_bitrates(model: VAE, clip: torch.Tensor, say: "_Printer") -> None:
    """A discrete model's bitrate (`lyra.Codec.bitrate`, as `lyra info` shows a file's), and for a
    residual one the held-out clip's scores with its first 1, 2, 4, ... quantisers."""
    from lyra.codec.codec import Codec

    codec = Codec(model, fingerprint="demo")          # the trained model as the codec sees it
    b = model.bottleneck
    frame_rate = model.config.sample_rate / model.hop_length
    say(f"    bitrate: {codec.bitrate() / 1000:.2f} kbit/s ({b.num_quantizers} codes of {b.bits_per_code} bits "
        f"per frame x {frame_rate:.2f} frames/s)")
    if not b.residual:
        return
    say(f"    the first N of its {b.num_quantizers} quantisers alone, a lower bitrate (held-out clip):")
    for n in quantizer_counts(b.num_quantizers):
        scores, _ = reconstruction_scores(model, clip, n)
        label = f"{n} quantiser{'s' if n > 1 else ''}, {codec.bitrate(n) / 1000:.2f} kbit/s"
        say(f"    {label:28}{scores.si_sdr:>31.2f}{scores.mel_distance:>33.3f}")


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
