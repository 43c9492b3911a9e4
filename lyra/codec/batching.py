"""Encoding many files in batches (``lyra encode DIR OUT --batch-size N``), each file's latents
those it gets encoded alone, and posterior samples (``--sample``).

    for item, outcome in encode_batches(codec, items, batch_size=16, dtype="float16", downmix=False):
        ...   # outcome: a `Written`, or the exception that file met

Why batches of *equal frame counts* only: `VAE.encode` zero-pads a clip of T samples to
F * hop (F = ceil(T / hop)) and the encoder's convolutions zero-pad at the edges of that
length, so clips with the same F, each zero-padded to F * hop, see exactly the input each
sees alone; the batch changes nothing but the kernels' summation order (float rounding;
tests/test_batched_preencode.py measures the bound). Padding a clip further, to a longer
clip's length, would leak: past its end the activations are not zero, and its last frames
change. So files are taken in order of duration (shortest first), grouped by their exact
frame count, and a group is encoded once it holds N files, or once the files have moved on
to groups more than two frames longer (which bounds the clips held in memory).

``--sample`` draws z = mean + exp(logvar / 2) * eps with eps from a generator seeded per
file (`file_seed`: the job's seed and the output's relative path), on the CPU: the same
sample whatever the batch, the process or the device. Only the Gaussian (vae) bottleneck
has a posterior to sample. See docs/latent-datasets.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from lyra.codec.inference import encode_mean, model_device_dtype
from lyra.codec.statistics import Moments, moments_of
from lyra.core.errors import LyraError

if TYPE_CHECKING:
    from lyra.codec.codec import Codec

HOLD_FRAMES = 2     # groups this many frames shorter than the current file's are encoded


@dataclass(frozen=True)
class Item:
    """One file of a batched job: the job's `index` for it, its paths, its probed duration
    (for the order) and, with --sample, its seed (None: the posterior mean)."""

    index: int
    source: Path
    target: Path
    seconds: float = 0.0
    seed: Optional[int] = None


@dataclass(frozen=True)
class Written:
    """What was written for one file: its lengths at the model's rate, its latents' `Moments`
    as stored, and a truncation warning (as `EncodedFile.truncation`)."""

    samples: int
    frames: int
    moments: Moments
    truncation: Optional[str] = None


Outcome = Union[Written, BaseException]


def file_seed(seed: int, relative: str) -> int:
    """The --sample seed of the output at `relative` (a path inside OUT, as a posix string)."""
    digest = hashlib.sha256(f"{seed}\0{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1          # a non-negative int64


def check_batching(codec: Codec, sample: bool) -> None:
    """Refuse --sample, and --batch-size, for a model without a Gaussian posterior (fsq, rvq,
    ...): batches here are of float latents (one file at a time encodes integer codes)."""
    name = codec.config.bottleneck
    if name != "vae":
        if sample:
            raise LyraError(f"--sample: draws from the Gaussian posterior of the vae bottleneck; this model's "
                            f"bottleneck is '{name}'")
        raise LyraError(f"--batch-size: batches float latents (the vae bottleneck); this model's bottleneck is "
                        f"'{name}': encode its codes with --batch-size 1")


def encode_latents(codec: Codec, audio: torch.Tensor, seeds: Sequence[Optional[int]]) -> torch.Tensor:
    """[B, C, F * hop] audio -> [B, D, F] float32 latents on the CPU: posterior means, or
    samples for the items whose seed is not None."""
    if all(seed is None for seed in seeds):
        return encode_mean(codec.model, audio)                               # [B, C, T] -> [B, D, F]
    device, dtype = model_device_dtype(codec.model)
    with torch.inference_mode():
        mean, logvar = codec.model.encode(audio.to(device=device, dtype=dtype))   # 2 x [B, D, F]
    mean, logvar = mean.float().cpu(), logvar.float().cpu()
    out = mean.clone()
    for b, seed in enumerate(seeds):
        if seed is not None:
            eps = torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(seed))   # [D, F]
            out[b] = mean[b] + torch.exp(0.5 * logvar[b]) * eps
    return out


def encode_batches(codec: Codec, items: Sequence[Item], *, batch_size: int, dtype: str,
                   downmix: bool) -> Iterator[tuple[Item, Outcome]]:
    """Encode and write every item (see the module doc); each yielded once, with what was
    written or the exception it met (reading it, encoding it, writing it)."""
    from lyra.audio.reading import load_audio

    if batch_size < 1:
        raise LyraError(f"--batch-size: must be at least 1, got {batch_size}")
    cfg = codec.config
    pending: dict[int, list[tuple[Item, torch.Tensor, Any]]] = {}
    for item in sorted(items, key=lambda it: (it.seconds, it.index)):
        try:
            x, info = load_audio(str(item.source), cfg.sample_rate, cfg.channels, downmix)   # [C, T]
        except Exception as exc:  # noqa: BLE001 - this file's failure, reported by the job
            yield item, exc
            continue
        frames = -(-x.shape[-1] // cfg.hop_length)
        group = pending.setdefault(frames, [])
        group.append((item, x, info))
        if len(group) >= batch_size:
            yield from _encode_group(codec, pending.pop(frames), frames, dtype)
        for shorter in [f for f in pending if f < frames - HOLD_FRAMES]:
            yield from _encode_group(codec, pending.pop(shorter), shorter, dtype)
    for frames in sorted(pending):
        yield from _encode_group(codec, pending.pop(frames), frames, dtype)


def _encode_group(codec: Codec, group: list[tuple[Item, torch.Tensor, Any]], frames: int,
                  dtype: str) -> Iterator[tuple[Item, Outcome]]:
    """Encode files of `frames` frames each as one batch and write them; when the batch fails
    (out of memory, ...), each file alone, so that a failure is that file's."""
    full = frames * codec.config.hop_length
    x = torch.stack([F.pad(clip, (0, full - clip.shape[-1])) for _, clip, _ in group])   # B x [C, T] -> [B, C, F*hop]
    try:
        z = encode_latents(codec, x, [item.seed for item, _, _ in group])                 # [B, C, F*hop] -> [B, D, F]
    except Exception as exc:  # noqa: BLE001 - retried one by one below
        if len(group) == 1:
            yield group[0][0], exc
            return
        for one in group:
            yield from _encode_group(codec, [one], frames, dtype)
        return
    for (item, clip, info), latents in zip(group, z):
        try:
            yield item, _write(codec, item.target, latents, clip.shape[-1], info, dtype)
        except Exception as exc:  # noqa: BLE001 - this file's failure, reported by the job
            yield item, exc


