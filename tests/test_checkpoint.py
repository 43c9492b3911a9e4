"""Checkpoints: atomic, round-trip exact, never unpickle arbitrary objects."""

import os
import pickle

import pytest
import torch

from lyra.model.checkpoint import (load_model, load_model_and_fingerprint, model_fingerprint, read_checkpoint,
                             save_checkpoint)
from lyra.cli import main
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import build_model


def tiny():
    return ModelConfig(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(4, 4), dilations=(1,))


def test_round_trip_restores_config_and_weights_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny())
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"step": 7})
    loaded = load_model(path)
    assert loaded.config == model.config
    for (ka, a), (kb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    assert read_checkpoint(path)["train"] == {"step": 7}
    assert read_checkpoint(path)["providers"]["activation/snake"] == "lyra"
    assert not loaded.training


def test_fingerprint_identifies_weights_and_config():
    torch.manual_seed(0)
    a = build_model(tiny())
    b = build_model(tiny())
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.decoder.conv_out.bias[0] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)


def test_stored_fingerprints_equal_hashing_the_loaded_weights(tmp_path):
    torch.manual_seed(1)
    model = build_model(tiny())
    ema = {k: v + torch.randn_like(v) for k, v in model.state_dict().items() if k.endswith("weight")}
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ema=ema)
    for use_ema in (True, False):
        loaded, fingerprint = load_model_and_fingerprint(path, ema=use_ema)
        assert fingerprint == model_fingerprint(loaded)
    assert load_model_and_fingerprint(path, ema=True)[1] != load_model_and_fingerprint(path, ema=False)[1]
    state = torch.load(path, weights_only=True)
    del state["fingerprints"]                      # a checkpoint saved before they were stored
    torch.save(state, path)
    loaded, fingerprint = load_model_and_fingerprint(path)
    assert fingerprint == model_fingerprint(loaded) == model_fingerprint(load_model(path))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lyra-pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "lyra-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(LyraError, match="not a readable Lyra checkpoint"):
        read_checkpoint(path)
    assert not os.path.exists("/tmp/lyra-pwned")


@pytest.mark.parametrize("content", [b"", b"hello", pickle.dumps({"format": "other"})])
def test_garbage_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(LyraError, match="bad.pt: not a"):
        read_checkpoint(path)


