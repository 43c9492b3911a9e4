"""The training loop on tiny CPU runs: outputs, accumulation, precision, non-finite steps, switches."""

import json
import math
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

import lyra.train.engine as engine
from lyra.model.bottlenecks import gaussian
from lyra.model.checkpoint import load_model, read_checkpoint
from lyra.cli import main
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import build_model
from lyra.train.activation_checkpointing import checkpoint_residual_units
from lyra.train.config import OptimConfig
from lyra.train.metrics_log import read_metrics
from lyra.pictures.png import encode_png
from lyra.train.schedule import learning_rate
from train_helpers import make_data, tiny_config


def _weights(path):
    return read_checkpoint(path)["model"]


def test_a_short_run_writes_metrics_audio_images_and_usable_checkpoints(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, checkpoint={"save_every": 1, "keep_last": 2}, loss={"w_waveform": 0.5})
    result = engine.train(cfg)
    run = tmp_path / "run"
    assert result.step == 4 and result.interrupted is None

    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in ("loss", "sc", "log_mag", "waveform", "kl", "kl_weight", "lr", "grad_norm", "audio_s_per_s", "epoch"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(r["loss"] == pytest.approx(r["sc"] + r["log_mag"] + r["waveform"] + r["kl_weight"] * r["kl"], rel=1e-5)
               for r in train)
    assert all(0 < r["waveform"] < 0.5 for r in train)                # 0.5 x mean |recon - audio|
    assert [r["kl_weight"] for r in train] == pytest.approx([0.0, 5e-5, 1e-4, 1e-4])   # annealed over 2 steps
    assert [r["step"] for r in val] == [2, 4]
    assert all(k in val[0] for k in ("loss", "si_sdr", "mel_distance", "stft_distance", "kl", "best"))

    # Checkpoints: keep-last-2 numbered ones, latest and best, no temporary files left.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000004.pt"]
    assert not [p for p in run.rglob(".*")]
    state = torch.load(run / "latest.pt", weights_only=True)            # tensors and plain types only
    assert state["train"]["step"] == 4 and state["train"]["config"]["data"]["batch_size"] == 2
    best_step = min(val, key=lambda r: r["mel_distance"])["step"]     # checkpoint.best_metric's default
    assert read_checkpoint(run / "best.pt")["train"]["step"] == best_step
    model = load_model(run / "latest.pt")
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), initial.state_dict().values()))

    # Validation audio and spectrogram images.
    sample = run / "samples" / "step-00000004"
    original, rate = sf.read(sample / "clip0-original.wav")
    recon, _ = sf.read(sample / "clip0-reconstruction.wav")
    assert rate == 44100 and original.shape == recon.shape == (4096, 2)
    png = (sample / "clip0.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert height == 2 * 256 + 3 and width == 4096 // 16 + 1          # 16-sample hop for a short clip


def test_the_checkpoint_works_with_lyra_encode_and_decode(tmp_path):
    make_data(tmp_path)
    engine.train(tiny_config(tmp_path, optim={"max_steps": 1}))
    source = tmp_path / "val" / "tone-0.wav"
    ckpt = str(tmp_path / "run" / "latest.pt")
    assert main(["encode", str(source), str(tmp_path / "x.lyra"), "-c", ckpt]) == 0
    assert main(["decode", str(tmp_path / "x.lyra"), str(tmp_path / "y.wav"), "-c", ckpt]) == 0
    decoded, _ = sf.read(tmp_path / "y.wav")
    assert decoded.shape == sf.read(source)[0].shape


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    make_data(tmp_path)
    # A large AdamW epsilon keeps updates proportional to the gradients: with 1e-8, a gradient
    # near zero becomes a full +-lr step whose sign float rounding order can flip.
    optim = {"max_steps": 2, "eps": 1e-2}
    big = tiny_config(tmp_path, run_dir=str(tmp_path / "big"), data={"batch_size": 4}, optim=optim)
    acc = tiny_config(tmp_path, run_dir=str(tmp_path / "acc"), data={"batch_size": 2}, optim={**optim, "grad_accum": 2})
    small = tiny_config(tmp_path, run_dir=str(tmp_path / "small"), data={"batch_size": 2}, optim=optim)
    for cfg in (big, acc, small):
        engine.train(cfg)
    w_big, w_acc, w_small = (_weights(tmp_path / n / "latest.pt") for n in ("big", "acc", "small"))
    for key in w_big:
        torch.testing.assert_close(w_acc[key], w_big[key], rtol=1e-4, atol=1e-6)
    assert max((w_small[k] - w_big[k]).abs().max().item() for k in w_big) > 1e-5   # the check can fail
    loss = lambda run: [r["loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if r["split"] == "train"]  # noqa: E731
    assert loss("acc") == pytest.approx(loss("big"), rel=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_through_autocast(tmp_path, precision, monkeypatch):
    make_data(tmp_path)
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(engine.torch, "autocast", spy)
    engine.train(tiny_config(tmp_path, runtime={"precision": precision}, optim={"max_steps": 2}))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert ("cpu", dtype, True) in seen
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) for r in records)
    scaler = read_checkpoint(tmp_path / "run" / "latest.pt")["train"]["scaler"]
    if precision == "fp16":
        assert scaler["scale"] > 0 and "growth_factor" in scaler                 # a GradScaler was used
    else:
        assert scaler == {}                                                        # bf16 needs none


def test_non_finite_steps_are_skipped_logged_and_eventually_stop_the_run(tmp_path, monkeypatch, one_thread):
    make_data(tmp_path)
    real_kl = gaussian.kl_divergence
    bad_steps = {2}
    calls = {"n": 0}

    def flaky_kl(mean, logvar):
        calls["n"] += 1
        value = real_kl(mean, logvar)
        return value * math.nan if calls["n"] in bad_steps else value

    monkeypatch.setattr(gaussian, "kl_divergence", flaky_kl)   # the vae bottleneck's KL term
    engine.train(tiny_config(tmp_path, logging={"eval_every": 100}))
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["skipped"] for r in records] == [False, True, False, False]
    assert records[1]["loss"] == "nan"

    # Every step non-finite: the weights never change and the run stops with a clear message.
    calls["n"] = 0
    bad_steps.update(range(1, 100))
    cfg = tiny_config(tmp_path, run_dir=str(tmp_path / "bad"), runtime={"max_nonfinite": 3}, optim={"max_steps": 10})
    trainer = engine.Trainer(cfg, engine.distributed.setup("cpu"), False, None, print)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(LyraError, match="training stopped at step 3: the loss or gradients were non-finite for 3 steps in a row"):
        trainer.run()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_an_existing_run_is_not_overwritten_and_trackers_are_checked_first(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, optim={"max_steps": 1})
    engine.train(cfg)
    with pytest.raises(LyraError, match="already holds a training run .* pass --resume"):
        engine.train(cfg)
    with pytest.raises(LyraError, match="nothing|no checkpoint to resume"):
        engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "fresh")), resume=True)
    if not _installed("wandb"):  # W&B is an optional extra, not installed for the tests
        with pytest.raises(LyraError, match=r"logging.wandb = true needs the 'wandb' package: pip install "):
            engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "w"), logging={"wandb": True}))


