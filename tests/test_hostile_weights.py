"""Weight files nobody on the project wrote (issue 22, items 1, 2, 11, 12, 13): non-finite
weights, a flipped bit, a config claiming thousands of layers, hostile shapes and JSON for
`lyra import stable-audio-tools`, and seeded random damage to checkpoints, exports and
stable-audio-tools files. Each is refused with one line naming the file, before anything
large is built; files written before checksums were stored keep loading, with the same
fingerprints. The crafted inputs are made here, by code.
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_helpers import lyra_many, write_wav
from lyra.core.errors import LyraError
from lyra.model.checkpoint import (load_model, load_model_and_fingerprint, model_fingerprint, read_checkpoint,
                                   save_checkpoint)
from lyra.model.config import ModelConfig
from lyra.model.export import export_model
from lyra.model.importers.stable_audio_tools import _LEAVES, import_vae, key_map
from lyra.model.stored_model import weights_checksum
from lyra.model.vae import build_model

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

TINY = ModelConfig.small(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(2, 4))   # hop 8
OOBLECK = ModelConfig(channels=2, base_channels=4, latent_dim=6, c_mults=(1, 2, 4), strides=(2, 4, 4),
                      residual_kernel_size=7, posterior="softplus", decoder_in_kernel=7, decoder_out_bias=False,
                      decoder_block="oobleck_decoder_block")
NAME = "decoder.blocks.0.act.log_beta"    # the weight the crafted files spoil


def one_line_naming(exc: pytest.ExceptionInfo, path: Path, *parts: str) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert all(part in message for part in parts), message


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model's checkpoint (with EMA weights) and its export, both as this Lyra writes them."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = build_model(TINY)
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}
    save_checkpoint(folder / "ck.pt", model, ema=ema)
    export_model(folder / "ck.pt", folder / "ck.safetensors")
    return folder, folder / "ck.pt", folder / "ck.safetensors"


def rewritten_export(source: Path, out: Path, tensors: dict[str, torch.Tensor], checksum: bool = True) -> Path:
    """`source`'s metadata with other tensors: with their checksum (as a writer that computed it
    over them would store it), or with none (an export written before checksums were stored)."""
    with safe_open(str(source), "pt") as f:
        metadata = dict(f.metadata())
    metadata.pop("checksum")
    if checksum:
        metadata["checksum"] = weights_checksum(tensors)
    save_file(tensors, str(out), metadata=metadata)
    return out


def flip_bit_in_tensor(path: Path, out: Path, name: str = NAME, storage: int = 0) -> Path:
    """`path` with one bit flipped in the data of weight `name` (an export) or of tensor
    storage number `storage` (a checkpoint: torch numbers them in the order it pickles them)."""
    data = bytearray(path.read_bytes())
    if data[:2] == b"PK":
        record = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith(f"/data/{storage}"))
        name_length = int.from_bytes(data[record.header_offset + 26:record.header_offset + 28], "little")
        extra = int.from_bytes(data[record.header_offset + 28:record.header_offset + 30], "little")
        offset = record.header_offset + 30 + name_length + extra
    else:
        length = int.from_bytes(data[:8], "little")
        offset = 8 + length + json.loads(data[8:8 + length])[name]["data_offsets"][0]
    data[offset + 1] ^= 0x08
    out.write_bytes(bytes(data))
    return out


# -- item 1: non-finite weights -----------------------------------------------------------
@pytest.mark.parametrize("value, said", [(float("nan"), "NaN"), (float("inf"), "infinite values")])
def test_non_finite_weights_are_refused_when_loading_and_exporting(files, tmp_path, value, said):
    _, ckpt, exported = files
    model = load_model(ckpt, ema=False)
    with torch.no_grad():
        dict(model.named_parameters())[NAME][3] = value
    save_checkpoint(tmp_path / "bad.pt", model)          # its checksum is right: the weights are what was written
    with pytest.raises(LyraError) as info:
        load_model(tmp_path / "bad.pt")
    one_line_naming(info, tmp_path / "bad.pt", f"weight {NAME} holds {said}")
    with pytest.raises(LyraError) as info:
        export_model(tmp_path / "bad.pt", tmp_path / "out.safetensors")
    one_line_naming(info, tmp_path / "bad.pt", NAME)
    assert not (tmp_path / "out.safetensors").exists()

    tensors = load_file(exported)
    tensors[NAME][5] = value
    for checksum in (True, False):
        bad = rewritten_export(exported, tmp_path / f"bad-{checksum}.safetensors", tensors, checksum)
        with pytest.raises(LyraError) as info:
            load_model(bad)
        one_line_naming(info, bad, f"weight {NAME} holds {said}")


def test_non_finite_ema_weights_are_refused(files, tmp_path):
    _, ckpt, _ = files
    state = read_checkpoint(ckpt)
    state["ema"][NAME][0] = float("nan")
    state["checksums"]["ema"] = weights_checksum(state["ema"])
    torch.save(state, tmp_path / "ema.pt")
    with pytest.raises(LyraError) as info:
        load_model(tmp_path / "ema.pt", ema=False)       # the file is refused, whichever weights are asked for
    one_line_naming(info, tmp_path / "ema.pt", f"EMA weight {NAME} holds NaN")


# -- item 2: damaged weight files --------------------------------------------------------
def test_one_flipped_bit_in_a_checkpoint_or_an_export_is_refused(files, tmp_path):
    _, ckpt, exported = files
    for source, out, what in ((ckpt, tmp_path / "flip.pt", "damaged checkpoint: its weights"),
                              (exported, tmp_path / "flip.safetensors", "damaged model export: its weights")):
        flip_bit_in_tensor(source, out, storage=3)
        with pytest.raises(LyraError) as info:
            load_model(out)
        one_line_naming(info, out, what, "checksum")
        with pytest.raises(LyraError):
            export_model(out, tmp_path / "never.safetensors")
    assert not (tmp_path / "never.safetensors").exists()
    # The EMA table has its own checksum: damage there is named too.
    state = read_checkpoint(ckpt)
    flip_bit_in_tensor(ckpt, tmp_path / "flip-ema.pt", storage=len(state["model"]))   # "ema" is pickled after "model"
    spoilt = torch.load(tmp_path / "flip-ema.pt", weights_only=True)
    assert all(torch.equal(spoilt["model"][k], v) for k, v in state["model"].items())
    with pytest.raises(LyraError) as info:
        read_checkpoint(tmp_path / "flip-ema.pt")
    one_line_naming(info, tmp_path / "flip-ema.pt", "damaged checkpoint: its EMA weights")


def test_files_written_before_checksums_load_with_the_same_fingerprints(files, tmp_path):
    _, ckpt, exported = files
    state = torch.load(ckpt, weights_only=True)
    assert set(state["checksums"]) == {"model", "ema"}
    del state["checksums"]
    torch.save(state, tmp_path / "old.pt")
    old_export = rewritten_export(exported, tmp_path / "old.safetensors", load_file(exported), checksum=False)
    for ema in (True, False):
        assert load_model_and_fingerprint(tmp_path / "old.pt", ema=ema)[1] == load_model_and_fingerprint(ckpt, ema=ema)[1]
    _, fingerprint = load_model_and_fingerprint(old_export)
    assert fingerprint == load_model_and_fingerprint(exported)[1] == model_fingerprint(load_model(ckpt))
    # The checksum is beside the fingerprint, never in it; one checkpoint still exports to the same bytes.
    assert state["fingerprints"]["ema"] == fingerprint
    export_model(ckpt, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == exported.read_bytes()
    with safe_open(str(exported), "pt") as f:
        assert f.metadata()["checksum"] == weights_checksum(load_file(exported))


# -- item 11: a config claiming thousands of layers ---------------------------------------
@pytest.mark.parametrize("dilations", [4000, 20000])
def test_a_config_claiming_thousands_of_layers_is_refused_before_building_it(files, tmp_path, dilations):
    """The issue's small export claiming 4,000 dilations allocated 1.4 GB before refusing
    (20,000: bad_alloc): what a config makes Lyra build is bounded by what the file holds."""
    _, ckpt, exported = files
    with safe_open(str(exported), "pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["model_config"])
    config["dilations"] = list(range(1, dilations + 1))
    metadata["model_config"] = json.dumps(config)
    claims = tmp_path / "claims.safetensors"
    save_file(load_file(exported), str(claims), metadata=metadata)
    state = torch.load(ckpt, weights_only=True)
    state["model_config"]["dilations"] = config["dilations"]
    torch.save(state, tmp_path / "claims.pt")
    for path in (claims, tmp_path / "claims.pt"):
        built = []   # every weight registered in a module while it loads (on the meta device or not)
        hook = torch.nn.modules.module.register_module_parameter_registration_hook(lambda *args: built.append(1))
        try:
            with pytest.raises(LyraError) as info:
                load_model(path)
        finally:
            hook.remove()
        one_line_naming(info, path, "weights do not match the model config (it describes more than")
        assert len(built) < 8 * len(state["model"]) + 8192, f"{len(built):,} weights built before refusing"


# -- items 12 and 13: `lyra import stable-audio-tools` --------------------------------------
def sat_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """A stable-audio-tools Oobleck VAE's tensors (every conv weight-normed, Snake's alpha/beta),
    made from a Lyra model through the importer's key map (the equivalence with
    stable-audio-tools' own code is tests/test_import_sat.py's)."""
    torch.manual_seed(seed)
    paths = key_map(OOBLECK)
    out = {}
    for name, tensor in build_model(OOBLECK).state_dict().items():
        module, leaf = name.rsplit(".", 1)
        if leaf == "weight":
            out[f"{paths[module]}.weight_g"] = tensor.flatten(1).norm(dim=1).reshape(-1, 1, 1).clone()
            out[f"{paths[module]}.weight_v"] = tensor.clone()
        else:
            out[f"{paths[module]}.{_LEAVES[leaf]}"] = tensor.clone()
    return out


def sat_file(path: Path, **changes: torch.Tensor | None) -> Path:
    tensors = sat_tensors()
    for name, tensor in changes.items():
        name = name.replace("__", ".")
        if tensor is None:
            del tensors[name]
        else:
            tensors[name] = tensor
    save_file(tensors, str(path))
    return path


V, G = "encoder__layers__0__weight_v", "encoder__layers__0__weight_g"   # conv in: [4, 2, 7]


def test_imported_weights_equal_the_folded_ones(tmp_path):
    found = import_vae(sat_file(tmp_path / "good.safetensors"), final_tanh=False)
    torch.manual_seed(0)
    reference = build_model(OOBLECK).state_dict()
    assert found.config == OOBLECK and found.folded == 46
    assert all(torch.allclose(found.weights[k], reference[k], atol=1e-6) for k in reference)


def _spoilt(value: float) -> torch.Tensor:
    v = sat_tensors()["encoder.layers.0.weight_v"].clone()
    v[1, 0, 3] = value
    return v


@pytest.mark.parametrize("changes, message", [
    ({V: _spoilt(float("nan"))}, "tensor encoder.layers.0.weight_v holds NaN"),
    ({"decoder__layers__1__layers__0__alpha": torch.full((32,), float("inf"))},
     "tensor decoder.layers.1.layers.0.alpha holds infinite values"),
    ({V: torch.zeros(4, 2, 7)}, "encoder.layers.0.weight_v is all zero for output channel 0: weight norm's "
                                "g * v / ||v|| is 0/0"),
    ({V: torch.full((4, 2, 7), 1e-30)}, "folding the weight norm of encoder.layers.0.weight_v"),   # ||v|| underflows
    ({V: torch.ones(4, 14)}, "encoder.layers.0.weight_v is [4, 14]: conv weights of the wrong rank"),
    ({G: torch.ones(4)}, "encoder.layers.0.weight_g is [4]; the magnitude of the [4, 2, 7] direction"),
    ({V: None, G: None, "encoder__layers__0__weight": torch.ones(4, 14)},
     "encoder.layers.0.weight is [4, 14]: conv weights of the wrong rank"),
    ({V: torch.ones(4, 2, 7, dtype=torch.int32)}, "encoder.layers.0.weight_v is a int32 tensor"),
])
def test_import_checks_every_tensor_before_folding_weight_norm(tmp_path, changes, message):
    """Before: an all-zero weight_v gave NaN weights (0/0), NaN or Inf tensors were written as
    they were, tensors of the wrong rank were an internal error. (The two that killed the
    process, a [0, 2, 7] and a rank-1 weight_v, run in `test_the_cli_says_one_line_for_each`.)"""
    path = sat_file(tmp_path / "bad.safetensors", **changes)
    with pytest.raises(LyraError) as info:
        import_vae(path, final_tanh=False)
    one_line_naming(info, path, message)


SAT_CONFIG = {
    "model_type": "autoencoder", "sample_rate": 44100,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 4, "c_mults": [1, 2, 4],
                                                  "strides": [2, 4, 4], "latent_dim": 12, "use_snake": True}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 4, "c_mults": [1, 2, 4],
                                                  "strides": [2, 4, 4], "latent_dim": 6, "use_snake": True,
                                                  "final_tanh": False}},
        "bottleneck": {"type": "vae"}, "latent_dim": 6,
    },
}
GOOD = json.dumps(SAT_CONFIG)


def _edited(edit) -> str:
    config = json.loads(GOOD)
    edit(config)
    return json.dumps(config)


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('"sample_rate": 44100', '"sample_rate": NaN'), "NaN is not a number a config may hold"),
    (GOOD.replace('"sample_rate": 44100', '"sample_rate": 1e400'), "1e400 is beyond the largest float"),
    (GOOD.replace('"sample_rate": 44100', '"sample_rate": ' + "9" * 5000), "a 5,000-digit integer"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (GOOD[:-3], "not valid JSON"),
    (_edited(lambda c: c["model"].update(encoder="oobleck")), "model.encoder must be a table, got a string"),
    (_edited(lambda c: c["model"]["encoder"]["config"].update(c_mults=3)), "encoder.c_mults must be a list, got an integer"),
    (_edited(lambda c: c["model"]["encoder"]["config"].update(strides=[2, "4", 4])), "encoder.strides must be a list of integers"),
    (_edited(lambda c: c["model"]["decoder"]["config"].update(channels=4.5)), "decoder.channels must be an integer, got a number"),
    (_edited(lambda c: c["model"]["decoder"]["config"].update(final_tanh="no")), "decoder.final_tanh must be a boolean, got a string"),
    (_edited(lambda c: c["model"]["decoder"]["config"].update(use_snake=1)), "decoder.use_snake must be a boolean"),
    (_edited(lambda c: c.update(sample_rate="44100")), "sample_rate must be an integer, got a string"),
    (_edited(lambda c: c.update(sample_rate=0)), "sample_rate must be between 1 and"),
    (_edited(lambda c: c.update(model_type=[[1]])), "model_type a list has no autoencoder pretransform"),
    (_edited(lambda c: c["model"].update(bottleneck="vae")), "model.bottleneck must be a table or nothing"),
])
def test_import_config_json_problems_are_one_line_naming_it(tmp_path, text, message):
    src = sat_file(tmp_path / "vae.safetensors")
    config = tmp_path / "model_config.json"
    config.write_text(text)
    with pytest.raises(LyraError) as info:
        import_vae(src, config)
    one_line_naming(info, config, message)


def test_import_config_json_that_is_no_file_or_no_text(tmp_path):
    src = sat_file(tmp_path / "vae.safetensors")
    (tmp_path / "binary.json").write_bytes(b'{"sample_rate": "\xff"}')
    for config, message in ((tmp_path, "is a directory"), (tmp_path / "binary.json", "not valid JSON"),
                            (tmp_path / "missing.json", "no such config file")):
        with pytest.raises(LyraError) as info:
            import_vae(src, config)
        one_line_naming(info, config, message)
    (tmp_path / "good.json").write_text(GOOD)
    assert import_vae(src, tmp_path / "good.json").config == OOBLECK


def test_the_cli_says_one_line_for_each(files, tmp_path, capsys):
    """As users meet them: the installed `lyra` for the imports that crashed and a decode with
    NaN weights, the CLI in process for the rest (each interpreter costs seconds)."""
    from lyra.cli import main

    _, ckpt, exported = files
    tensors = load_file(exported)
    tensors[NAME][0] = float("nan")
    nan_export = rewritten_export(exported, tmp_path / "nan.safetensors", tensors)
    flipped = flip_bit_in_tensor(ckpt, tmp_path / "flip.pt", storage=5)
    zero = sat_file(tmp_path / "zero.safetensors", **{V: torch.zeros(0, 2, 7)})
    rank1 = sat_file(tmp_path / "rank1.safetensors", **{V: torch.ones(56), G: torch.ones(4)})
    latent = tmp_path / "x.lyra"
    assert main(["encode", str(write_wav(tmp_path / "x.wav", 4000)), str(latent), "-c", str(ckpt)]) == 0
    installed = [
        (["decode", latent, tmp_path / "a.wav", "-c", nan_export], nan_export, f"weight {NAME} holds NaN"),
        (["import", "stable-audio-tools", zero, tmp_path / "b.pt", "--no-final-tanh"], zero,    # was SIGFPE
         "encoder.layers.0.weight_v is empty (shape [0, 2, 7])"),
        (["import", "stable-audio-tools", rank1, tmp_path / "e.pt", "--no-final-tanh"], rank1,  # was heap corruption
         "encoder.layers.0.weight_v is [56]: conv weights of the wrong rank"),
    ]
    in_process = [
        (["export", flipped, tmp_path / "c.safetensors"], flipped, "damaged checkpoint"),
        (["decode", latent, tmp_path / "d.wav", "-c", flipped], flipped, "damaged checkpoint"),
        (["model-info", ckpt], ckpt, "is a checkpoint"),
    ]
    capsys.readouterr()
    said = []
    for args, _, _ in in_process:
        said.append((main([str(a) for a in args]), capsys.readouterr().err))
    runs = lyra_many([args for args, _, _ in installed])
    said += [(done.returncode, done.stderr) for done in runs]
    for (args, path, message), (code, err) in zip(in_process + installed, said):
        assert code == 1, (args, code, err)
        assert err.startswith(f"lyra: error: {path}: ") and err.count("\n") == 1, err
        assert message in err and "unexpected" not in err, err
    assert not [p for p in tmp_path.iterdir() if p.name in ("a.wav", "b.pt", "c.safetensors", "d.wav", "e.pt")]


# -- fuzz: seeded random damage to each parser --------------------------------------------
def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 random edits: a bit flipped, a byte replaced, bytes inserted or deleted, the file
    cut short, a digit of the (JSON) header replaced."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        op = rng.choice(("flip", "byte", "insert", "delete", "truncate", "digit"))
        if op == "flip":
            data[i] ^= 1 << rng.randrange(8)
        elif op == "byte":
            data[i] = rng.randrange(256)
        elif op == "insert":
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == "delete":
            del data[i:i + rng.randint(1, 8)]
        elif op == "truncate":
            del data[max(i, 1):]
        else:
            digits = [j for j, c in enumerate(data[:8192]) if 48 <= c <= 57]
            if digits:
                data[rng.choice(digits)] = rng.randrange(48, 58)
    return bytes(data)


def fuzz(source: Path, folder: Path, seeds: range, attempt) -> dict[str, int]:
    """Each seed's mutation of `source`: `attempt(path)` either succeeds (returning whether its
    output is finite) or raises a one-line `LyraError` naming the file; nothing else."""
    outcomes = {"refused": 0, "loaded": 0}
    original = source.read_bytes()
    for seed in seeds:
        path = folder / f"fuzz-{seed}{source.suffix}"
        path.write_bytes(mutate(original, random.Random(seed)))
        try:
            assert attempt(path), f"seed {seed}: loaded, with non-finite output"
            outcomes["loaded"] += 1
        except LyraError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: ") and "\n" not in message, f"seed {seed}: {message}"
            outcomes["refused"] += 1
        path.unlink()
    return outcomes


def test_fuzzed_checkpoints_and_exports_are_refused_or_load_finite(files, tmp_path):
    """What loads despite an edit (one in bytes nothing reads, or in a config value) holds the
    weights written: an edit of the weights never goes unnoticed."""
    _, ckpt, exported = files
    written = load_model(ckpt).state_dict()

    def loads_intact(path: Path) -> bool:
        model = load_model(path)
        assert all(torch.equal(v, written[k]) for k, v in model.state_dict().items()), f"{path}: other weights"
        with torch.no_grad():
            return bool(torch.isfinite(model.decode(torch.zeros(1, model.config.latent_dim, 2))).all())

    for source in (ckpt, exported):
        outcomes = fuzz(source, tmp_path, range(70), loads_intact)
        assert outcomes["refused"] > 50, outcomes


def test_fuzzed_stable_audio_tools_files_import_or_are_refused(tmp_path):
    source = sat_file(tmp_path / "vae.safetensors")

    def imports(path: Path) -> bool:
        return all(torch.isfinite(w).all() for w in import_vae(path, final_tanh=False).weights.values())

    outcomes = fuzz(source, tmp_path, range(100, 160), imports)
    assert outcomes["refused"] > 30, outcomes
    (tmp_path / "model_config.json").write_text(json.dumps(SAT_CONFIG, indent=1))

    def configured(path: Path) -> bool:
        return import_vae(source, path).config.latent_dim == 6

    outcomes = fuzz(tmp_path / "model_config.json", tmp_path, range(200, 240), configured)
    assert outcomes["refused"] > 20, outcomes
