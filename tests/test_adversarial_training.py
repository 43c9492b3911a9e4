"""Adversarial training in the engine, EMA of the weights, best-checkpoint metric, and the
engine's loose ends (issue 15), on tiny CPU runs.

Discriminators are kept small (a few thousand weights) so each run takes seconds.
"""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import lyra.train.engine as engine
import lyra.train.validation as validation
from lyra.model.checkpoint import load_model, read_checkpoint
from lyra.core.errors import LyraError
from lyra.model.vae import build_model
from lyra.train.config import BEST_METRICS, TrainConfig
from lyra.train.ema import EMA
from lyra.train.metrics_log import read_metrics
from lyra.train.optim import no_decay_names, parameter_groups
from lyra.core.toml import dumps
from train_helpers import killed_and_resumed, make_data, tiny_config, tiny_config_dict, torchrun_train

SMALL_D = {"ms_stft": {"filters": 4, "n_ffts": [512, 256, 128]}, "mpd": {"periods": [2, 3], "widths": [4, 8, 8]}}


def _adversarial(**extra):
    return {"enabled": True, "discriminators": ["ms_stft", "mpd"], "options": SMALL_D, **extra}


def _records(run_dir, split):
    return [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r["split"] == split]


def _equal_tree(a, b, where=""):
    """Nested dicts/lists of tensors and numbers: bit-identical."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for k in a:
            _equal_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


def _assert_close_weights(state, reference, rtol, atol):
    """Two training checkpoints' generator and discriminator weights agree within the tolerance."""
    for key in reference["model"]:
        torch.testing.assert_close(state["model"][key], reference["model"][key], rtol=rtol, atol=atol)
    for name, weights in reference["train"]["adversarial"]["discriminators"].items():
        for key, value in weights.items():
            torch.testing.assert_close(state["train"]["adversarial"]["discriminators"][name][key], value,
                                       rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------
# Adversarial training
# ---------------------------------------------------------------------------------------
def test_discriminators_train_after_the_warm_up_and_not_before(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, adversarial=_adversarial(start_step=2), checkpoint={"save_every": 1, "keep_last": 5})
    engine.train(cfg)
    run = tmp_path / "run"
    train = _records(run, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        for key in ("loss", "sc", "log_mag", "mel", "kl", "adversarial", "feature_matching", "d_loss", "grad_norm"):
            assert math.isfinite(r[key]), key
        total = r["sc"] + r["log_mag"] + r["waveform"] + r["mel"] + r["kl_weight"] * r["kl"] + r["adversarial"] + r["feature_matching"]
        assert r["loss"] == pytest.approx(total, rel=1e-5)
        assert r["mel"] > 0 and not r["skipped"] and not r["d_skipped"]
    # Warm-up (steps 1-2): reconstruction only, no discriminator pass or step.
    assert [r["adversarial_on"] for r in train] == [False, False, True, True]
    assert all(r["adversarial"] == r["feature_matching"] == r["d_loss"] == r["d_lr"] == 0 for r in train[:2])
    assert all(r["adversarial"] > 0 and r["feature_matching"] > 0 and r["d_loss"] > 0 and r["d_lr"] > 0
               and math.isfinite(r["d_grad_norm"]) for r in train[2:])

    states = {s: read_checkpoint(run / "checkpoints" / f"step-0000000{s}.pt")["train"]["adversarial"] for s in (1, 2, 4)}
    for name in ("ms_stft", "mpd"):
        d1, d2, d4 = (states[s]["discriminators"][name] for s in (1, 2, 4))
        assert all(torch.equal(d1[k], d2[k]) for k in d1)                      # no step before start_step
        assert any(not torch.equal(d2[k], d4[k]) for k in d2)                  # trained after it
    assert states[2]["optimizer"]["state"] == {}
    assert int(states[4]["optimizer"]["state"][0]["step"]) == 2
    # The discriminators' weight-norm magnitudes are not decayed (lyra.train.optim's rule).
    assert states[4]["optimizer"]["param_groups"][1]["weight_decay"] == 0.0


def test_adversarial_training_with_ema_and_balancer_resumes_exactly(tmp_path):
    """kill + resume == straight through: losses, weights, EMA, discriminators, both optimizers,
    the balancer's state and validation, with the adversarial terms starting after the resume."""
    make_data(tmp_path)
    tables = dict(adversarial=_adversarial(start_step=2, balancer=True, loss="least_squares"),
                  ema={"enabled": True, "decay": 0.5, "start_step": 1},
                  optim={"max_steps": 4}, logging={"eval_every": 2}, checkpoint={"save_every": 3})
    straight = tiny_config(tmp_path, run_dir=str(tmp_path / "straight"), **tables)
    split = tiny_config(tmp_path, run_dir=str(tmp_path / "split"), **tables)
    engine.train(straight)
    assert engine.train(split, until_step=1).step == 1                     # "killed" after step 1
    torch.manual_seed(123)                                                  # resume must restore the RNG
    engine.train(split, resume=True)

    for kind in ("train", "val"):
        a, b = _records(tmp_path / "straight", kind), _records(tmp_path / "split", kind)
        for r in a + b:
            r.pop("audio_s_per_s", None)
        assert a == b and a                                                 # identical floats, step by step
    sa, sb = (read_checkpoint(tmp_path / n / "latest.pt") for n in ("straight", "split"))
    assert sa["train"]["step"] == sb["train"]["step"] == 4
    _equal_tree(sa["model"], sb["model"], "model")
    _equal_tree(sa["ema"], sb["ema"], "ema")
    for key in ("optimizer", "adversarial", "best_val", "batches"):
        _equal_tree(sa["train"][key], sb["train"][key], key)
    assert sa["train"]["adversarial"]["balancer"]["counts"]                 # the balancer's EMA was saved
    assert any(not torch.equal(sa["ema"][k], sa["model"][k]) for k in sa["model"])


@pytest.mark.parametrize("bad, message", [
    (dict(discriminators=["nope"]), r"^adversarial\.discriminators: .*nope"),
    (dict(options={"ms_stft": {"filterz": 3}}), r"^adversarial\.options\.ms_stft: .*'filterz'"),
])
def test_a_bad_discriminator_is_a_one_line_error_before_the_data_scan(tmp_path, bad, message):
    cfg = tiny_config(tmp_path, adversarial={"enabled": True, **bad})   # no data: the scan would fail
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "x.wav").write_bytes(b"")
    (tmp_path / "val" / "x.wav").write_bytes(b"")
    with pytest.raises(LyraError, match=message) as info:
        engine.train(cfg)
    assert "\n" not in str(info.value)


def test_adversarial_config_is_validated_in_one_line():
    for table, message in [
        ({"enabled": True, "discriminators": []}, "adversarial.discriminators: name at least one"),
        ({"options": {"mpd": {}}}, "adversarial.options.mpd: 'mpd' is not in discriminators"),
        ({"loss": "wasserstein"}, "adversarial.loss: expected one of"),
        ({"lr": 0}, "adversarial.lr: must be positive"),
        ({"betas": [0.9]}, "adversarial.betas: expected two numbers"),
        ({"start_step": -1}, "adversarial.start_step: must not be negative"),
    ]:
        with pytest.raises(LyraError, match=message.replace(".", r"\.")):
            TrainConfig.from_mapping({"adversarial": table})
    with pytest.raises(LyraError, match=r"ema\.decay: must be in \[0, 1\)"):
        TrainConfig.from_mapping({"ema": {"decay": 1.0}})
    with pytest.raises(LyraError, match=r"checkpoint\.best_metric: expected one of"):
        TrainConfig.from_mapping({"checkpoint": {"best_metric": "pesq"}})
    assert TrainConfig().adversarial.enabled is False and TrainConfig().ema.enabled is False
    assert TrainConfig().checkpoint.best_metric == "mel_distance"
    assert BEST_METRICS == {"mel_distance": False, "stft_distance": False, "si_sdr": True, "loss": False}


# ---------------------------------------------------------------------------------------
# EMA and the best checkpoint
# ---------------------------------------------------------------------------------------
def test_ema_math_and_swapping_in_leaves_the_weights_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv1d(3, 1, 1))
    ema = EMA(model, decay=0.8, start_step=2)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(step)
        weights = model.state_dict()
        for k in expected:   # copies until start_step, then ema = decay * ema + (1 - decay) * w
            expected[k] = weights[k].clone() if step <= 2 else 0.8 * expected[k] + 0.2 * weights[k]
        for k, v in ema.state_dict().items():
            torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 2, 9)
    with ema.swapped_in():
        swapped = model(x)
        assert all(torch.equal(model.state_dict()[k], ema.shadow[k]) for k in before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    fresh = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv1d(3, 1, 1))
    fresh.load_state_dict(ema.state_dict())
    assert torch.equal(fresh(x), swapped)


