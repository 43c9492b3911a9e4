"""Validation during training (rank 0), and what it writes: metrics, audio, pictures.

Every `logging.eval_every` steps and at the end, the validation crops are reconstructed from
their posterior means, with the EMA weights when [ema] is on. Logged: the reconstruction loss
(without the KL term, whose weight changes during annealing, and the adversarial terms), its
terms, the KL term, SI-SDR, mel distance and multi-resolution STFT distance;
`checkpoint.best_metric` picks best.pt. Written: the first `logging.val_audio` clips (original
and reconstruction) as WAV with their spectrogram pictures, and metrics.png redrawn.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from lyra.core.extras import installed
from lyra.core.progress import Progress
from lyra.eval.metrics import mel_distance, si_sdr, stft_distance
from lyra.model.vae import VAE
from lyra.pictures.plots import write_metrics_plot
from lyra.pictures.png import write_png
from lyra.pictures.spectrogram import pixel_image, spectrogram_picture
from lyra.train.config import BEST_METRICS, TrainConfig
from lyra.train.data import CropSpec
from lyra.train.ema import EMA
from lyra.train.losses.reconstruction import ReconstructionLoss
from lyra.train.metrics_log import MetricsLog, load_records


class BestValue:
    """The best value of `checkpoint.best_metric` so far (+-inf: no validation yet)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.higher_is_better = BEST_METRICS[metric]
        self.value = -math.inf if self.higher_is_better else math.inf

    def update(self, value: float) -> bool:
        """Take `value` if it is the best so far; whether it is."""
        best = value > self.value if self.higher_is_better else value < self.value
        if best:
            self.value = value
        return best


class Validation:
    """The run's validation: its crops ([N, C, T], None without any or off rank 0) and the best value."""

    def __init__(self, cfg: TrainConfig, clips: torch.Tensor | None, *, model: VAE, ema: EMA | None,
                 loss: ReconstructionLoss, device: torch.device, dtype: torch.dtype, spec: CropSpec,
                 run_dir: Path) -> None:
        self.cfg = cfg
        self.clips = clips
        self.model = model
        self.ema = ema
        self.loss = loss
        self.dtype = dtype
        self.device = device
        self.spec = spec
        self.run_dir = run_dir
        self.best = BestValue(cfg.checkpoint.best_metric)

    @torch.no_grad()
    def __call__(self, step: int, log: MetricsLog, progress: Progress) -> bool:
        """Validate at `step`: log, write audio and pictures; whether `checkpoint.best_metric`
        is the best so far."""
        weights = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with weights:
            values, recons = self.evaluate()
        best = self.best.update(values[self.best.metric])
        log.write("val", step, {**values, "best": best, "ema": self.ema is not None})
        progress.log(f"step {step}: validation loss {values['loss']:.4f}, SI-SDR {values['si_sdr']:.2f} dB, "
                     f"mel distance {values['mel_distance']:.3f}, STFT distance {values['stft_distance']:.3f}"
                     + (" (EMA)" if self.ema is not None else "") + (f" (best {self.best.metric})" if best else ""))
        if recons:
            self.write_media(step, torch.cat(recons)[: self.cfg.logging.val_audio], log)
        if self.cfg.logging.plots and installed("matplotlib"):
            write_metrics_plot(load_records(log.path), self.run_dir / "metrics.png", f"{self.run_dir.name}: step {step}")
        return best

    def evaluate(self) -> tuple[dict[str, float], list[torch.Tensor]]:
        """The metrics, averaged over the crops (by metrics.jsonl key), and the first
        reconstructions (at least `logging.val_audio`, on the CPU)."""
        self.model.eval()
        batch = self.cfg.data.batch_size
        keys = ("loss", "sc", "log_mag", "waveform", *self.model.bottleneck.TERMS, "si_sdr", "mel_distance",
                "stft_distance")
        if self.loss.mel is not None:
            keys += ("mel",)
        sums = dict.fromkeys(keys, 0.0)
        recons = []
        for i in range(0, len(self.clips), batch):
            audio = self.clips[i:i + batch].to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                recon, q = self.model.reconstruct(audio)             # [B, C, T] -> z [B, D, F] -> [B, C, T]
                                                                     # (vae: z = the posterior mean)
            recon = recon.float()
            rec = self.loss.weighted(self.loss.terms(recon, audio))
            n = audio.shape[0]
            sums["loss"] += float(rec.total()) * n
            for key, value in rec.by_name().items():
                if key in sums:                                      # mel: only with its loss
                    sums[key] += float(value) * n
            for key, value in q.terms.items():                     # the bottleneck's: kl, or commitment...
                sums[key] += float(value) * n
            sums["si_sdr"] += float(si_sdr(audio, recon).sum())
            sums["mel_distance"] += float(mel_distance(audio, recon, self.spec.sample_rate).sum())
            sums["stft_distance"] += float(stft_distance(audio, recon).sum())
            if len(recons) * batch < self.cfg.logging.val_audio:
                recons.append(recon.cpu())
        self.model.train()
        return {k: v / len(self.clips) for k, v in sums.items()}, recons

    def write_media(self, step: int, recons: torch.Tensor, log: MetricsLog) -> None:
        """Each clip's original and reconstruction as WAV and its spectrogram picture as PNG
        (`lyra.pictures.spectrogram`: labelled with `logging.plots` and matplotlib), in
        run_dir/samples/step-N/; the same to the trackers."""
        import soundfile as sf

        from lyra.core.atomic import atomic_path

        folder = self.run_dir / "samples" / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        clips = []
        for i, recon in enumerate(recons):
            original = self.clips[i]
            for name, audio in (("original", original), ("reconstruction", recon)):
                with atomic_path(folder / f"clip{i}-{name}.wav") as tmp:
                    sf.write(str(tmp), audio.clamp(-1, 1).T.numpy(), self.spec.sample_rate, subtype="PCM_16", format="WAV")
            if self.cfg.logging.plots:
                picture = spectrogram_picture(original, recon, self.spec.sample_rate, f"step {step}: validation clip {i}")
            else:
                picture = pixel_image(original, recon)
            write_png(folder / f"clip{i}.png", picture)
            clips.append((original, recon, picture))
        log.media(step, clips, self.spec.sample_rate)