def test_other_checkpoint_dicts_are_rejected(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(LyraError, match="not a Lyra checkpoint"):
        read_checkpoint(path)
    torch.save({"format": "lyra-checkpoint", "version": 99}, path)
    with pytest.raises(LyraError, match="version 99 is not supported"):
        read_checkpoint(path)


def test_mismatched_weights_are_a_clear_error(tmp_path):
    model = build_model(tiny())
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    state = torch.load(path, weights_only=True)
    state["model_config"]["latent_dim"] = 8
    torch.save(state, path)
    with pytest.raises(LyraError, match="weights do not match the model config"):
        load_model(path)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = build_model(tiny())
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"step": 1})
    before = path.read_bytes()

    def boom(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {"step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left behind


def test_init_checkpoint_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "init.pt"
    assert main(["init-checkpoint", str(out), "--small", "--seed", "3"]) == 0
    assert load_model(out).config == ModelConfig.small()
    assert main(["init-checkpoint", str(tmp_path / "missing" / "x.pt"), "--small"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    from lyra.core.atomic import atomic_path, atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"x")
        with atomic_path(tmp_path / "b.bin") as p:
            p.write_bytes(b"y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------
# Hostile or damaged checkpoints: checked before anything is built, one line naming the file
# ---------------------------------------------------------------------------------------
def _saved(tmp_path, name="m.pt", train_state=None):
    path = tmp_path / name
    save_checkpoint(path, build_model(tiny()), train_state)
    return path, torch.load(path, weights_only=True)


def test_a_tiny_file_claiming_a_huge_model_is_refused_before_allocating(tmp_path):
    """The issue's 1 KB checkpoint: base_channels = 65536 would be 120 GB per residual conv.
    (On the old code this raised the allocator's RuntimeError instead.)"""
    path = tmp_path / "huge.pt"
    torch.save({"format": "lyra-checkpoint", "version": 1, "providers": {}, "model": {},
                "model_config": ModelConfig.small(base_channels=65536).to_dict()}, path)
    assert path.stat().st_size < 2048
    with pytest.raises(LyraError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: weights do not match the model config (no encoder.conv_in.weight")
    assert "\n" not in message


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("model"), "incomplete Lyra checkpoint (it has no 'model')"),
    (lambda s: s.pop("model_config"), "incomplete Lyra checkpoint (it has no 'model_config')"),
    (lambda s: s.update(model=list(s["model"].values())), "'model' must be a table of named tensors, got a list"),
    (lambda s: s.update(model_config=[1, 2]), "'model_config' must be a table, got a list"),
    (lambda s: s["model"].update({"decoder.conv_out.bias": "zeros"}), "decoder.conv_out.bias' is a string"),
    (lambda s: s["model"].update({"decoder.conv_out.bias": torch.zeros(2, dtype=torch.int64)}),
     "weight decoder.conv_out.bias is a torch.int64"),
    (lambda s: s.update(providers=["lyra"]), "'providers' must be a table of package names"),
    (lambda s: s.update(fingerprints={"model": "not hex"}), "'fingerprints' must be a table of 16-digit"),
])
def test_damaged_checkpoint_structure_is_one_line_naming_the_file(tmp_path, change, message):
    path, state = _saved(tmp_path)
    change(state)
    torch.save(state, path)
    with pytest.raises(LyraError) as info:
        load_model(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("encoder.conv_out.bias"), "(no encoder.conv_out.bias; the config describes"),
    (lambda w: w.update(extra=torch.zeros(1)), "(unexpected extra)"),
    (lambda w: w.update({"encoder.conv_in.weight": torch.zeros(4, 2, 5)}),
     "(encoder.conv_in.weight is [4, 2, 5] in the file, the config implies [4, 2, 7])"),
])
def test_each_weight_is_compared_with_what_the_config_implies(tmp_path, change, message):
    path, state = _saved(tmp_path)
    change(state["model"])
    torch.save(state, path)
    with pytest.raises(LyraError, match="weights do not match the model config") as info:
        load_model(path)
    assert message in str(info.value), str(info.value)


def _trained_run(tmp_path):
    """A finished 2-step run and its TOML config (for `lyra train --resume`)."""
    from lyra.train.engine import train
    from lyra.core.toml import dumps
    from train_helpers import make_data, tiny_config, tiny_config_dict

    make_data(tmp_path, train_files=2, val_files=1, seconds=0.25)
    tables = dict(optim={"max_steps": 2, "warmup_steps": 1}, logging={"eval_every": 100},
                  checkpoint={"save_every": 2})
    train(tiny_config(tmp_path, **tables))
    config = tmp_path / "run.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, **{**tables, "optim": {"max_steps": 3, "warmup_steps": 1}})))
    return config, tmp_path / "run" / "latest.pt"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return _trained_run(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("change, message", [
    (lambda s: s["train"].pop("optimizer"), "training state has no 'optimizer'; it cannot be resumed"),
    (lambda s: s["train"].update(step="3"), "training state 'step' must be a non-negative integer"),
    (lambda s: s["train"]["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), "'rng' is damaged"),
    (lambda s: s["train"]["optimizer"].update(param_groups=[]), "the optimizer state has 0 parameter groups"),
    (lambda s: s["train"]["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
     "optimizer state 'exp_avg' of parameter 0 is [3], the parameter is"),
    (lambda s: s["model"].update({"decoder.conv_out.bias": torch.zeros(5)}),
     "weights do not match the model config (decoder.conv_out.bias is [5] in the file"),
])
def test_resuming_from_a_damaged_train_state_is_one_line(tmp_path, trained_run, capsys, change, message):
    from lyra.cli import main

    config, latest = trained_run
    pristine = latest.read_bytes()
    try:
        state = torch.load(latest, weights_only=True)
        change(state)
        torch.save(state, latest)
        capsys.readouterr()
        code = main(["train", str(config), "--resume"])
        err = capsys.readouterr().err
    finally:
        latest.write_bytes(pristine)
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith(f"lyra: error: {latest}: ") and message in err, err
