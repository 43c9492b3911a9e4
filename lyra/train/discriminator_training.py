"""The discriminators of adversarial training (`[adversarial]`), and what trains them.

`Adversary` holds the discriminators the config names (built through the registry, kind
``discriminator``: ``registry.create("discriminator", name, channels=C, sample_rate=SR,
**adversarial.options[name])``), their AdamW optimizer (same weight-decay rule as the
generator's, `lyra.train.optim`), learning-rate schedule, GradScaler (fp16 only), the optional
EnCodec gradient balancer, and their DistributedDataParallel wrapper under torchrun. Every
discriminator is one unit of `torch.compile` (``fullgraph=True``) when ``runtime.compile``
is set.

How the training step (`lyra.train.steps`) uses it, per micro-batch, once ``step >= adversarial.start_step``:

    outputs = adversary.judge(audio, recon)      # ONE discriminator pass over [real; generated]
    real, fake = the two halves of each output
    d_loss = discriminator_loss(real, fake)      -> backward into the discriminators only
    adv, fm = generator_loss(fake), feature_matching_loss(real, fake)
                                                 -> added to the generator's loss, backward into
                                                    the generator only

Both backward passes start from the same discriminator pass (``torch.autograd.backward(...,
inputs=...)`` keeps each loss's gradient to its own network), and both optimizers step once
all micro-batches are in: the two networks are updated simultaneously, from the same
discriminator weights. So gradient accumulation over N micro-batches equals one N-times larger
batch, as it does without adversarial training (the balancer excepted: its norm EMA advances
per micro-batch).

The discriminators' weights, optimizer, scaler and balancer state are training state
(`state_dict`, under the checkpoint's ``train.adversarial``): `lyra train --resume` continues
them exactly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lyra import registry
from lyra.core.errors import LyraError
from lyra.train.config import AdversarialConfig, OptimConfig, TrainConfig
from lyra.train.optim import parameter_groups
from lyra.train.schedule import learning_rate
from lyra.train.state import check_optimizer_state

Outputs = list[tuple[torch.Tensor, list[torch.Tensor]]]


@dataclass(frozen=True)
class AdversarialTerms:
    """One micro-batch's adversarial losses (0-d tensors); the field names are the
    metrics.jsonl keys."""

    d_loss: torch.Tensor              # the discriminators' loss
    adversarial: torch.Tensor         # the generator's adversarial loss, unweighted
    feature_matching: torch.Tensor    # feature matching, unweighted (0 when its weight is)


def _builtins() -> None:
    import lyra.model.discriminators  # noqa: F401  (registers ms_stft and mpd)


def build_discriminator(cfg: AdversarialConfig, name: str, channels: int, sample_rate: int) -> nn.Module:
    """One discriminator from the registry; a one-line error names the config key."""
    _builtins()
    try:
        registry.component("discriminator", name)
    except LyraError as exc:
        raise LyraError(f"adversarial.discriminators: {exc}") from None
    options = dict(cfg.options.get(name, {}))
    try:
        module = registry.create("discriminator", name, channels=channels, sample_rate=sample_rate, **options)
    except LyraError as exc:
        raise LyraError(f"adversarial.options.{name}: {exc}") from None
    except TypeError as exc:
        raise LyraError(f"adversarial.options.{name}: discriminator '{name}' rejected its options ({exc})") from None
    if not isinstance(module, nn.Module):
        raise LyraError(f"adversarial.discriminators: discriminator '{name}' built a {type(module).__name__}, not a torch module")
    return module


def check_discriminators(cfg: TrainConfig) -> None:
    """Every named discriminator exists and accepts its options (built on the meta device:
    nothing is allocated), before the data scan and the model."""
    a = cfg.adversarial
    if not a.enabled:
        return
    with torch.device("meta"):
        for name in a.discriminators:
            build_discriminator(a, name, cfg.model.channels, cfg.model.sample_rate)


class DiscriminatorSet(nn.Module):
    """All discriminators as one module (what DDP wraps): [B, C, T] -> their outputs, concatenated."""

    def __init__(self, discriminators: dict[str, nn.Module]) -> None:
        super().__init__()
        self.discriminators = nn.ModuleDict(discriminators)

    def forward(self, x: torch.Tensor) -> Outputs:
        from lyra.model.discriminators import check_output

        out: Outputs = []
        for name, d in self.discriminators.items():
            out += check_output(name, d(x), x.shape[0])
        return out


class Adversary:
    def __init__(self, cfg: TrainConfig, device: torch.device, dtype: torch.dtype, world_size: int) -> None:
        a = cfg.adversarial
        self.cfg = a
        self.start_step = a.start_step
        # Built from a seed of their own, without touching the global random state: the
        # generator, data and everything else draw exactly what they would without them.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            built = {name: build_discriminator(a, name, cfg.model.channels, cfg.model.sample_rate)
                     for name in a.discriminators}
        self.set = DiscriminatorSet(built).to(device)
        self._check_input(cfg.model.channels, cfg.data.segment_length, device)
        if cfg.runtime.compile:
            from lyra.model.compilation import compile_stage

            for name, d in self.set.discriminators.items():
                compile_stage(d, f"discriminator[{name}]", fullgraph=True)
        self.params = [p for p in self.set.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameter_groups(self.set, a.weight_decay), lr=a.lr,
                                           betas=tuple(a.betas), eps=cfg.optim.eps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.schedule = OptimConfig(lr=a.lr, warmup_steps=a.warmup_steps, schedule=a.schedule, min_lr=min(a.min_lr, a.lr),
                                    max_steps=max(cfg.optim.max_steps - a.start_step, 1))
        self.balancer = None
        if a.balancer:
            from lyra.train.losses.adversarial import Balancer

            weights = {"stft": 1.0, "waveform": cfg.loss.w_waveform, "mel": a.mel_weight,
                       "adversarial": a.adversarial_weight, "feature_matching": a.feature_matching_weight}
            self.balancer = Balancer({k: w for k, w in weights.items() if w > 0})
        self.forward: nn.Module = self.set
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.set, device_ids=ids)

    def _check_input(self, channels: int, length: int, device: torch.device) -> None:
        """One eager pass over a silent training crop: a discriminator that cannot take the
        crop (too short for its windows) or breaks the output contract fails here, by name."""
        with torch.no_grad():
            self.set(torch.zeros(1, channels, length, device=device))

    # -- the step ------------------------------------------------------------------------
    def active(self, step: int) -> bool:
        """Whether optimizer step `step` (0-based, the one about to be taken) trains adversarially."""
        return step >= self.start_step

    def set_lr(self, step: int) -> float:
        lr = learning_rate(step - self.start_step, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def no_sync(self, sync: bool):
        """DDP's no_sync for a micro-batch whose gradients are not yet to be synchronised."""
        if sync or not hasattr(self.forward, "no_sync"):
            return contextlib.nullcontext()
        return self.forward.no_sync()

    def judge(self, audio: torch.Tensor, recon: torch.Tensor) -> tuple[Outputs, Outputs]:
        """The discriminators on real `audio` and generated `recon` (one pass over both):
        (outputs for the real half, outputs for the generated half)."""
        n = audio.shape[0]
        outputs = self.forward(torch.cat([audio, recon.to(audio.dtype)]))
        real = [(logits[:n], [f[:n] for f in features]) for logits, features in outputs]
        fake = [(logits[n:], [f[n:] for f in features]) for logits, features in outputs]
        return real, fake

    def losses(self, real: Outputs, fake: Outputs) -> AdversarialTerms:
        """The discriminators' loss, the generator's adversarial loss and feature matching."""
        from lyra.train.losses.adversarial import discriminator_loss, feature_matching_loss, generator_loss

        kind = self.cfg.loss
        d_loss = discriminator_loss(real, fake, kind)
        adv = generator_loss(fake, kind)
        fm = feature_matching_loss(real, fake) if self.cfg.feature_matching_weight else adv.new_zeros(())
        return AdversarialTerms(d_loss, adv, fm)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminators": {name: {k: v.detach().cpu() for k, v in d.state_dict().items()}
                               for name, d in self.set.discriminators.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "balancer": self.balancer.state_dict() if self.balancer is not None else {},
        }

    def load_state_dict(self, state: Any, source: str) -> None:
        """Restore `state_dict`'s output, checked first: one-line errors name `source`."""
        bad = f"{source}: training state 'adversarial'"
        if not isinstance(state, dict) or not isinstance(state.get("discriminators"), dict):
            raise LyraError(f"{bad} has no discriminator weights")
        saved = state["discriminators"]
        names = list(self.set.discriminators)
        if sorted(saved) != sorted(names):
            raise LyraError(f"{bad} holds discriminators {sorted(saved)}, the config names {names}")
        for name, d in self.set.discriminators.items():
            weights = saved[name]
            expected = d.state_dict()
            if not isinstance(weights, dict) or sorted(weights) != sorted(expected):
                raise LyraError(f"{bad}: the weights of discriminator '{name}' do not fit its config "
                                f"(different parameter names)")
            for key, value in expected.items():
                if not isinstance(weights[key], torch.Tensor) or weights[key].shape != value.shape:
                    raise LyraError(f"{bad}: discriminator '{name}' weight {key} does not fit its config "
                                    f"(expected shape {list(value.shape)})")
            d.load_state_dict(weights)
        optimizer = state.get("optimizer")
        if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
                or not isinstance(optimizer.get("param_groups"), list)):
            raise LyraError(f"{bad}: 'optimizer' is not an optimizer's state (state, param_groups)")
        check_optimizer_state(optimizer, self.optimizer, source)
        self.optimizer.load_state_dict(optimizer)
        scaler = state.get("scaler", {})
        if not isinstance(scaler, dict):
            raise LyraError(f"{bad}: 'scaler' must be a table")
        if self.scaler.is_enabled() and scaler:
            self.scaler.load_state_dict(scaler)
        balancer = state.get("balancer", {})
        if not isinstance(balancer, dict):
            raise LyraError(f"{bad}: 'balancer' must be a table")
        if self.balancer is not None:
            self.balancer.load_state_dict(balancer)
