"""Discrete bottlenecks carried through training: loss terms and code usage logged, the EMA
codebooks, k-means start and dead codes applied once per step from statistics summed over
micro-batches and processes (two torchrun processes == one process == gradient accumulation),
quantiser dropout seeded per example (SIGKILL + --resume continues bit-identically, with the
adversarial terms), and the compiled bottleneck stage equal to eager with no graph break."""

from __future__ import annotations


import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

import lyra.train.engine as engine
from lyra.core.toml import dumps
from lyra.model.checkpoint import load_model, read_checkpoint
from lyra.model.compilation import is_compiled, stages
from lyra.model.config import ModelConfig
from lyra.model.vae import build_model
from lyra.train.metrics_log import read_metrics

from test_adversarial_training import _adversarial, _equal_tree, _records
from train_helpers import killed_and_resumed, make_data, merge, tiny_config, tiny_config_dict, torchrun_train

SMALL = {"base_channels": 16, "latent_dim": 16, "c_mults": [1, 2, 2, 4, 4]}
RVQ = {"num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4, "quantizer_dropout": 0.5}


def rvq_model(**options) -> dict:
    return {**SMALL, "bottleneck": "rvq", "options": {"rvq": {**RVQ, **options}}}


def _codebooks(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state["model"].items() if k.startswith("bottleneck.")}


def test_rvq_training_logs_its_terms_and_code_usage_and_trains_the_codebooks(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, model=rvq_model(), optim={"max_steps": 2}, logging={"eval_every": 2})
    first = {k: v.clone() for k, v in build_model(cfg.model).state_dict().items() if "codebook" in k}
    torch.manual_seed(cfg.seed)   # the engine builds the same initial weights from the run's seed
    engine.train(cfg)
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    val = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert "kl" not in r and "kl_weight" not in r                   # no Gaussian here
        assert r["commitment"] > 0 and r["codebook"] > 0
        assert 1 <= r["perplexity_q0"] <= 16 and 0 < r["usage_q0"] <= 1   # the first quantiser is never dropped
        for q in (1, 2):                                                # the others: 0 in a step that dropped them
            assert 0 <= r[f"perplexity_q{q}"] <= 16 and 0 <= r[f"usage_q{q}"] <= 1
    assert val and val[0]["commitment"] > 0 and "kl" not in val[0]
    # The loss is the reconstruction plus the weighted code terms (commitment 0.25, codebook 1).
    r = train[0]
    assert r["loss"] == pytest.approx(r["sc"] + r["log_mag"] + 0.25 * r["commitment"] + r["codebook"], rel=1e-5)
    state = read_checkpoint(tmp_path / "run" / "latest.pt")
    changed = [k for k in first if not torch.equal(first[k], state["model"][k])]
    assert changed, "the codebook loss trained no codebook"
    model = load_model(tmp_path / "run" / "latest.pt")
    assert model.discrete and model.config.bottleneck == "rvq"


def test_fsq_training_logs_usage_and_no_code_terms(tmp_path):
    make_data(tmp_path)
    model = {**SMALL, "bottleneck": "fsq", "options": {"fsq": {"levels": [5, 4], "groups": 2}}}
    engine.train(tiny_config(tmp_path, model=model, optim={"max_steps": 1}, logging={"eval_every": 100}))
    [r] = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert "kl" not in r and "commitment" not in r and "codebook" not in r
    assert r["loss"] == pytest.approx(r["sc"] + r["log_mag"], rel=1e-6)
    assert 1 <= r["perplexity_q0"] <= 20 and 1 <= r["perplexity_q1"] <= 20


def test_ema_codebooks_with_kmeans_and_dead_codes_equal_across_processes_and_accumulation(tmp_path):
    """Two torchrun processes (batch 2 each), one process (batch 4) and one process with
    grad_accum 2 (batch 2): the same codebooks, EMA statistics and weights after 3 steps."""
    make_data(tmp_path)
    model = rvq_model(codebook_update="ema", ema_decay=0.8, init="kmeans", dead_code_threshold=1.0)
    tables = dict(model=model, optim={"max_steps": 3, "eps": 1e-2, "warmup_steps": 1}, logging={"eval_every": 3},
                  checkpoint={"save_every": 3})
    config = tmp_path / "ddp.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, run_dir=str(tmp_path / "ddp"), data={"batch_size": 2}, **tables)))
    torchrun_train(tmp_path, config, timeout=600)
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "single"), data={"batch_size": 4}, **tables))
    accum = merge(tables, {"optim": {"grad_accum": 2}})
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "accum"), data={"batch_size": 2}, **accum))
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "half"), data={"batch_size": 2}, **tables))
    single = read_checkpoint(tmp_path / "single" / "latest.pt")
    books = _codebooks(single)
    assert {"bottleneck.quantizers.0.cluster_size", "bottleneck.quantizers.0.embed_avg",
            "bottleneck.kmeans_initialized"} <= set(books)
    assert float(books["bottleneck.kmeans_initialized"]) == 1.0
    for other in ("ddp", "accum"):
        state = read_checkpoint(tmp_path / other / "latest.pt")
        for key, value in _codebooks(state).items():
            torch.testing.assert_close(value, books[key], rtol=1e-4, atol=1e-6, msg=f"{other}: {key}")
        for key in single["model"]:   # Adam's first steps amplify summation-order rounding to a few 1e-6
            torch.testing.assert_close(state["model"][key], single["model"][key], rtol=1e-4, atol=2e-5)
    # Half the data per step gives other codebooks: the comparison can fail.
    half = _codebooks(read_checkpoint(tmp_path / "half" / "latest.pt"))
    assert max((half[k] - books[k]).abs().max().item() for k in books if "embed_avg" in k) > 1e-4
    records = {name: [r for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["split"] == "train"]
               for name in ("ddp", "single")}
    for a, b in zip(records["ddp"], records["single"]):
        assert a["perplexity_q0"] == pytest.approx(b["perplexity_q0"], rel=1e-9)   # counts summed over ranks


