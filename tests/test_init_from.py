"""Fine-tuning: `lyra train cfg.toml --init-from CKPT [--freeze-encoder]`.

A run started from another checkpoint's weights begins at step 0 with exactly those weights;
a frozen encoder never changes and is not in the optimizer; the config's [model] must match
the checkpoint's (or be left out, to take it); and `--resume` alone continues such a run
exactly, because how it began is saved in its checkpoints.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

import lyra.train.engine as engine
from lyra.model.checkpoint import read_checkpoint
from lyra.cli import main
from lyra.core.toml import from_dict
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import build_model
from lyra.train.config import TrainConfig
from lyra.train.metrics_log import read_metrics
from lyra.train.state import RunStart
from lyra.core.toml import dumps

from cli_helpers import lyra, small_checkpoint
from train_helpers import make_data, tiny_config, tiny_config_dict, torchrun_train



def _records(run_dir, split):
    return [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r["split"] == split]


def _no_model_table(tmp_path, **tables):
    """A tiny run config without a [model] table (its model comes from the --init-from checkpoint)."""
    data = tiny_config_dict(tmp_path, **tables)
    del data["model"]
    return TrainConfig.from_mapping(data)


def _encoder(weights):
    return {k: v for k, v in weights.items() if k.startswith("encoder.")}


def _decoder(weights):
    return {k: v for k, v in weights.items() if k.startswith("decoder.")}


def test_a_new_run_starts_at_step_0_with_a_model_checkpoints_weights(tmp_path):
    make_data(tmp_path)
    source = small_checkpoint(tmp_path / "init.pt", seed=7)     # `lyra init-checkpoint --small --seed 7`
    cfg = tiny_config(tmp_path)                                  # seed 0, the small model
    result = engine.train(cfg, init_from=source, until_step=0)   # saves the step-0 checkpoint, trains nothing
    assert result.step == 0

    run = read_checkpoint(tmp_path / "run" / "latest.pt")
    expected = read_checkpoint(source)["model"]
    assert run["model"].keys() == expected.keys()
    assert all(torch.equal(run["model"][k], expected[k]) for k in expected)       # bit for bit
    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg.model).state_dict()
    assert any(not torch.equal(fresh[k], expected[k]) for k in expected)           # not what a new run draws
    train = run["train"]
    assert train["step"] == 0 and train["optimizer"]["state"] == {}
    assert train["start"] == {"init_from": str(source.absolute()), "freeze_encoder": False,
                              "model_from_checkpoint": False}

    # Starting again into the same run_dir follows the engine's rule for any new run there; the run
    # trains its encoder, and a resumed run cannot start freezing it.
    with pytest.raises(LyraError, match=r"already holds a training run \(latest.pt\); pass --resume"):
        engine.train(cfg, init_from=source)
    with pytest.raises(LyraError, match="this run trains its encoder, and a resumed run keeps that"):
        engine.train(cfg, resume=True, freeze_encoder=True)
    with pytest.raises(LyraError, match="--init-from starts a new run and --resume continues one"):
        engine.train(cfg, resume=True, init_from=source)


def test_only_the_weights_of_a_training_checkpoint_are_taken_and_a_config_without_model_takes_its_model(tmp_path):
    make_data(tmp_path)
    other = tiny_config(tmp_path, run_dir=str(tmp_path / "other"), seed=5, optim={"max_steps": 1})
    engine.train(other)                                          # another run: step 1, optimizer moments, its RNG
    source = tmp_path / "other" / "latest.pt"
    trained = read_checkpoint(source)
    assert trained["train"]["step"] == 1 and trained["train"]["optimizer"]["state"]

    cfg = _no_model_table(tmp_path)                              # its cfg.model is the default (big) model
    assert cfg.model != ModelConfig.small()
    engine.train(cfg, init_from=source, model_in_config=False, until_step=0)
    run = read_checkpoint(tmp_path / "run" / "latest.pt")
    assert from_dict(ModelConfig, run["model_config"]) == ModelConfig.small()
    assert from_dict(ModelConfig, run["train"]["config"]["model"]) == ModelConfig.small()
    assert all(torch.equal(run["model"][k], trained["model"][k]) for k in trained["model"])
    assert run["train"]["step"] == 0 and run["train"]["batches"] == 0 and run["train"]["optimizer"]["state"] == {}
    assert run["train"]["start"]["model_from_checkpoint"] is True


@pytest.fixture(scope="module")
def frozen_runs(tmp_path_factory):
    """One fine-tuning run with a frozen encoder, 4 steps straight through and (in another run
    dir) 2 steps then `--resume` to 4; the config has no [model] table (the checkpoint's is
    taken, so the resumed run must take it again).
    Returns (tmp_path, source checkpoint, the straight run's Trainer, its optimizer's parameters)."""
    tmp_path = tmp_path_factory.mktemp("frozen")
    make_data(tmp_path)
    source = small_checkpoint(tmp_path / "init.pt", seed=3)
    tables = dict(optim={"max_steps": 4, "warmup_steps": 2}, logging={"eval_every": 2}, checkpoint={"save_every": 3})
    straight = _no_model_table(tmp_path, run_dir=str(tmp_path / "straight"), **tables)
    split = _no_model_table(tmp_path, run_dir=str(tmp_path / "split"), **tables)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = engine.Trainer(straight, engine.distributed.setup("cpu"), False, None, print,
                                 init_from=source, freeze_encoder=True, model_in_config=False)
        optimizer_params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
        trainer.run()
    finally:
        torch.set_num_threads(threads)

    first = engine.train(split, init_from=source, freeze_encoder=True, model_in_config=False, until_step=2)
    assert first.step == 2
    with pytest.raises(LyraError, match=r"model\.base_channels is 32 in the config, 16 in the checkpoint\); a resumed run keeps its model"):
        engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "split"), model={"base_channels": 32}, **tables), resume=True)
    torch.manual_seed(12345)   # disturb the global RNG: the resumed run restores its own
    np.random.seed(1)
    engine.train(split, resume=True, model_in_config=False)     # neither --init-from nor --freeze-encoder again
    return tmp_path, source, trainer, optimizer_params


def test_a_frozen_encoder_never_changes_and_is_not_in_the_optimizer(frozen_runs):
    tmp_path, source, trainer, optimizer_params = frozen_runs
    encoder = {id(p) for p in trainer.model.encoder.parameters()}
    decoder = {id(p) for p in trainer.model.decoder.parameters()}
    assert {id(p) for p in optimizer_params} == decoder and not encoder & {id(p) for p in optimizer_params}
    assert not any(p.requires_grad for p in trainer.model.encoder.parameters())

    start = read_checkpoint(source)["model"]
    end = read_checkpoint(tmp_path / "straight" / "latest.pt")
    assert end["train"]["step"] == 4
    assert all(torch.equal(end["model"][k], v) for k, v in _encoder(start).items())      # bit for bit
    assert all(not torch.equal(end["model"][k], v) for k, v in _decoder(start).items())  # every decoder tensor trained
    assert len(end["train"]["optimizer"]["state"]) == len(decoder)
    assert end["train"]["start"]["freeze_encoder"] is True
    train = _records(tmp_path / "straight", "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["kl"]) and r["kl"] > 0 for r in train)   # KL still computed


def test_a_fine_tuning_run_resumes_exactly_without_its_flags(frozen_runs):
    tmp_path = frozen_runs[0]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert [r["step"] for r in _records(split, "train")] == [1, 2, 3, 4]
    for split_name in ("train", "val"):
        a = [{k: v for k, v in r.items() if k != "audio_s_per_s"} for r in _records(straight, split_name)]
        b = [{k: v for k, v in r.items() if k != "audio_s_per_s"} for r in _records(split, split_name)]
        assert a == b                                            # identical floats, step by step
    wa, wb = read_checkpoint(straight / "latest.pt"), read_checkpoint(split / "latest.pt")
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    sa, sb = wa["train"]["optimizer"]["state"], wb["train"]["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert wa["train"]["start"] == wb["train"]["start"]
    assert wb["train"]["start"]["model_from_checkpoint"] is True and wb["train"]["start"]["freeze_encoder"] is True


def test_the_lyra_command_checks_the_model_and_the_flags_in_one_line(tmp_path, capsys):
    make_data(tmp_path)
    source = small_checkpoint(tmp_path / "init.pt")
    mismatched = tmp_path / "mismatched.toml"
    mismatched.write_text(dumps(tiny_config_dict(tmp_path, model={"base_channels": 32})))
    no_model = tmp_path / "no_model.toml"
    data = tiny_config_dict(tmp_path)
    del data["model"]
    no_model.write_text(dumps(data))

    bad = lyra("train", mismatched, "--init-from", source, cwd=tmp_path)       # the installed entry point
    err = bad.stderr.strip()
    assert bad.returncode == 1 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"lyra: error: {source}: the config's [model] does not describe this checkpoint's model")
    assert "model.base_channels is 32 in the config, 16 in the checkpoint" in err
    assert "leave the [model] table out of the config" in err and "lyra config show" in err
    assert not (tmp_path / "run").exists()

    capsys.readouterr()
    assert main(["train", str(no_model), "--resume", "--init-from", str(source)]) == 1
    assert capsys.readouterr().err == ("lyra: error: --init-from starts a new run and --resume continues one: pass "
                                       "one or the other (a resumed run keeps the weights it started from)\n")
    assert main(["config", "show", str(no_model), "--init-from", str(source)]) == 0   # what the run will train
    assert from_dict(ModelConfig, tomllib.loads(capsys.readouterr().out)["model"]) == ModelConfig.small()


def test_the_saved_start_is_checked_before_it_is_trusted():
    assert RunStart.from_state({}, "old.pt") == RunStart()       # checkpoints from before fine-tuning existed
    start = RunStart("/x/init.pt", True, True)
    assert RunStart.from_state({"start": start.to_state()}, "a.pt") == start
    for bad, message in [("yes", "'start' must be a table"), ({"init_from": 3}, "'start.init_from' must be a path"),
                         ({"freeze_encoder": 1}, "'start.freeze_encoder' must be true or false"),
                         ({"model_from_checkpoint": True}, "takes its model from a checkpoint but names none")]:
        with pytest.raises(LyraError, match=r"^a\.pt: training state .*" + re.escape(message)):
            RunStart.from_state({"start": bad}, "a.pt")


@pytest.mark.slow
def test_a_frozen_encoder_trains_with_compiled_stages_like_eager(tmp_path):
    from torch._dynamo.utils import counters

    make_data(tmp_path)
    source = small_checkpoint(tmp_path / "init.pt", seed=3)
    torch._dynamo.reset()
    counters.clear()
    for name, compile in (("eager", False), ("compiled", True)):
        # A large AdamW epsilon keeps updates proportional to the gradients (see test_engine).
        cfg = tiny_config(tmp_path, run_dir=str(tmp_path / name), optim={"max_steps": 2, "eps": 1e-2},
                          runtime={"compile": compile})
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):   # no silent fallback to eager
            engine.train(cfg, init_from=source, freeze_encoder=True)
    torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] > 0 and not counters["graph_break"]
    start = read_checkpoint(source)["model"]
    eager, compiled = (read_checkpoint(tmp_path / n / "latest.pt")["model"] for n in ("eager", "compiled"))
    assert all(torch.equal(compiled[k], v) for k, v in _encoder(start).items())
    # The decoder moves by ~2e-3 in these 2 steps; inductor's different float rounding, amplified
    # by the log-magnitude loss, leaves up to ~1.5e-5 between the two runs.
    assert max((eager[k] - start[k]).abs().max().item() for k in _decoder(start)) > 1e-3
    for key in _decoder(start):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-3, atol=5e-5)


@pytest.mark.slow
def test_a_frozen_encoder_trains_under_ddp_like_one_process(tmp_path):
    """Two gloo processes with batch 2 each equal one process with batch 4 (as in
    test_distributed), with the encoder frozen: DDP needs no find_unused_parameters.

    The source holds the weights test_distributed's fresh seed-0 run starts from: from those the
    two runs agree to its tolerance; from other random weights float rounding is amplified more
    (a few 1e-6 after 3 steps, with or without fine-tuning)."""
    make_data(tmp_path)
    source = small_checkpoint(tmp_path / "init.pt", seed=0)
    tables = dict(optim={"max_steps": 3, "eps": 1e-2, "warmup_steps": 1}, logging={"eval_every": 3},
                  checkpoint={"save_every": 3})
    config = tmp_path / "ddp.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, run_dir=str(tmp_path / "ddp"), data={"batch_size": 2}, **tables)))
    proc = torchrun_train(tmp_path, config, "--init-from", str(source), "--freeze-encoder", timeout=300)
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "single"), data={"batch_size": 4}, **tables),
                 init_from=source, freeze_encoder=True)
    start = read_checkpoint(source)["model"]
    ddp, single = (read_checkpoint(tmp_path / n / "latest.pt") for n in ("ddp", "single"))
    assert ddp["train"]["world_size"] == 2 and ddp["train"]["start"]["freeze_encoder"] is True
    assert all(torch.equal(ddp["model"][k], v) for k, v in _encoder(start).items())
    for key in _decoder(start):
        torch.testing.assert_close(ddp["model"][key], single["model"][key], rtol=1e-4, atol=1e-6)
    assert max((ddp["model"][k] - start[k]).abs().max().item() for k in _decoder(start)) > 1e-5
