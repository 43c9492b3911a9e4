"""The codec as a library: one object, loaded once, that does what `lyra encode/decode` do.

    codec = Codec.load("model.pt", device="auto")          # model, fingerprint, precision, ...
    z = codec.encode(audio, sample_rate=48000)             # [C, T] float audio -> [D, F] latents
                                                           #   (a discrete model: [Q, F] int64 codes)
    y = codec.decode(z, length=T)                          # [D, F] -> [C, T] at codec.sample_rate
    codec.encode_file("song.wav", "song.lyra", stream=True)
    codec.decode_file("song.lyra", "song.decoded.wav", original_rate=True)

A `Codec` holds a model ready for inference (`lyra.codec.inference.prepare_model`), its
fingerprint and, measured on first use, its streaming plan (`lyra.codec.streaming`). Three
forms of each operation: tensors (`encode`, `decode`, `round_trip`: the whole signal in
memory, or through overlapping chunks with ``stream=True``), iterators (`encode_iter`,
`decode_iter`: pieces of any length in constant memory) and files (`encode_file`,
`decode_file`: `lyra.codec.files`). Streamed results equal whole-signal ones within float
rounding; every error a caller can cause is a one-line `LyraError`. `normalize` and
`denormalize` scale latents with `stats` (`lyra.codec.statistics.LatentStats`, set by hand or
carried by an export). See docs/python-api.md and docs/latent-datasets.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Union

import torch

from lyra.audio.container import check_dtype
from lyra.codec import files
from lyra.codec.files import DecodedFile, EncodedFile, PathLike, ProgressCallback, check_decoded
from lyra.codec.inference import decode_latents, encode_latents, model_device_dtype
from lyra.core.limits import MAX_THREADS
from lyra.core.errors import LyraError, kind_of

if TYPE_CHECKING:
    from lyra.model.config import ModelConfig
    from lyra.audio.container import Header
    from lyra.model.vae import VAE
    from lyra.codec.streaming import StreamingPlan
    from lyra.codec.statistics import LatentStats

__all__ = ["Codec", "DecodedFile", "EncodedFile", "ProgressCallback"]


class Codec:
    """A model ready to encode and decode, with its fingerprint (see the module doc).

    `Codec.load(checkpoint, ...)` from a file; ``Codec(model, fingerprint)`` from a `VAE` in
    memory, which is moved, cast and put in eval mode in place (`prepare_model`); without
    `fingerprint` its weights are hashed once, before any cast. `device` None keeps the model
    where it is.
    """

    def __init__(self, model: VAE, fingerprint: Optional[str] = None, *,
                 device: Optional[Union[str, torch.device]] = None, precision: str = "fp32",
                 compile: bool = False, checkpoint: Optional[PathLike] = None) -> None:
        from lyra.model.checkpoint import model_fingerprint
        from lyra.codec.inference import precision_dtype, prepare_model, resolve_device

        precision_dtype(precision)                  # a bad precision fails before any work
        if fingerprint is None:
            fingerprint = model_fingerprint(model)  # of the weights as given, before any cast
        dev = model_device_dtype(model)[0] if device is None else resolve_device(device)
        self.model = prepare_model(model, device=dev, precision=precision, compile=compile)
        self.fingerprint: str = fingerprint
        self.precision, self.compiled = precision, compile
        self.checkpoint: Optional[Path] = None if checkpoint is None else Path(checkpoint)
        self.stats: Optional[LatentStats] = None    # latent statistics: `normalize`, `denormalize`

    @classmethod
    def load(cls, checkpoint: PathLike, *, device: Union[str, torch.device] = "auto", precision: str = "fp32",
             compile: bool = False, ema: bool = True, threads: Optional[int] = None) -> "Codec":
        """The model of `checkpoint` (from `lyra init-checkpoint`, `lyra train` or `lyra import`),
        with its EMA weights when it has them unless `ema` is False. `device` "auto" is CUDA
        when available; `precision` fp32, bf16 or fp16; `compile` runs `torch.compile` first.
        `threads` sets torch's CPU thread count, for the whole process."""
        from lyra.model.checkpoint import load_for_inference
        from lyra.codec.inference import precision_dtype, resolve_device

        if threads is not None:
            if not 1 <= threads <= MAX_THREADS:
                raise LyraError(f"--threads: must be between 1 and {MAX_THREADS}, got {threads}")
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        precision_dtype(precision)                 # a bad precision fails before the model loads
        model, fingerprint, stats = load_for_inference(checkpoint, dev, ema=ema)
        codec = cls(model, fingerprint, device=dev, precision=precision, compile=compile, checkpoint=checkpoint)
        if stats is not None:                       # carried by `lyra export --latent-stats`
            from lyra.codec.statistics import LatentStats

            codec.stats = LatentStats.from_dict(stats, f"{checkpoint}: latent_stats")
        return codec

    # -- what it is --------------------------------------------------------------------
    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def discrete(self) -> bool:
        """Whether the model's bottleneck gives integer codes (fsq, rvq) rather than float latents."""
        return self.model.discrete

    @property
    def num_quantizers(self) -> int:
        """Code rows per frame (all of them; a residual bottleneck also decodes fewer); 0: float latents."""
        return self.model.bottleneck.num_quantizers

    @property
    def codebook_size(self) -> int:
        """Codes are 0..codebook_size-1 (0: float latents)."""
        return self.model.bottleneck.codebook_size

    def bitrate(self, quantizers: Optional[int] = None) -> float:
        """The codes' bit rate in bit/s with `quantizers` rows (default all): rows x
        ceil(log2 codebook_size) bits per frame x the frame rate. Discrete models only."""
        if not self.discrete:
            raise LyraError("bitrate: this model stores float latents; their size depends on the .lyra dtype")
        rows = self.model.bottleneck.check_quantizers(quantizers)
        return rows * self.model.bottleneck.bits_per_code * self.sample_rate / self.hop_length

    @property
    def device(self) -> torch.device:
        return model_device_dtype(self.model)[0]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (inputs are cast to it; outputs are float32)."""
        return model_device_dtype(self.model)[1]

    @property
    def plan(self) -> StreamingPlan:
        """The model's receptive field and decoder stages, as streaming uses them (measured on
        first use, eagerly, then kept)."""
        from lyra.codec.streaming import streaming_plan

        return streaming_plan(self.model)

    def chunk_frames(self, seconds: float) -> int:
        """Latent frames per streamed chunk for `seconds` of audio (at least one)."""
        if not seconds > 0:
            raise LyraError(f"--chunk-seconds: must be positive, got {seconds}")
        return max(1, round(seconds * self.sample_rate / self.hop_length))

    def __repr__(self) -> str:
        where = f"{self.checkpoint}, " if self.checkpoint is not None else ""
        return (f"Codec({where}model {self.fingerprint}, {self.sample_rate} Hz x {self.channels}, "
                f"{self.device}, {self.precision}{', compiled' if self.compiled else ''})")

    # -- tensors -----------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, *, sample_rate: Optional[int] = None, stream: bool = False,
               chunk_seconds: float = 10.0, quantizers: Optional[int] = None) -> torch.Tensor:
        """Posterior means: [C, T] -> [D, ceil(T' / hop)], or [B, C, T] -> [B, D, F], float32
        on the CPU (T' is T at the model's rate). The mean is deterministic: no sampling.
        A discrete model gives integer codes instead: [Q, F] (or [B, Q, F]) int64, Q =
        `quantizers` (default all; fewer only for a residual bottleneck: a lower bit rate)."""
        x, batched = self._audio(audio, sample_rate)                     # [B, C, T] at the model's rate
        self.model.bottleneck.check_quantizers(quantizers)
        if stream:
            frames = self.chunk_frames(chunk_seconds)
            from lyra.codec.streaming import encode_stream

            z = torch.stack([torch.cat(list(encode_stream(self.model, [item], frames, quantizers)), dim=-1)
                             for item in x])                             # B x [D|Q, F] -> [B, D|Q, F]
        else:
            z = encode_latents(self.model, x, quantizers)                # [B, C, T] -> [B, D|Q, F]
        return z if batched else z[0]

    def decode(self, latents: torch.Tensor, length: Optional[int] = None, *, stream: bool = False,
               chunk_seconds: float = 10.0) -> torch.Tensor:
        """Audio at the model's rate: [D, F] -> [C, length], or [B, D, F] -> [B, C, length],
        float32 on the CPU (a discrete model: integer codes [Q, F] or [B, Q, F] in, Q up to
        `num_quantizers`); `length` (samples, 1..F * hop) defaults to F * hop. Audio that is
        not finite (a model with damaged weights) is a `LyraError`, never returned."""
        z, batched = self._latents(latents, length)
        if stream:
            frames = self.chunk_frames(chunk_seconds)
            from lyra.codec.streaming import decode_stream

            y = torch.stack([torch.cat(list(decode_stream(self.model, [item], frames, length)), dim=-1)
                             for item in z])                             # B x [C, T] -> [B, C, T]
        else:
            y = decode_latents(self.model, z, length)                    # [B, D, F] -> [B, C, T]
        check_decoded(y, "decode")
        return y if batched else y[0]

    def round_trip(self, audio: torch.Tensor, *, sample_rate: Optional[int] = None, dtype: str = "float16",
                   stream: bool = False, chunk_seconds: float = 10.0, quantizers: Optional[int] = None) -> torch.Tensor:
        """Encode, store the latents as a `.lyra` file of `dtype` would, and decode: what
        ``lyra encode`` then ``lyra decode`` give, at the model's rate and channels, the
        input's length: [C, T] -> [C, T'] (or batched). A discrete model's codes are stored
        exactly, `quantizers` rows of them (default all)."""
        from lyra.audio.container import stored

        check_dtype(dtype)
        x, batched = self._audio(audio, sample_rate)                     # [B, C, T]
        z = self.encode(x, stream=stream, chunk_seconds=chunk_seconds, quantizers=quantizers)   # [B, D|Q, F]
        if not self.discrete:                                            # codes are stored exactly
            z = torch.stack([stored(item, dtype) for item in z])         # as a .lyra file holds them
        y = self.decode(z, x.shape[-1], stream=stream, chunk_seconds=chunk_seconds)   # [B, C, T]
        return y if batched else y[0]

    # -- latent statistics -------------------------------------------------------------
    def normalize(self, latents: torch.Tensor, stats: Union[LatentStats, PathLike, None] = None) -> torch.Tensor:
        """(z - mean) / std per channel with `stats` (default: `self.stats`; a
        `LatentStats` or a stats file's path): [D, F] or [B, D, F], same shape."""
        return self._stats(stats).normalize(latents)

    def denormalize(self, latents: torch.Tensor, stats: Union[LatentStats, PathLike, None] = None) -> torch.Tensor:
        """z * std + mean per channel: what `decode` takes back from normalised latents
        (a diffusion model's output)."""
        return self._stats(stats).denormalize(latents)

    def _stats(self, stats: Union[LatentStats, PathLike, None]) -> LatentStats:
        from lyra.codec.statistics import LatentStats

        if stats is None:
            stats = self.stats
        if stats is None:
            raise LyraError("latent statistics: this codec has none; set codec.stats = LatentStats.read(PATH) "
                            "(written beside a manifest, or by `lyra stats`), or pass stats=")
        if not isinstance(stats, LatentStats):
            stats = LatentStats.read(stats)
        if stats.model_fingerprint != self.fingerprint:
            raise LyraError(f"latent statistics: computed from model {stats.model_fingerprint}'s latents, but this "
                            f"codec is model {self.fingerprint}")
        return stats

    # -- iterators ---------------------------------------------------------------------
    def encode_iter(self, blocks: Iterable[torch.Tensor], *, chunk_seconds: float = 10.0,
                    quantizers: Optional[int] = None) -> Iterator[torch.Tensor]:
        """[C, n] audio blocks at the model's rate (any sizes; mono is duplicated) -> [D, f]
        latent blocks (a discrete model: [Q, f] codes), each yielded once determined; their
        concatenation equals `encode` of the concatenated audio (within float rounding; codes
        identical). Memory: one chunk, whatever the length."""
        from lyra.codec.streaming import encode_stream

        return encode_stream(self.model, self._checked_blocks(blocks), self.chunk_frames(chunk_seconds), quantizers)

    def decode_iter(self, latents: Iterable[torch.Tensor], length: Union[int, Callable[[], int], None] = None, *,
                    chunk_seconds: float = 10.0) -> Iterator[torch.Tensor]:
        """[D, f] latent blocks -> [C, n] audio blocks at the model's rate, cropped to `length`
        samples in all (default: frames * hop). `length` may be a callable, asked once the
        latents are exhausted (a streamed `.lyra` file records its length at its end). A block
        that is not finite (a model with damaged weights) is a `LyraError`, never yielded."""
        from lyra.codec.streaming import decode_stream

        return _finite(decode_stream(self.model, latents, self.chunk_frames(chunk_seconds), length), "decode_iter")

    # -- files -------------------------------------------------------------------------
    def encode_file(self, src: PathLike, dst: PathLike, *, stream: bool = False, chunk_seconds: float = 10.0,
                    dtype: str = "float16", downmix: bool = False, progress: Optional[ProgressCallback] = None,
                    quantizers: Optional[int] = None) -> EncodedFile:
        """Encode audio file `src` ("-": stdin) into the `.lyra` file `dst` ("-": stdout).

        Any rate and bit depth (resampled to the model's); mono is duplicated; more channels
        than the model's is an error unless `downmix` (their mean). `stream`: constant memory,
        in chunks of `chunk_seconds`; otherwise the whole file at once. `dtype`: latent storage
        (float16, bfloat16, float32, int8); a discrete model stores its integer codes packed
        instead, `quantizers` rows of them (default all). `dst` appears only when complete.
        """
        check_dtype(dtype)
        frames = self.chunk_frames(chunk_seconds)
        return files.encode_file(self.model, self.fingerprint, str(src), str(dst), frames=frames, stream=stream,
                                 dtype=dtype, downmix=downmix, progress=progress, quantizers=quantizers)

    def decode_file(self, src: PathLike, dst: PathLike, *, stream: bool = False, chunk_seconds: float = 10.0,
                    original_rate: bool = False, original_channels: bool = False, format: Optional[str] = None,
                    subtype: str = "PCM_16", progress: Optional[ProgressCallback] = None) -> DecodedFile:
        """Decode the `.lyra` file `src` ("-": stdin) to a WAV or FLAC `dst` ("-": stdout).

        The file must have been written by this codec's model (its fingerprint is in the
        header). Output at the model's rate and channels, or with `original_rate` the source
        file's rate, with `original_channels` its channel count (a mono source: the mean of
        the decoded channels). `format` wav or flac (default: `dst`'s suffix; wav for "-");
        `subtype` PCM_16, PCM_24 (clipped to [-1, 1]) or FLOAT.
        """
        from lyra.audio.writing import output_format

        output_format(str(dst), format)          # a bad dst is reported before any work
        frames = self.chunk_frames(chunk_seconds)
        return files.decode_file(self.model, self.check_header, str(src), str(dst), frames=frames, stream=stream,
                                 original_rate=original_rate, original_channels=original_channels, format=format,
                                 subtype=subtype, progress=progress)

    def check_header(self, header: Header, name: str) -> None:
        """Refuse (one line) a `.lyra` header written by another model, or altered."""
        from lyra.audio.container import check_model

        model = str(self.checkpoint) if self.checkpoint is not None else "this codec"
        if header.model_fingerprint != self.fingerprint:
            raise LyraError(f"{name}: written by model {header.model_fingerprint}, but {model} is model "
                            f"{self.fingerprint}; decode with the checkpoint that encoded it")
        check_model(header, self.config, name, model)   # a header altered, its CRC redone
        if header.codes:
            b = self.model.bottleneck
            if header.codebook_size != b.codebook_size:
                raise LyraError(f"{name}: holds codes of a {header.codebook_size}-entry codebook; {model} has "
                                f"{b.codebook_size} entries")
            if not b.decodes(header.num_quantizers):
                raise LyraError(f"{name}: holds {header.num_quantizers} code rows per frame; {model} decodes "
                                f"{b.rows_it_decodes()}")

    # -- checks ------------------------------------------------------------------------
    def _audio(self, audio: torch.Tensor, sample_rate: Optional[int]) -> tuple[torch.Tensor, bool]:
        """[C, T] or [B, C, T] float audio -> ([B, channels, T'] at the model's rate, batched)."""
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
            raise LyraError(f"audio: expected a float tensor, got {kind_of(audio)}")
        if audio.dim() not in (2, 3) or audio.shape[-1] < 1:
            raise LyraError(f"audio: expected shape [channels, samples] or [batch, channels, samples] with "
                            f"samples >= 1, got {list(audio.shape)}")
        x = audio if audio.dim() == 3 else audio[None]                        # [C, T] -> [1, C, T]
        if x.shape[1] not in (1, self.channels):
            raise LyraError(f"audio: has {x.shape[1]} channels; the model takes {self.channels} (or mono, "
                            "which is duplicated)")
        if not torch.isfinite(x).all():
            raise LyraError("audio: holds NaN or infinite samples; audio must be finite")
        if sample_rate is not None and sample_rate != self.sample_rate:
            from lyra.audio.resample import resample

            if not isinstance(sample_rate, int) or sample_rate <= 0:
                raise LyraError(f"sample_rate: expected a positive integer, got {sample_rate!r}")
            x = resample(x.float(), sample_rate, self.sample_rate)            # [B, C, T] -> [B, C, T']
        return x.expand(-1, self.channels, -1), audio.dim() == 3             # mono -> [B, channels, T']

    def _latents(self, latents: torch.Tensor, length: Optional[int]) -> tuple[torch.Tensor, bool]:
        """[D, F] or [B, D, F] -> ([B, D, F], batched), with `length` checked against F (a
        discrete model: integer codes [Q, F] or [B, Q, F])."""
        if self.discrete:
            if not isinstance(latents, torch.Tensor) or latents.dim() not in (2, 3) or latents.shape[-1] < 1:
                raise LyraError(f"codes: expected an integer tensor [quantizers, frames] or [batch, quantizers, "
                                f"frames], got {kind_of(latents)}")
            codes = latents if latents.dim() == 3 else latents[None]
            self.model.bottleneck.check_codes(codes)
            full = codes.shape[-1] * self.hop_length
            if length is not None and not 0 < length <= full:
                raise LyraError(f"decode: length must be in 1..{full} for {codes.shape[-1]} frames, got {length}")
            return codes, latents.dim() == 3
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise LyraError(f"latents: expected a float tensor, got {kind_of(latents)}")
        if latents.dim() not in (2, 3) or latents.shape[-2] != self.latent_dim or latents.shape[-1] < 1:
            raise LyraError(f"latents: expected shape [{self.latent_dim}, frames] or [batch, {self.latent_dim}, "
                            f"frames], got {list(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise LyraError("latents: holds NaN or infinite values; latents must be finite")
        full = latents.shape[-1] * self.hop_length
        if length is not None and not 0 < length <= full:
            raise LyraError(f"decode: length must be in 1..{full} for {latents.shape[-1]} frames, got {length}")
        return (latents if latents.dim() == 3 else latents[None]), latents.dim() == 3

    def _checked_blocks(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for i, block in enumerate(blocks):
            if not isinstance(block, torch.Tensor) or block.dim() != 2 or block.shape[0] not in (1, self.channels):
                shape = list(block.shape) if isinstance(block, torch.Tensor) else kind_of(block)
                raise LyraError(f"audio block {i}: expected shape [{self.channels} or 1, samples], got {shape}")
            yield block.expand(self.channels, -1)                            # [1, n] -> [C, n]


def _finite(blocks: Iterator[torch.Tensor], name: str) -> Iterator[torch.Tensor]:
    """`blocks` ([C, n] audio), each checked by `check_decoded` before it is yielded."""
    done = 0
    for block in blocks:
        check_decoded(block, name, done)
        done += block.shape[-1]
        yield block