def test_ema_in_training_validation_checkpoints_and_best_metric(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, optim={"max_steps": 3}, ema={"enabled": True, "decay": 0.75, "start_step": 1},
                      logging={"eval_every": 1}, checkpoint={"save_every": 1, "keep_last": 5, "best_metric": "si_sdr"})
    result = engine.train(cfg)
    run = tmp_path / "run"
    snaps = [read_checkpoint(run / "checkpoints" / f"step-0000000{s}.pt") for s in (1, 2, 3)]
    # step 1 (<= start_step): the EMA is the weights; then ema = 0.75 ema + 0.25 weights.
    assert all(torch.equal(snaps[0]["ema"][k], v) for k, v in snaps[0]["model"].items())
    ema = snaps[0]["ema"]
    for snap in snaps[1:]:
        ema = {k: 0.75 * ema[k] + 0.25 * snap["model"][k] for k in ema}
        for k, v in snap["ema"].items():
            torch.testing.assert_close(v, ema[k], rtol=1e-6, atol=1e-7)
    last = snaps[-1]
    assert any(not torch.equal(last["ema"][k], last["model"][k]) for k in last["model"])
    # lyra encode/decode (load_model) use the EMA weights, unless told not to.
    model, raw = load_model(run / "latest.pt").state_dict(), load_model(run / "latest.pt", ema=False).state_dict()
    assert all(torch.equal(model[k], v) for k, v in last["ema"].items())
    assert all(torch.equal(raw[k], v) for k, v in last["model"].items())
    # Validation ran with the EMA weights and logs every metric; best.pt is the highest SI-SDR.
    val = _records(run, "val")
    assert [r["step"] for r in val] == [1, 2, 3] and all(r["ema"] for r in val)
    assert all(math.isfinite(r[k]) for r in val for k in ("si_sdr", "mel_distance", "stft_distance", "loss"))
    best = max(val, key=lambda r: r["si_sdr"])
    assert [r["best"] for r in val].count(True) >= 1 and best["best"]
    assert read_checkpoint(run / "best.pt")["train"]["step"] == best["step"]
    assert result.best_val == last["train"]["best_val"] == best["si_sdr"]
    assert last["train"]["best_metric"] == "si_sdr"
    model = load_model(run / "latest.pt")
    with torch.no_grad():   # the logged SI-SDR at step 3 is the EMA model's
        from lyra.eval.metrics import si_sdr
        from lyra.train.data import CropSpec, scan_audio, validation_set

        spec = CropSpec(cfg.data.segment_length, 44100, 2, cfg.data.silence_threshold_db, cfg.data.peak)
        clips = validation_set(scan_audio(cfg.data.val_dir, cfg.data.extensions, 2, print), spec,
                               cfg.data.val_clips, cfg.data.val_dir, print)
        mean, _ = model.encode(clips)
        assert float(si_sdr(clips, model.decode(mean, clips.shape[-1])).mean()) == pytest.approx(val[-1]["si_sdr"], abs=1e-3)

    # Resuming with another best metric: warned, and the best value starts over.
    warnings = []
    cfg2 = tiny_config(tmp_path, optim={"max_steps": 3}, ema={"enabled": True, "decay": 0.75, "start_step": 1},
                       logging={"eval_every": 1}, checkpoint={"save_every": 1, "keep_last": 5})
    trainer = engine.Trainer(cfg2, engine.distributed.setup("cpu"), True, None, warnings.append)
    assert trainer.best_val == math.inf and trainer.best_metric == "mel_distance"
    assert any("best_metric is mel_distance, the run chose best.pt by si_sdr" in w for w in warnings)


