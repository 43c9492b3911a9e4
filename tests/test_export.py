"""`lyra export CKPT OUT`: a weights-only safetensors file that stands for the checkpoint's model.

The export holds exactly the model's tensors (the EMA weights when the checkpoint has them,
unless --no-ema) and, in its metadata, the config and fingerprint; encode/decode and
`train --init-from` take it in place of the checkpoint, with identical results; a damaged or
foreign file is a one-line error, refused before anything is allocated; training checkpoints
stay full torch checkpoints.
"""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lyra.model.checkpoint import load_model, load_model_and_fingerprint, model_fingerprint, read_checkpoint, save_checkpoint
from lyra.cli import main
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.export_format import METADATA_KEYS
from lyra.model.vae import build_model
from lyra.core.toml import dumps

from cli_helpers import lyra, write_wav
from train_helpers import make_data, tiny_config, tiny_config_dict


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small-model checkpoint with EMA weights (unlike its trained ones), exported both ways
    by `lyra export` in process. Returns (folder, checkpoint, EMA export, raw export)."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model(ModelConfig.small())
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}
    ckpt = folder / "model.pt"
    save_checkpoint(ckpt, model, ema=ema)
    assert main(["export", str(ckpt), str(folder / "ema.safetensors")]) == 0
    assert main(["export", str(ckpt), str(folder / "raw.safetensors"), "--no-ema"]) == 0
    return folder, ckpt, folder / "ema.safetensors", folder / "raw.safetensors"


def test_the_export_holds_exactly_the_models_ema_tensors_and_the_metadata(files, capsys):
    folder, ckpt, exported, raw = files
    state = read_checkpoint(ckpt)
    pristine = ckpt.read_bytes()
    assert main(["export", str(ckpt), str(folder / "again.safetensors")]) == 0
    out = capsys.readouterr().out
    assert ckpt.read_bytes() == pristine                               # the input is not modified
    assert out == (f"wrote {folder / 'again.safetensors'}: 652,546 parameters, 2.6 MB, "
                   f"model {state['fingerprints']['ema']}, EMA weights\n")

    tensors = load_file(exported)
    expected = {**state["model"], **state["ema"]}
    assert tensors.keys() == build_model(ModelConfig.small()).state_dict().keys() == expected.keys()
    assert all(t.dtype == torch.float32 and torch.equal(t, expected[k]) for k, t in tensors.items())
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in tensors)   # EMA, not raw
    with safe_open(exported, "pt") as f:
        metadata = f.metadata()
    assert set(metadata) == set(METADATA_KEYS)
    assert metadata["format"] == "lyra-model" and metadata["format_version"] == "1"
    assert json.loads(metadata["model_config"]) == ModelConfig.small().to_dict()
    assert json.loads(metadata["providers"]) == state["providers"]
    assert metadata["weights"] == "ema" and metadata["lyra_version"]
    # The stored fingerprint is the loaded model's, and the checkpoint's (EMA) one.
    model, fingerprint = load_model_and_fingerprint(exported)
    assert fingerprint == metadata["fingerprint"] == model_fingerprint(model) == state["fingerprints"]["ema"]
    assert fingerprint == model_fingerprint(load_model(ckpt))
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())

    # Told apart by content, not by name.
    shutil.copy(exported, folder / "named.pt")
    shutil.copy(ckpt, folder / "named.safetensors")
    assert model_fingerprint(load_model(folder / "named.pt")) == fingerprint
    assert "ema" in read_checkpoint(folder / "named.safetensors")


def test_no_ema_exports_the_raw_weights_and_an_ema_export_has_no_raw_ones(files, capsys):
    folder, ckpt, exported, raw = files
    state = read_checkpoint(ckpt)
    tensors = load_file(raw)
    assert all(torch.equal(t, state["model"][k]) for k, t in tensors.items()) and tensors.keys() == state["model"].keys()
    with safe_open(raw, "pt") as f:
        assert f.metadata()["weights"] == "model"
        assert f.metadata()["fingerprint"] == state["fingerprints"]["model"]
    model, fingerprint = load_model_and_fingerprint(raw, ema=False)
    assert fingerprint == model_fingerprint(model) == model_fingerprint(load_model(ckpt, ema=False))
    with pytest.raises(LyraError, match="is an export of EMA weights; the raw trained weights are not in it"):
        load_model(exported, ema=False)
    # A checkpoint without EMA weights says so.
    plain = folder / "plain.pt"
    save_checkpoint(plain, build_model(ModelConfig.small()))
    capsys.readouterr()
    assert main(["export", str(plain), str(folder / "plain.safetensors")]) == 0
    assert "trained weights (the checkpoint has no EMA weights)\n" in capsys.readouterr().out


