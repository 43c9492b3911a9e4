"""Configs nobody on the project wrote (issue 22, items 3, 10, 11 and 13): non-finite numbers,
sizes that would allocate gigabytes or loop for hours, seeds and thread counts torch cannot
take, and files that are not TOML text. Each is a one-line `lyra: error: FILE: key: ...` at
load, before anything is built; and a fuzz of the shipped configs through `lyra config show`.
"""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path

import pytest
import torch

from lyra.cli import main
from lyra.core.errors import LyraError
from lyra.core.toml import read_toml
from lyra.model.config import ModelConfig
from lyra.train.config import DataConfig, LossConfig, OptimConfig, TrainConfig

from cli_helpers import lyra_many

REPO = Path(__file__).resolve().parents[1]


def config_show(capsys, path: Path, *args: str) -> tuple[int, str, str]:
    """`lyra config show PATH ARGS...` in this process: status, stdout, stderr."""
    status = main(["config", "show", str(path), *args])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str, path: Path) -> str:
    """The message of the single `lyra: error: PATH: ...` line `err` must be."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"lyra: error: {path}: "), err
    assert "unexpected" not in err and "LYRA_DEBUG" not in err and "Traceback" not in err, err
    return err[len(f"lyra: error: {path}: "):].rstrip("\n")


# ---------------------------------------------------------------------------------------
# Item 3: non-finite numbers, everywhere a number is read
# ---------------------------------------------------------------------------------------
NON_FINITE = [
    ("[optim]\nlr = inf\n", "optim.lr: must be a finite number, got inf"),
    ("[optim]\nweight_decay = nan\n", "optim.weight_decay: must be a finite number, got nan"),
    ("[optim]\nmin_lr = nan\n", "optim.min_lr: must be a finite number, got nan"),
    ("[optim]\neps = nan\n", "optim.eps: must be a finite number, got nan"),
    ("[optim]\nbetas = [0.9, nan]\n", "optim.betas[1]: must be a finite number, got nan"),
    ("[optim]\ngrad_clip = inf\n", "optim.grad_clip: must be a finite number, got inf"),
    ("[data]\npeak = nan\n", "data.peak: must be a finite number, got nan"),
    ("[data]\nsilence_threshold_db = -inf\n", "data.silence_threshold_db: must be a finite number, got -inf"),
    ("[loss]\nw_sc = nan\n", "loss.w_sc: must be a finite number, got nan"),
    ("[loss]\nkl_weight = inf\n", "loss.kl_weight: must be a finite number, got inf"),
    ("[adversarial]\nmel_weight = nan\n", "adversarial.mel_weight: must be a finite number, got nan"),
    ("[ema]\ndecay = nan\n", "ema.decay: must be a finite number, got nan"),
    ("[model]\nlogvar_clamp = inf\n", "model.logvar_clamp: must be a finite number, got inf"),
    ("[model.options.snake]\nalpha = nan\n", "model.options.snake.alpha: must be a finite number, got nan"),
    ("[adversarial.options.ms_stft]\nx = [1.0, -inf]\n", "adversarial.options.ms_stft.x[1]: must be a finite number, got -inf"),
    ("[optim]\nlr = 1e400\n", "optim.lr: must be a finite number, got inf"),   # TOML reads 1e400 as inf
]


@pytest.mark.parametrize("body, message", NON_FINITE)
def test_non_finite_numbers_are_refused_at_load(tmp_path, body, message):
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(LyraError) as info:
        TrainConfig.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_set_overrides_are_checked_the_same_way(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("")
    for override, message in [("optim.lr=inf", "optim.lr: must be a finite number, got inf"),
                              ("data.peak=nan", "data.peak: must be a finite number, got nan"),
                              ("loss.w_log_mag=-inf", "loss.w_log_mag: must be a finite number, got -inf")]:
        status, out, err = config_show(capsys, path, "--set", override)
        assert status == 1 and not out and one_error_line(err, path) == message


def test_python_callers_cannot_pass_non_finite_numbers_either():
    for build, key in [(lambda: OptimConfig(lr=math.inf), "lr"), (lambda: OptimConfig(betas=(0.9, math.nan)), "betas"),
                       (lambda: DataConfig(peak=math.nan), "peak"), (lambda: LossConfig(w_sc=math.nan), "w_sc"),
                       (lambda: ModelConfig(logvar_clamp=math.nan), "logvar_clamp")]:
        with pytest.raises(LyraError, match=rf"^{key}: must be a finite number"):
            build()


def test_train_with_an_infinite_learning_rate_fails_before_training(tmp_path, capsys):
    """Before: `lyra train` with lr = inf said "done", exit 0, every weight NaN."""
    config = tmp_path / "run.toml"
    config.write_text(f'run_dir = "{tmp_path / "run"}"\n[optim]\nlr = inf\n')
    assert main(["train", str(config)]) == 1
    assert capsys.readouterr().err == f"lyra: error: {config}: optim.lr: must be a finite number, got inf\n"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Items 10, 11 and 13: sizes, seeds and thread counts
# ---------------------------------------------------------------------------------------
BOUNDS = [
    ("seed = -1", "seed: must be an integer from 0 to 2**63 - 1, got -1"),
    ("seed = 100000000000000000000", "seed: 100000000000000000000 is outside TOML's 64-bit integer range"),
    ("[runtime]\nthreads = 1000000", "runtime.threads: must be at most 1,024, got 1,000,000"),
    ("[loss]\nn_mels = 100000000", "loss.n_mels: 100000000 mel bands are more than the 257 frequency bins of FFT size 512"),
    ("[loss]\nn_mels = 2000\nfft_sizes = [8192]\nhop_sizes = [2048]\nwin_lengths = [8192]",
     "loss.n_mels: 2000 mel bands are more than the most a mel loss takes, 1024"),
    ("[loss]\nfft_sizes = [1024, 2048, 100000000]", "loss.fft_sizes: every FFT size must be at most 32768, got 100000000"),
    ("[optim]\ngrad_accum = 1000000000", "optim.grad_accum: must be at most 4,096, got 1,000,000,000"),
    ("[data]\nval_clips = 1000000000",
     "data.val_clips: must be at most 4,096, got 1,000,000,000 (the crops are held in memory)"),
    ("[data]\nsegment_length = 1000000000000", "data.segment_length: must be at most 16,777,216, got 1,000,000,000,000"),
    ("[data]\ncrop_attempts = 1000000000", "data.crop_attempts: must be at most 10,000, got 1,000,000,000"),
]


@pytest.mark.parametrize("body, message", BOUNDS)
def test_sizes_seeds_and_threads_out_of_bounds_are_config_errors(tmp_path, capsys, body, message):
    path = tmp_path / "run.toml"
    path.write_text(body + "\n")
    status, out, err = config_show(capsys, path)
    assert status == 1 and not out and one_error_line(err, path) == message


@pytest.mark.parametrize("body, keys", [
    ("base_channels = 1000000", "base_channels/c_mults/strides"),
    ("dilations = [1, 3, 9, 1, 3, 9, 1, 3, 9]\nbase_channels = 4096", "base_channels/c_mults/dilations/residual_kernel_size"),
    ("residual_kernel_size = 100000001", "base_channels/c_mults/dilations/residual_kernel_size"),
    ("latent_dim = 100000000", "latent_dim/decoder_in_kernel"),
    ("strides = [2, 4, 4, 8, 100000000]", "base_channels/c_mults/strides"),
])
def test_model_sizes_no_machine_holds_are_refused_before_building(tmp_path, capsys, body, keys):
    """Before: `lyra train` / `lyra model-info` tried to allocate terabytes (an `unexpected
    RuntimeError` line)."""
    path = tmp_path / "run.toml"
    path.write_text(f"[model]\n{body}\n")
    for args in (["config", "show", str(path)], ["model-info", str(path)], ["train", str(path)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"lyra: error: {path}") and err.count("\n") == 1, err
        assert f"model.{keys}: these sizes make a model of more than " in err and "unexpected" not in err, err
    ModelConfig(), ModelConfig.small(), ModelConfig(base_channels=256)   # real models stay well inside


def test_the_bounds_themselves_are_accepted(tmp_path):
    cfg = TrainConfig.from_mapping({"seed": 2**63 - 1, "runtime": {"threads": 1024}, "optim": {"grad_accum": 4096},
                                    "data": {"val_clips": 4096},
                                    "loss": {"n_mels": 257, "fft_sizes": [512], "hop_sizes": [128], "win_lengths": [512]}})
    assert cfg.seed == 2**63 - 1 and cfg.loss.n_mels == 257


def test_train_refuses_each_before_building_anything(tmp_path, capsys):
    """Before: seed = -1 / 10^20 and eps = nan were `unexpected ValueError` lines; n_mels = 10^8
    asked for 205 GB; grad_accum / val_clips = 10^9 spun for minutes."""
    for body, message in [("seed = -1", "seed: must be an integer"), ("[optim]\neps = nan", "optim.eps: must be a finite"),
                          ("[optim]\ngrad_accum = 1000000000", "optim.grad_accum: must be at most"),
                          ("[data]\nval_clips = 1000000000", "data.val_clips: must be at most"),
                          ("[loss]\nn_mels = 100000000", "loss.n_mels: 100000000 mel bands are more than")]:
        config = tmp_path / "run.toml"
        config.write_text(f'run_dir = "{tmp_path / "run"}"\n{body}\n')
        assert main(["train", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"lyra: error: {config}: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_the_installed_cli_refuses_an_infinite_lr_and_a_million_threads(tmp_path):
    """Before: lr = inf trained to "done", exit 0; threads = 10^6 crashed the process."""
    cases = [("[optim]\nlr = inf", "optim.lr: must be a finite number, got inf"),
             ("[runtime]\nthreads = 1000000", "runtime.threads: must be at most 1,024, got 1,000,000")]
    configs = []
    for i, (body, _) in enumerate(cases):
        configs.append(tmp_path / f"run{i}.toml")
        configs[-1].write_text(f'run_dir = "{tmp_path / "run"}"\n{body}\n')
    for config, (_, message), done in zip(configs, cases, lyra_many([("train", c) for c in configs], cwd=tmp_path)):
        assert done.returncode == 1 and done.stderr == f"lyra: error: {config}: {message}\n", done.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Item 13: files that are not TOML text
# ---------------------------------------------------------------------------------------
def test_a_checkpoint_where_a_toml_is_expected(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, ck)
    for args in (["config", "show", str(ck)], ["train", str(ck)], ["model-info", str(ck)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err == f"lyra: error: {ck}: is a checkpoint (a binary file), not a TOML config\n", (args, err)


@pytest.mark.parametrize("content, message", [
    (b'seed = 0\n\xff\n', "line 2: byte 0xff is not UTF-8 text; a TOML config is UTF-8"),
    (b'run_dir = "caf\xe9"\n', "line 1: byte 0xe9 is not UTF-8 text; a TOML config is UTF-8"),
    (b"seed = 0\n\0\0\0", "is a binary file, not a TOML config"),
    (b"\x89LYRA\r\n\x1a\n" + bytes(40), "is a .lyra file (a binary file), not a TOML config"),
    (len(b'{"a":1}').to_bytes(8, "little") + b'{"a":1}', "is a safetensors file (a binary file), not a TOML config"),
    (b"seed = " + b"9" * 5000 + b"\n", "invalid TOML: Exceeds the limit (4300 digits) for integer string conversion"),
    (b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "invalid TOML: arrays or tables nested too deeply"),
    (b"[model.options.snake]\nx = " + b"[" * 40 + b"]" * 40 + b"\n", "arrays or tables nested more than 32 deep"),
])
def test_files_that_are_not_toml_text(tmp_path, capsys, content, message):
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    status, out, err = config_show(capsys, path)
    assert status == 1 and not out
    assert one_error_line(err, path).startswith(message), err


def test_a_file_far_too_large_for_a_config_is_not_read_to_the_end(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"# " + b"x" * (16 << 20) + b"\n")
    with pytest.raises(LyraError, match=r"more than 16 MiB, too large for a TOML config$"):
        read_toml(path)


def test_set_values_beyond_what_can_be_read(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("")
    for value, message in [("9" * 5000, "--set seed: Exceeds the limit (4300 digits)"),
                           ("[" * 5000, "--set seed: the value's lists nest too deeply")]:
        status, out, err = config_show(capsys, path, "--set", f"seed={value}")
        assert status == 1 and err.startswith(f"lyra: error: {message}") and err.count("\n") == 1, err


# ---------------------------------------------------------------------------------------
# Fuzz: seeded mutations of the shipped configs through `lyra config show`
# ---------------------------------------------------------------------------------------
HOSTILE_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e400", "-0.0", "1e-400", "9" * 25, "9" * 5000, '"x"', '""',
                  "[]", "{}", "true", "[[[[1]]]]", "2147483648", "100000000", "[1, 2, 3, 4, 5, 6, 7]",
                  '"\\ud800"', "{ a = nan }", "[nan]", "0x7fffffffffffffff", "1979-05-27"]


def mutate(text: bytes, rng: random.Random) -> bytes:
    """One to three seeded edits: bytes flipped, inserted or deleted, a cut, a value replaced,
    a line duplicated or dropped."""
    data = bytearray(text)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        at = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = bytes(rng.choice([b"\xff", b"\0", b"[", b"]", b"=", b'"', b"\n", b"9" * 30, b".", b"{"]))
        elif op == 2:
            del data[at:at + rng.randint(1, 40)]
        elif op == 3:
            data = data[:at]
        else:
            lines = bytes(data).split(b"\n")
            keyed = [i for i, line in enumerate(lines) if b" = " in line and not line.startswith(b"#")]
            if not keyed:
                continue
            i = rng.choice(keyed)
            if op in (4, 5):
                key = lines[i].split(b" = ")[0]
                lines[i] = key + b" = " + rng.choice(HOSTILE_VALUES).encode()
            elif rng.random() < 0.5:
                lines.insert(i, lines[i])      # a key given twice
            else:
                del lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


@pytest.mark.parametrize("name", ["default.toml", "demo.toml"])
def test_fuzzed_configs_give_one_error_line_or_a_finite_config(tmp_path, capsys, name):
    original = (REPO / "configs" / name).read_bytes()
    rng = random.Random(f"lyra-config-fuzz-{name}")
    outcomes = {"error": 0, "ok": 0}
    for i in range(100):
        path = tmp_path / f"m{i}.toml"
        path.write_bytes(mutate(original, rng))
        status, out, err = config_show(capsys, path)
        if status == 0:
            assert not err, err
            shown = tomllib.loads(out)        # what it printed is TOML, every number finite
            assert all_finite(shown), out
            assert TrainConfig.from_mapping(shown) is not None
            outcomes["ok"] += 1
        else:
            assert status == 1 and not out, (i, status, out)
            assert err.startswith("lyra: error: ") and err.count("\n") == 1, (i, err)
            assert "unexpected" not in err and "LYRA_DEBUG" not in err, (i, err)
            # Every error names the file (a key's error names the key too).
            assert err.startswith(f"lyra: error: {path}: "), (i, err)
            outcomes["error"] += 1
    assert outcomes["error"] > 20 and outcomes["ok"] > 5, outcomes   # the fuzz reaches both


def test_fuzzed_configs_through_the_installed_cli(tmp_path):
    """A handful of the mutations through `lyra config show` as users run it."""
    original = (REPO / "configs" / "default.toml").read_bytes()
    rng = random.Random("lyra-config-fuzz-cli")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"m{i}.toml")
        paths[-1].write_bytes(mutate(original, rng))
    for path, done in zip(paths, lyra_many([("config", "show", p) for p in paths], cwd=tmp_path)):
        if done.returncode == 0:
            assert all_finite(tomllib.loads(done.stdout.decode())) and not done.stderr
        else:
            assert done.returncode == 1 and done.stderr.startswith(f"lyra: error: {path}: "), done.stderr
            assert done.stderr.count("\n") == 1 and "unexpected" not in done.stderr, done.stderr