# ---------------------------------------------------------------------------------------
# Loose ends
# ---------------------------------------------------------------------------------------
def test_a_new_run_does_not_keep_the_records_of_a_run_that_died_before_its_first_checkpoint(tmp_path):
    make_data(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    dead = "".join(f'{{"split": "train", "step": {s}, "loss": 9.0}}\n' for s in (1, 2, 3))
    (run / "metrics.jsonl").write_text(dead)        # what the dead attempt left (no latest.pt)
    engine.train(tiny_config(tmp_path, optim={"max_steps": 2}))
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert all(r["loss"] != 9.0 for r in records)


def test_the_final_snapshot_holds_the_final_validation(tmp_path, monkeypatch):
    """max_steps % save_every == 0, max_steps % eval_every != 0: the final validation (better
    than the earlier one) must be in latest.pt, and best.pt must be the final step."""
    make_data(tmp_path)
    calls = []
    real = validation.mel_distance

    def improving(ref, est, rate):   # each validation scores better than the last
        calls.append(1)
        return real(ref, est, rate) * 0 + 10.0 / len(calls)

    monkeypatch.setattr(validation, "mel_distance", improving)
    engine.train(tiny_config(tmp_path, optim={"max_steps": 4}, logging={"eval_every": 3},
                             checkpoint={"save_every": 2}))
    run = tmp_path / "run"
    val = _records(run, "val")
    assert [(r["step"], r["mel_distance"], r["best"]) for r in val] == [(3, 10.0, True), (4, 5.0, True)]
    latest = read_checkpoint(run / "latest.pt")["train"]
    assert latest["step"] == 4 and latest["best_val"] == 5.0
    assert read_checkpoint(run / "best.pt")["train"]["step"] == 4


def test_resume_refuses_or_warns_about_changed_settings(tmp_path):
    make_data(tmp_path)
    engine.train(tiny_config(tmp_path), until_step=1)
    for tables, changed in [
        (dict(data={"batch_size": 4}), "data.batch_size 2 -> 4"),
        (dict(seed=1), "seed 0 -> 1"),
        (dict(optim={"grad_accum": 2}), "optim.grad_accum 1 -> 2"),
        (dict(data={"segment_length": 8192}), "data.segment_length 4096 -> 8192"),
        (dict(data={"train_dir": str(tmp_path / "val")}), "data.train_dir"),
        (dict(adversarial=_adversarial()), None),   # switched on: warned, not refused
    ]:
        warnings = []
        cfg = tiny_config(tmp_path, **tables)
        if changed is None:
            engine.Trainer(cfg, engine.distributed.setup("cpu"), True, None, warnings.append)
            assert any("adversarial.enabled false -> true" in w for w in warnings)
            continue
        with pytest.raises(LyraError, match="an exact resume needs the run's settings") as info:
            engine.Trainer(cfg, engine.distributed.setup("cpu"), True, None, warnings.append)
        message = str(info.value)
        assert changed in message and "--init-from" in message and "\n" not in message

    # Warned: the run goes on with the new values, and the warning says what changed.
    warnings = []
    cfg = tiny_config(tmp_path, runtime={"threads": 2}, optim={"lr": 5e-4, "max_steps": 6},
                      logging={"log_every": 3}, data={"num_workers": 1})
    engine.Trainer(cfg, engine.distributed.setup("cpu"), True, None, warnings.append)
    (warning,) = [w for w in warnings if "changed settings" in w]
    for part in ("optim.lr 0.001 -> 0.0005", "optim.max_steps 4 -> 6", "runtime.threads 1 -> 2"):
        assert part in warning
    assert "log_every" not in warning and "num_workers" not in warning


def test_an_fp16_step_the_grad_scaler_skips_is_logged_and_counted(tmp_path, monkeypatch):
    make_data(tmp_path)
    real = torch.amp.GradScaler
    # A scale this large overflows every fp16 gradient: the scaler skips each step.
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real(*a, init_scale=2.0 ** 40, **k))
    cfg = tiny_config(tmp_path, runtime={"precision": "fp16", "max_nonfinite": 3}, optim={"max_steps": 2},
                      logging={"eval_every": 100})
    engine.train(cfg)
    train = _records(tmp_path / "run", "train")
    assert [r["skipped"] for r in train] == [True, True]
    state = read_checkpoint(tmp_path / "run" / "latest.pt")
    assert state["train"]["nonfinite_run"] == 2 and state["train"]["scaler"]["scale"] == 2.0 ** 38
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model).state_dict()
    assert all(torch.equal(state["model"][k], v) for k, v in initial.items())   # nothing was applied


