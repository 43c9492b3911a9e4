"""Checkpoints: atomic, round-trip exact, never unpickle arbitrary objects."""

import os
import pickle

import pytest
import torch

from lyra.checkpoint import load_model, model_fingerprint, read_checkpoint, save_checkpoint
from lyra.cli import main
from lyra.config import ModelConfig
from lyra.errors import LyraError
from lyra.model import build_model


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
    from lyra.atomic import atomic_path, atomic_write

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
