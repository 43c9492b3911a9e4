"""The reconstruction loss of training and validation, term by term.

The multi-resolution STFT distance of `lyra.eval.stft` (spectral convergence + log
magnitude, weighted by loss.w_sc and loss.w_log_mag), an L1 waveform term (loss.w_waveform)
and, in adversarial runs, a log-mel L1 term (adversarial.mel_weight: the loss of
`lyra.eval.metrics.mel_distance`, at the model's rate). Every term is a per-example mean, in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from lyra.eval.metrics import MEL_BANDS, MEL_FFT_SIZES
from lyra.eval.stft import MultiResolutionSTFTLoss
from lyra.train.config import TrainConfig


@dataclass(frozen=True)
class ReconstructionTerms:
    """One batch's reconstruction loss by term, each a 0-d fp32 tensor; the field names are
    the metrics.jsonl keys. `ReconstructionLoss.terms` gives waveform and mel unweighted
    (sc and log_mag come weighted from the STFT loss); `ReconstructionLoss.weighted`, all weighted."""

    sc: torch.Tensor          # spectral convergence
    log_mag: torch.Tensor     # L1 log-magnitude distance
    waveform: torch.Tensor    # L1 waveform distance (0 when loss.w_waveform is)
    mel: torch.Tensor         # log-mel L1 distance (0 when the mel weight is)

    def by_name(self) -> dict[str, torch.Tensor]:
        """The terms keyed by name, in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def total(self) -> torch.Tensor:
        """Their sum (of weighted terms: the reconstruction loss)."""
        return self.sc + self.log_mag + self.waveform + self.mel


class ReconstructionLoss:
    """``(recon [B, C, T], audio [B, C, T]) -> ReconstructionTerms``, with the run's weights."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        lc, adv = cfg.loss, cfg.adversarial
        self.stft = MultiResolutionSTFTLoss(lc.fft_sizes, lc.hop_sizes, lc.win_lengths, lc.w_sc, lc.w_log_mag,
                                            lc.n_mels, cfg.model.sample_rate, lc.stereo).to(device)
        self.w_waveform = lc.w_waveform
        self.w_mel = adv.mel_weight if adv.enabled else 0.0
        self.mel = None
        if self.w_mel:   # lyra.eval.metrics.mel_distance's loss, at the model's rate
            self.mel = MultiResolutionSTFTLoss(
                MEL_FFT_SIZES, tuple(n // 4 for n in MEL_FFT_SIZES), MEL_FFT_SIZES, w_sc=0.0, w_log_mag=1.0,
                n_mels=MEL_BANDS, sample_rate=cfg.model.sample_rate).to(device)

    def terms(self, recon: torch.Tensor, audio: torch.Tensor) -> ReconstructionTerms:
        """The terms, waveform and mel unweighted (0 when their weight is)."""
        recon = recon.float()
        sc, log_mag = self.stft.parts(recon, audio)
        zero = recon.new_zeros(())
        waveform = (recon - audio).abs().mean() if self.w_waveform else zero
        mel = self.mel(recon, audio) if self.mel is not None else zero
        return ReconstructionTerms(sc, log_mag, waveform, mel)

    def weighted(self, terms: ReconstructionTerms) -> ReconstructionTerms:
        """`terms` (from `terms`) as they enter the loss: every term weighted."""
        return replace(terms, waveform=self.w_waveform * terms.waveform, mel=self.w_mel * terms.mel)
