"""`lyra export`: a checkpoint's model as a weights-only safetensors file (`export_model`).

The file holds the weights the checkpoint stands for (its EMA weights when it has them,
unless asked for the raw ones) and, in its metadata, what it takes to rebuild the model, but
no training state; its format and its reader are `lyra.model.export_format`. One checkpoint
always exports to the same bytes. See docs/codec.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from lyra.core.atomic import atomic_path
from lyra.core.errors import LyraError
from lyra.core.version import version
from lyra.model.checkpoint import read_checkpoint, weights_fingerprint
from lyra.model.export_format import FORMAT, FORMAT_VERSION
from lyra.model.stored_model import check_loadable, component_providers, weights_checksum


def export_model(checkpoint: str | Path, out: str | Path, ema: bool = True,
                 latent_stats: dict | None = None) -> dict[str, str]:
    """Write the model `checkpoint` stands for to `out` (atomically) as a weights-only
    safetensors file: its EMA weights when it has them and `ema`, else its trained weights.
    `latent_stats` (`lyra.codec.statistics.LatentStats.to_dict`, of this model's latents; by
    default the checkpoint's own, if it has them for these weights) go in the metadata, so
    `lyra.Codec.load` gives them back. Returns the metadata written (see
    `lyra.model.export_format`)."""
    from safetensors.torch import save_file

    source = str(checkpoint)
    state = read_checkpoint(checkpoint)
    config = check_loadable(state, source, ema)
    use_ema = ema and "ema" in state
    weights = {**state["model"], **state["ema"]} if use_ema else dict(state["model"])
    which = "ema" if use_ema else "model"
    fingerprint = (state.get("fingerprints") or {}).get(which) or weights_fingerprint(config, weights)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(config.to_dict(), sort_keys=True),
        "fingerprint": fingerprint,
        "weights": state.get("export_weights", which),   # an export of an export keeps what it holds
        "providers": json.dumps(state.get("providers") or component_providers(config), sort_keys=True),
        "lyra_version": version(),
    }
    stats = latent_stats if latent_stats is not None else state.get("latent_stats")
    if isinstance(stats, dict) and stats.get("model_fingerprint") == fingerprint:
        metadata["latent_stats"] = json.dumps(stats, sort_keys=True)
    elif latent_stats is not None:
        raise LyraError(f"--latent-stats: computed from model {stats.get('model_fingerprint')}'s latents, but "
                        f"{source} exports model {fingerprint}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    metadata["checksum"] = weights_checksum(tensors)   # verified on load: a damaged file is found
    with atomic_path(out, suffix=".tmp") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_header(tmp)
    return metadata


def _sort_header(path: Path) -> None:
    """Rewrite the header of the safetensors file `path` with its keys sorted, in place (the
    same length: only the order changes), so that one checkpoint always exports to the same
    bytes; safetensors writes its metadata in no fixed order."""
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= length:   # always, unless a future safetensors writes a more compact header
            f.seek(8)
            f.write(text.ljust(length, b" "))


