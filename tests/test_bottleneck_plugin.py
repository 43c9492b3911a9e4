"""A bottleneck from an outside package: found through the entry-point group like any block,
named in a config, trained, written to `.lyra` files by the installed `lyra` and decoded again;
its checkpoint names the package; a factory that breaks the contract is one line."""

from __future__ import annotations

import json

import pytest

import lyra.train.engine as engine
from lyra import registry
from lyra.core.errors import LyraError
from lyra.model.checkpoint import read_checkpoint
from lyra.model.config import ModelConfig
from lyra.model.vae import build_model
from lyra.train.metrics_log import read_metrics

from cli_helpers import lyra, lyra_env, write_wav
from plugin_helpers import clean_registry, write_distribution  # noqa: F401  (autouse fixture)
from train_helpers import make_data, tiny_config

SOURCE = """
    import torch
    from lyra.model.bottlenecks.bottleneck import Bottleneck, Quantized, code_counts, usage_metrics


    class Ternary(Bottleneck):
        '''Each channel rounded to -1, 0 or +1 after a tanh (straight-through): 3 codes per channel.'''

        discrete = True
        TERMS = ("commitment",)

        def __init__(self, latent_dim, scale=1.0):
            super().__init__()
            self.in_channels = self.latent_dim = latent_dim
            self.num_quantizers, self.codebook_size = latent_dim, 3
            self.scale = scale

        def _levels(self, h):
            y = torch.tanh(h.float() * self.scale)
            return y, y + (torch.round(y) - y).detach()

        def forward(self, h, noise=None):
            y, q = self._levels(h)
            codes = (q.detach() + 1).long()
            return Quantized(q, {"commitment": (y - q.detach()).square().mean()}, codes,
                             {"counts": code_counts(codes, 3)})

        def encode(self, h, quantizers=None):
            self.check_quantizers(quantizers)
            return (self._levels(h)[1] + 1).long()

        def decode(self, codes):
            return codes.float() - 1

        def update(self, stats, step):
            return usage_metrics(stats["counts"])


    class NotOne(torch.nn.Module):
        def __init__(self, latent_dim):
            super().__init__()


    def register(registry):
        registry.register("bottleneck", "ternary", Ternary, streamable=True)
        registry.register("bottleneck", "not_a_bottleneck", NotOne)
    """
SMALL = {"base_channels": 16, "latent_dim": 16, "c_mults": [1, 2, 2, 4, 4]}


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = write_distribution(tmp_path / "site", "ternary-codes", "0.3",
                              {"ternary": "ternary_codes:register"}, {"ternary_codes.py": SOURCE})
    monkeypatch.syspath_prepend(str(root))
    return root


def test_a_plugin_bottleneck_trains_and_round_trips_through_the_cli(site, tmp_path):
    assert "ternary" not in registry.names("bottleneck")              # found lazily, on the first miss
    found = registry.component("bottleneck", "ternary")
    assert (found.provider, found.plugin) == ("ternary-codes", "ternary")

    make_data(tmp_path)
    model = {**SMALL, "bottleneck": "ternary", "options": {"ternary": {"scale": 2.0}}}
    engine.train(tiny_config(tmp_path, model=model, optim={"max_steps": 2}, logging={"eval_every": 2}))
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert all(r["commitment"] > 0 and "kl" not in r and r["usage_q0"] > 0 for r in records)
    ckpt = tmp_path / "run" / "latest.pt"
    state = read_checkpoint(ckpt)
    assert state["providers"]["bottleneck/ternary"] == "ternary-codes"

    env = lyra_env(PYTHONPATH=str(site))
    listing = lyra("plugins", env=env)
    assert listing.returncode == 0 and b"ternary" in listing.stdout
    wav = write_wav(tmp_path / "a.wav", 2048 * 5 + 9)
    for args in (("encode", wav, tmp_path / "a.lyra", "-c", ckpt, "--stream", "--chunk-seconds", "0.1"),
                 ("decode", tmp_path / "a.lyra", tmp_path / "a.out.wav", "-c", ckpt)):
        done = lyra(*args, env=env)
        assert done.returncode == 0, done.stderr
    info = json.loads(lyra("info", tmp_path / "a.lyra", "--json", env=env).stdout)
    assert (info["bottleneck"], info["num_quantizers"], info["codebook_size"], info["bits_per_code"]) == \
        ("ternary", 16, 3, 2)
    assert info["bottleneck_options"] == {"scale": 2.0}

    # Without the plugin installed, the checkpoint names the package to install.
    done = lyra("decode", tmp_path / "a.lyra", tmp_path / "b.wav", "-c", ckpt)
    assert done.returncode == 1 and "ternary-codes" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_bottleneck_that_breaks_the_contract_is_one_line(site):
    with pytest.raises(LyraError, match=r"^model\.bottleneck: bottleneck 'not_a_bottleneck' \(plugin 'ternary' "
                                        r"\(ternary-codes\)\) built a NotOne, which is not a "):
        build_model(ModelConfig(**SMALL, bottleneck="not_a_bottleneck"))
    with pytest.raises(LyraError, match=r"^model\.bottleneck: unknown bottleneck 'ternery' \(did you mean 'ternary'"):
        build_model(ModelConfig(**SMALL, bottleneck="ternery"))
    with pytest.raises(LyraError, match=r"^model\.options\.ternary: .*does not accept option 'levels'"):
        build_model(ModelConfig(**SMALL, bottleneck="ternary", options={"ternary": {"levels": 3}}))


def test_a_plugin_term_without_a_weight_is_refused_before_training(site, tmp_path, monkeypatch):
    import ternary_codes

    monkeypatch.setattr(ternary_codes.Ternary, "TERMS", ("sparsity",))
    make_data(tmp_path)
    with pytest.raises(LyraError, match=r"^model\.bottleneck: 'ternary' returns the loss term 'sparsity'; a "
                                        r"bottleneck's terms are kl, commitment, codebook"):
        engine.train(tiny_config(tmp_path, model={**SMALL, "bottleneck": "ternary"}, optim={"max_steps": 1}))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_bottleneck_with_more_codes_than_a_lyra_file_holds_is_refused_at_build():
    from lyra.model.bottlenecks.bottleneck import Bottleneck

    class Wide(Bottleneck):
        discrete = True

        def __init__(self, latent_dim, rows=1025, size=16):
            super().__init__()
            self.in_channels = self.latent_dim = latent_dim
            self.num_quantizers, self.codebook_size = rows, size

    registry.register("bottleneck", "wide", Wide)
    for options, message in (({}, r"its num_quantizers must be at most 1024, got 1025"),
                             ({"rows": 4, "size": 2**24 + 1}, r"its codebook_size must be in 2\.\.16777216, got 16777217")):
        with pytest.raises(LyraError, match=r"^model\.bottleneck: bottleneck 'wide' .*" + message):
            build_model(ModelConfig(**SMALL, bottleneck="wide", options={"wide": options}))
    assert build_model(ModelConfig(**SMALL, bottleneck="wide", options={"wide": {"rows": 1024}})).bottleneck.num_quantizers == 1024