def _write(codec: Codec, target: Path, latents: torch.Tensor, samples: int, info: Any, dtype: str) -> Written:
    """`latents` [D, F] as the `.lyra` file `target` (atomically), as `Codec.encode_file` writes it."""
    from lyra.audio.container import stored
    from lyra.codec.files import latent_header, write_whole

    header = latent_header(codec.model, codec.fingerprint, dtype, info.sample_rate, info.channels)
    target.parent.mkdir(parents=True, exist_ok=True)
    trailer = write_whole(str(target), header, latents, samples, info.frames)
    return Written(trailer.num_samples, trailer.num_frames, moments_of(stored(latents, dtype)), info.truncation)


# ---------------------------------------------------------------------------------------
# What a folder holds: means or samples (OUT/.lyra-posterior.json, written by --sample runs)
# ---------------------------------------------------------------------------------------
MARKER = ".lyra-posterior.json"


def _describe(marker: Optional[dict]) -> str:
    return "posterior means" if marker is None else f"posterior samples of --seed {marker.get('seed')}"


def read_marker(folder: Union[str, Path]) -> Optional[dict]:
    """What a --sample run left in `folder` (None: none, so posterior means)."""
    import json

    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return {"posterior": "sample", "seed": "?"}        # unreadable: not means, at least
    return data if isinstance(data, dict) else {"posterior": "sample", "seed": "?"}


def check_posterior(out: str, sample: bool, seed: int, force: bool, complete: bool) -> Optional[str]:
    """Before a folder job encodes: refuse (the line to say) to resume a folder of means with
    --sample or the reverse, or samples of another seed, when complete outputs would be kept;
    else leave the marker saying what the folder will hold."""
    import json

    from lyra.core.atomic import atomic_write

    have, want = read_marker(out), ({"posterior": "sample", "seed": seed} if sample else None)
    if complete and not force and have != want:
        return (f"{out}: holds {_describe(have)}, and this run asks for {_describe(want)} (pass --force to "
                "encode every file again, or use another OUT)")
    if want is not None and have != want:
        Path(out).mkdir(parents=True, exist_ok=True)
        with atomic_write(Path(out) / MARKER) as f:
            f.write(json.dumps(want, sort_keys=True).encode() + b"\n")
    elif want is None and have is not None:
        (Path(out) / MARKER).unlink(missing_ok=True)
    return None


def posterior_of(paths: Sequence[Path]) -> str:
    """"sample" when the folder holding `paths` (or one above it) was written with --sample."""
    import os

    if not paths:
        return "mean"
    here = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return "sample"
    return "mean"