def test_latents_from_the_checkpoint_decode_with_the_export_and_back(files):
    """Encoding or decoding with the export gives the bytes the checkpoint gives. The decode
    with the export runs the installed `lyra`; the rest runs in process (each interpreter
    start costs seconds of a shared CPU)."""
    folder, ckpt, exported, _ = files
    write_wav(folder / "x.wav", 30000)
    for step, model in (("x.wav c.lyra", ckpt), ("c.lyra cc.wav", ckpt), ("x.wav e.lyra", exported)):
        source, target = (str(folder / name) for name in step.split())
        assert main(["encode" if source.endswith(".wav") else "decode", source, target, "-c", str(model),
                     "--threads", "1"]) == 0
    done = lyra("decode", "c.lyra", "ce.wav", "-c", exported, "--threads", "1", cwd=folder)   # same threads: same bits
    assert done.returncode == 0, done.stderr
    assert (folder / "e.lyra").read_bytes() == (folder / "c.lyra").read_bytes()   # so it decodes as c.lyra does
    assert (folder / "ce.wav").read_bytes() == (folder / "cc.wav").read_bytes()


def test_a_run_starts_from_an_export_and_its_checkpoints_stay_full(files, tmp_path, capsys):
    import lyra.train.engine as engine

    _, _, exported, _ = files
    make_data(tmp_path)
    result = engine.train(tiny_config(tmp_path), init_from=exported, until_step=0)   # step-0 checkpoint
    assert result.step == 0
    latest = tmp_path / "run" / "latest.pt"
    assert zipfile.is_zipfile(latest)                                 # a torch checkpoint, as before
    run = read_checkpoint(latest)
    assert {"format", "version", "model_config", "model", "providers", "fingerprints", "train"} <= run.keys()
    assert "export_weights" not in run and "optimizer" in run["train"]
    weights = load_file(exported)
    assert all(torch.equal(run["model"][k], weights[k]) for k in weights)

    # --resume reads run_dir/latest.pt: an export there is refused, in one line.
    data = tiny_config_dict(tmp_path, run_dir=str(tmp_path / "copied"))
    (tmp_path / "copied").mkdir()
    shutil.copy(exported, tmp_path / "copied" / "latest.pt")
    config = tmp_path / "copied.toml"
    config.write_text(dumps(data))
    capsys.readouterr()
    assert main(["train", str(config), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err == (f"lyra: error: {tmp_path / 'copied' / 'latest.pt'}: is an exported model (`lyra export`: weights "
                   f"only), with no training state to resume from; start a new run from it with --init-from\n")


def test_an_export_of_a_plugins_model_names_the_package_it_needs(tmp_path, monkeypatch):
    """As for a checkpoint: loading without the plugin says which package to install."""
    from lyra import registry
    from lyra.model.export import export_model
    from plugin_helpers import EXAMPLE, builtins_only, example_distribution

    saved = registry.REGISTRY.snapshot()
    try:
        builtins_only()
        ckpt, out = tmp_path / "plugin.pt", tmp_path / "plugin.safetensors"
        with monkeypatch.context() as installed:
            installed.syspath_prepend(str(EXAMPLE / "src"))
            installed.syspath_prepend(str(example_distribution(tmp_path / "site")))
            save_checkpoint(ckpt, build_model(ModelConfig.small(activation="aa_snake")))
            export_model(ckpt, out)
        builtins_only()   # uninstalled
        with pytest.raises(LyraError, match=rf"^{out}: the model uses activation 'aa_snake' from package "
                                            r"'lyra-plugin-example', which is not installed or not registered; "
                                            r"install it \(pip install lyra-plugin-example\) and retry$"):
            load_model(out)
    finally:
        registry.REGISTRY.restore(saved)


def _rewritten(source: Path, out: Path, tensors=None, **metadata) -> Path:
    with safe_open(source, "pt") as f:
        meta = {**f.metadata(), **metadata}
    save_file(tensors if tensors is not None else load_file(source), out, metadata=meta)
    return out


def _damaged(source: Path, out: Path, edit) -> Path:
    data = bytearray(source.read_bytes())
    edit(data)
    out.write_bytes(bytes(data))
    return out


def _config(**changes) -> str:
    return json.dumps({**ModelConfig.small().to_dict(), **changes})


@pytest.mark.parametrize("make, message", [
    (lambda src, out: save_file({"w": torch.zeros(3)}, out, metadata={"format": "pt"}) or out,
     "not a Lyra model export (a safetensors file without Lyra's metadata"),
    (lambda src, out: _damaged(src, out, lambda d: d.__setitem__(slice(0, 8), (10**12).to_bytes(8, "little"))),
     "damaged safetensors header (it claims 1,000,000,000,000 bytes"),
    (lambda src, out: _damaged(src, out, lambda d: d.__setitem__(9, ord("}"))),
     "damaged safetensors header (not JSON"),
    (lambda src, out: _rewritten(src, out, model_config=_config(latent_dim=8)),
     "weights do not match the model config (encoder.conv_out.weight is"),
    (lambda src, out: _rewritten(src, out, format_version="7"), "Lyra model export version 7 is not supported"),
    (lambda src, out: _rewritten(src, out, model_config="{"), "metadata 'model_config' is not JSON"),
    (lambda src, out: _rewritten(src, out, fingerprint="nope"), "metadata 'fingerprint' must be a 16-digit"),
    (lambda src, out: _rewritten(src, out, tensors={**load_file(src), "decoder.conv_out.bias": torch.zeros(2, dtype=torch.int64)}),
     "weight decoder.conv_out.bias is a I64 tensor, not floating point"),
])
def test_bad_exports_are_one_line_errors_naming_the_file(files, capsys, make, message):
    folder, _, exported, _ = files
    bad = make(exported, folder / "bad.safetensors")
    out = folder / "never.safetensors"
    capsys.readouterr()
    assert main(["export", str(bad), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lyra: error: {bad}: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_small_file_claiming_a_huge_model_is_refused_before_allocating(files):
    """Neither the config (base_channels 65536: ~120 GB per residual conv) nor a tensor's
    declared shape is believed: each is checked against what the file holds first."""
    folder, _, exported, _ = files
    huge = _rewritten(exported, folder / "huge.safetensors", model_config=_config(base_channels=65536))
    with pytest.raises(LyraError) as info:
        load_model(huge)
    assert str(info.value).startswith(f"{huge}: weights do not match the model config (encoder.conv_in.weight is "
                                      f"[16, 2, 7] in the file, the config implies [65536, 2, 7])")

    header_length = int.from_bytes(exported.read_bytes()[:8], "little")
    header = json.loads(exported.read_bytes()[8:8 + header_length])
    header["encoder.conv_in.weight"]["shape"] = [1 << 20, 1 << 20, 7]
    text = json.dumps(header).encode()
    claims = folder / "claims.safetensors"
    claims.write_bytes(len(text).to_bytes(8, "little") + text + exported.read_bytes()[8 + header_length:])
    with pytest.raises(LyraError, match=r"damaged safetensors header \(tensor encoder.conv_in.weight of shape "
                                        r"\[1048576, 1048576, 7\] claims bytes"):
        load_model(claims)


def test_export_refuses_to_overwrite_without_force_and_to_replace_its_checkpoint(files, capsys):
    folder, ckpt, exported, _ = files
    before = exported.read_bytes()
    capsys.readouterr()
    assert main(["export", str(ckpt), str(exported)]) == 1
    assert capsys.readouterr().err == f"lyra: error: {exported}: already exists (pass --force to overwrite it)\n"
    assert exported.read_bytes() == before
    assert main(["export", str(ckpt), str(ckpt), "--force"]) == 1
    assert capsys.readouterr().err == f"lyra: error: {ckpt}: is the checkpoint being exported; give another output file\n"
    assert main(["export", str(ckpt), str(exported), "--force"]) == 0
    assert exported.read_bytes() == before                            # the same model, written again
    capsys.readouterr()
    assert main(["export", "--help"]) == 0
    assert capsys.readouterr().out.startswith("Usage: lyra export [OPTIONS] CKPT OUT\n")
