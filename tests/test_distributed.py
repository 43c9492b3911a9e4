"""Data-parallel training: `torchrun --nproc_per_node=2 -m lyra train` on two CPU processes (gloo).

Two processes with batch 2 each see exactly the examples, crops and posterior noise that one
process with batch 4 sees (the noise is seeded per example, and the loss is a mean of
per-example losses), so their parameters after a few steps must equal the single process's.
A large AdamW epsilon keeps updates proportional to gradients, so the comparison measures the
gradients rather than how float rounding flips the sign of a near-zero one.
"""


import torch

import lyra.train.engine as engine
from lyra.model.checkpoint import read_checkpoint
from lyra.train.metrics_log import read_metrics
from lyra.core.toml import dumps
from train_helpers import make_data, tiny_config, tiny_config_dict, torchrun_train

TABLES = dict(optim={"max_steps": 3, "eps": 1e-2, "warmup_steps": 1}, logging={"eval_every": 3, "progress": "lines"},
              checkpoint={"save_every": 3})


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    make_data(tmp_path)
    config = tmp_path / "ddp.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, run_dir=str(tmp_path / "ddp"), data={"batch_size": 2}, **TABLES)))
    proc = torchrun_train(tmp_path, config, timeout=300)
    output = proc.stdout + proc.stderr
    assert output.count("lyra: training") == 1 and "2 processes" in output     # rank 0 alone reports

    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "single"), data={"batch_size": 4}, **TABLES))
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "half"), data={"batch_size": 2}, **TABLES))

    ddp, single, half = (read_checkpoint(tmp_path / name / "latest.pt") for name in ("ddp", "single", "half"))
    assert ddp["train"]["step"] == 3 and ddp["train"]["world_size"] == 2
    for key in single["model"]:
        torch.testing.assert_close(ddp["model"][key], single["model"][key], rtol=1e-4, atol=1e-6)
    # One process on only its own half of the batch ends somewhere else: the test can fail.
    assert max((half["model"][k] - single["model"][k]).abs().max().item() for k in single["model"]) > 1e-5

    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["split"] == "train"]
              for name in ("ddp", "single")}
    torch.testing.assert_close(torch.tensor(losses["ddp"]), torch.tensor(losses["single"]), rtol=1e-5, atol=0)