def test_weight_decay_spares_vectors_weight_norm_magnitudes_and_declared_parameters():
    from torch.nn.utils import weight_norm as old_weight_norm
    from torch.nn.utils.parametrizations import weight_norm

    class Gain(nn.Module):
        no_weight_decay = ("table",)

        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.ones(3, 4))     # rank 2, but declared
            self.proj = nn.Linear(4, 4)

    model = nn.ModuleDict({"wn": weight_norm(nn.Conv1d(2, 3, 3)), "old": old_weight_norm(nn.Conv1d(3, 3, 1)),
                           "gain": Gain(), "plain": nn.Conv1d(3, 3, 1)})
    assert no_decay_names(model) == {
        "wn.bias", "wn.parametrizations.weight.original0", "old.bias", "old.weight_g",
        "gain.table", "gain.proj.bias", "plain.bias"}
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "gain.proj.weight", "old.weight_v", "plain.weight", "wn.parametrizations.weight.original1"]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    # The default VAE: conv weights decayed; biases and Snake's vectors not (as before).
    vae = build_model(tiny_config(Path("/nonexistent")).model)
    assert no_decay_names(vae) == {n for n, p in vae.named_parameters() if p.dim() < 2}


# ---------------------------------------------------------------------------------------
# Compiled and distributed (slow)
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_discriminators_train_like_eager_without_graph_breaks(tmp_path):
    from torch._dynamo.utils import counters

    make_data(tmp_path)
    torch._dynamo.reset()
    counters.clear()
    for name, compile in (("eager", False), ("compiled", True)):
        cfg = tiny_config(tmp_path, run_dir=str(tmp_path / name), optim={"max_steps": 2, "eps": 1e-2},
                          adversarial=_adversarial(), runtime={"compile": compile})
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            engine.train(cfg)
    torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] > 0 and not counters["graph_break"]
    eager, compiled = (read_checkpoint(tmp_path / n / "latest.pt") for n in ("eager", "compiled"))
    _assert_close_weights(compiled, eager, rtol=1e-3, atol=5e-5)