def test_rvq_with_adversarial_terms_killed_with_sigkill_resumes_bit_identically(tmp_path):
    """Quantiser dropout and EMA codebooks with the discriminators: SIGKILLed while writing its
    step-4 checkpoint, then `--resume`d to step 6: the same records, weights and codebooks."""
    make_data(tmp_path)
    tables = dict(model=rvq_model(codebook_update="ema", dead_code_threshold=1.0),
                  adversarial=_adversarial(start_step=1), optim={"schedule": "constant"},
                  logging={"eval_every": 100000}, checkpoint={"save_every": 2, "keep_last": 5})
    killed_and_resumed(tmp_path, tables)
    a, b = _records(tmp_path / "straight", "train"), _records(tmp_path / "killed", "train")
    for r in a + b:
        r.pop("audio_s_per_s", None)
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5, 6] and a == b
    assert all("commitment" in r and "perplexity_q2" in r for r in a)
    sa, sb = (read_checkpoint(tmp_path / n / "latest.pt") for n in ("straight", "killed"))
    _equal_tree(sa["model"], sb["model"], "model")
    _equal_tree(sa["train"]["adversarial"], sb["train"]["adversarial"], "adversarial")


def test_quantizer_dropout_is_a_function_of_each_examples_seed():
    model = build_model(ModelConfig(**rvq_model(quantizer_dropout=0.5)))
    seeds = torch.arange(64, dtype=torch.int64) * 7919
    counts = model.bottleneck.noise(seeds, 3)
    assert torch.equal(counts, model.bottleneck.noise(seeds, 3))                       # reproducible
    assert torch.equal(model.bottleneck.noise(seeds.flip(0), 3), counts.flip(0))       # position-free
    assert set(counts.tolist()) <= {1, 2, 3} and len(set(counts.tolist())) > 1
    assert (counts == 3).sum() > 64 * 0.5                                              # p = 0.5 dropped


def test_compiled_rvq_stage_equals_eager_with_no_graph_break():
    torch.manual_seed(0)
    cfg = ModelConfig(**rvq_model())
    eager = build_model(cfg)
    compiled = build_model(cfg, compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert "bottleneck" in stages(compiled) and is_compiled(compiled.bottleneck)
    audio = torch.randn(2, 2, 4096)
    noise = eager.bottleneck.noise(torch.tensor([3, 4]), 2)
    results = []
    for model in (eager, compiled):
        model.train()
        model.zero_grad(set_to_none=True)
        recon, q = model.reconstruct(audio, noise)
        loss = (recon - audio).abs().mean() + 0.25 * q.terms["commitment"] + q.terms["codebook"]
        loss.backward()
        results.append((recon.detach(), q.codes, [p.grad for p in model.parameters()]))
    (r0, c0, g0), (r1, c1, g1) = results
    assert torch.equal(c0, c1)
    torch.testing.assert_close(r1, r0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    code = compiled.bottleneck._compiled_call_impl._torchdynamo_orig_callable.__func__.__code__
    assert len(_debug_get_cache_entry_list(code)) >= 1          # the compiled graph ran (fullgraph: no break)


def test_freezing_the_encoder_freezes_the_codebooks_too(tmp_path):
    """`--freeze-encoder` on an rvq model: encoder, projections, codebooks and EMA statistics
    stay as loaded (the codes keep their meaning); the decoder trains."""
    from lyra.model.checkpoint import save_checkpoint

    make_data(tmp_path)
    model = rvq_model(codebook_update="ema", dead_code_threshold=1.0)
    torch.manual_seed(5)
    start = build_model(ModelConfig(**model))
    save_checkpoint(tmp_path / "start.pt", start)
    cfg = tiny_config(tmp_path, model=model, optim={"max_steps": 2}, logging={"eval_every": 100})
    engine.train(cfg, init_from=tmp_path / "start.pt", freeze_encoder=True)
    after = read_checkpoint(tmp_path / "run" / "latest.pt")["model"]
    for key, value in start.state_dict().items():
        if key.startswith(("encoder.", "bottleneck.")):
            assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], v) for k, v in start.state_dict().items() if k.startswith("decoder."))
    [r] = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"][-1:]
    assert r["usage_q0"] > 0                                             # usage is still logged