def test_a_folder_without_usable_audio_fails_clearly_from_a_worker(tmp_path):
    import numpy as np

    make_data(tmp_path)
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    t = np.arange(22050) / 44100
    sf.write(quiet / "hum.wav", np.stack([1e-3 * np.sin(2 * np.pi * 50 * t)] * 2, 1), 44100)  # -63 dBFS
    cfg = tiny_config(tmp_path, data={"train_dir": str(quiet), "num_workers": 1, "crop_attempts": 5})
    with pytest.raises(LyraError) as info:
        engine.train(cfg)
    message = str(info.value)
    assert message.startswith(f"{quiet}: no usable audio: 5 crops in a row were near-silent") and "\n" not in message


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_learning_rate_schedule():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, max_steps=14, min_lr=0.0, schedule="cosine")
    assert [learning_rate(s, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert learning_rate(9, cfg) == pytest.approx(0.5)               # half-way down the cosine
    assert learning_rate(14, cfg) == pytest.approx(0.0) and learning_rate(99, cfg) == pytest.approx(0.0)
    linear = OptimConfig(lr=1.0, warmup_steps=0, max_steps=10, min_lr=0.2, schedule="linear")
    assert learning_rate(5, linear) == pytest.approx(0.6)
    assert learning_rate(7, OptimConfig(lr=0.5, warmup_steps=2, schedule="constant")) == 0.5


def test_png_encoder_writes_valid_chunks():
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    data = encode_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[b"IHDR"]) == (7, 5, 8, 2, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(5, 1 + 21)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:].reshape(5, 7, 3), rgb)


def test_activation_checkpointing_keeps_gradients_and_saves_memory(one_thread):
    torch.manual_seed(0)
    plain = build_model(ModelConfig.small())
    wrapped = build_model(ModelConfig.small())
    wrapped.load_state_dict(plain.state_dict())
    assert checkpoint_residual_units(wrapped) == 2 * 5 * 3                 # 5 blocks x 3 units, both ways
    assert list(wrapped.state_dict()) == list(plain.state_dict())          # names unchanged
    x = torch.randn(2, 2, 4096)

    def run(model):
        calls = []
        hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            y, mean, logvar = model(x, generator=torch.Generator().manual_seed(1))
        (y.square().mean() + mean.square().mean()).backward()
        for h in hooks:
            h.remove()
        return len(calls), sum(saved), {n: p.grad for n, p in model.named_parameters()}

    calls_plain, saved_plain, grads_plain = run(plain)
    calls_wrapped, saved_wrapped, grads_wrapped = run(wrapped)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_wrapped[name], grad, rtol=1e-5, atol=1e-7)
    assert calls_wrapped > calls_plain                                     # units recomputed in backward
    assert saved_wrapped < 0.6 * saved_plain                               # far fewer activations kept


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path):
    """Compiled training computes what eager training computes: the same losses and gradient
    norms step by step (float rounding apart). The weights are compared only within what Adam
    can make of rounding: its first steps move each weight by about +-lr whatever the gradient's
    size, so a near-zero gradient element rounded the other way moves its weight the other way."""
    make_data(tmp_path)
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "eager"), optim={"max_steps": 2}))
    engine.train(tiny_config(tmp_path, run_dir=str(tmp_path / "compiled"), optim={"max_steps": 2}, runtime={"compile": True}))
    runs = {}
    for name in ("eager", "compiled"):
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in runs["compiled"]] == [r["step"] for r in runs["eager"]] == [1, 2]
    # Step 1 starts from the same weights: the same numbers. Step 2 starts from weights already
    # apart by Adam's rounding (below), so its numbers may differ a little more.
    for (eager, compiled), rel in zip(zip(runs["eager"], runs["compiled"]), (1e-4, 1e-3)):
        for key in ("loss", "sc", "log_mag", "kl", "grad_norm"):
            assert compiled[key] == pytest.approx(eager[key], rel=rel, abs=1e-6), (eager["step"], key)
    moved = 2 * sum(r["lr"] for r in runs["eager"])     # each run moves a weight by at most ~lr a step
    eager, compiled = (_weights(tmp_path / n / "latest.pt") for n in ("eager", "compiled"))
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=0, atol=moved)