@pytest.mark.slow
def test_adversarial_training_under_ddp_equals_one_process_and_accumulation(tmp_path):
    """Two gloo processes with batch 2 == one process with batch 4 == batch 2 x grad_accum 2,
    for the generator and the discriminators alike (simultaneous updates from one pass)."""
    make_data(tmp_path)
    tables = dict(optim={"max_steps": 3, "eps": 1e-2, "warmup_steps": 1}, logging={"eval_every": 3},
                  checkpoint={"save_every": 3}, adversarial=_adversarial(start_step=1))
    config = tmp_path / "ddp.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, run_dir=str(tmp_path / "ddp"), data={"batch_size": 2}, **tables)))
    proc = torchrun_train(tmp_path, config, timeout=600)
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "single"), data={"batch_size": 4}, **tables))
    accum = dict(tables, optim={**tables["optim"], "grad_accum": 2})
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "accum"), data={"batch_size": 2}, **accum))
    single = read_checkpoint(tmp_path / "single" / "latest.pt")
    for other in ("ddp", "accum"):
        _assert_close_weights(read_checkpoint(tmp_path / other / "latest.pt"), single, rtol=1e-4, atol=1e-6)


def test_adversarial_training_killed_with_sigkill_mid_save_resumes_exactly(tmp_path):
    """`lyra train` with discriminators and EMA, SIGKILLed while writing its step-4 checkpoint,
    then `--resume`d to step 6: the same losses and weights as a run never stopped."""
    make_data(tmp_path)
    tables = dict(adversarial=_adversarial(start_step=1), ema={"enabled": True, "decay": 0.5, "start_step": 1},
                  optim={"schedule": "constant"}, logging={"eval_every": 100000},
                  checkpoint={"save_every": 2, "keep_last": 5})
    killed_and_resumed(tmp_path, tables)
    a, b = _records(tmp_path / "straight", "train"), _records(tmp_path / "killed", "train")
    for r in a + b:
        r.pop("audio_s_per_s", None)
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5, 6] and a == b
    sa, sb = (read_checkpoint(tmp_path / n / "latest.pt") for n in ("straight", "killed"))
    _equal_tree(sa["model"], sb["model"], "model")
    _equal_tree(sa["ema"], sb["ema"], "ema")
    _equal_tree(sa["train"]["adversarial"], sb["train"]["adversarial"], "adversarial")

