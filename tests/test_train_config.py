"""The run config: defaults, one-line validation errors, `lyra config init/show`, shipped configs."""

import tomllib
from pathlib import Path

import pytest

from lyra.cli import main
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.train.config import TrainConfig, apply_overrides, commented_toml
from lyra.apps.demo import DEMO_TOML_HEADER, demo_config
from lyra.core.toml import dumps

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_follow_the_design_document():
    cfg = TrainConfig()
    assert cfg.data.batch_size == 4
    assert cfg.data.segment_length == 40960
    assert cfg.model == ModelConfig()
    assert (cfg.model.sample_rate, cfg.model.channels) == (44100, 2)
    assert cfg.data.silence_threshold_db == -40.0 and cfg.data.peak == 0.95
    assert cfg.loss.fft_sizes == (1024, 2048, 512) and cfg.loss.hop_sizes == (120, 240, 50)
    assert cfg.loss.win_lengths == (600, 1200, 240)


def test_a_toml_file_is_read_into_typed_tables(tmp_path):
    path = _write(tmp_path / "run.toml", """
run_dir = "out"
[model]
base_channels = 16
c_mults = [1, 2, 2, 4, 4]
latent_dim = 16
[data]
train_dir = "audio"
batch_size = 8
[optim]
lr = 3e-4
betas = [0.9, 0.95]
[loss]
stereo = "sum_difference"
n_mels = 64
""")
    cfg = TrainConfig.load(path)
    assert cfg.model == ModelConfig.small()
    assert cfg.data.batch_size == 8 and cfg.data.train_dir == "audio"
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.95)
    assert cfg.loss.stereo == "sum_difference" and cfg.loss.n_mels == 64
    assert cfg.data.segment_length == 40960  # untouched keys keep their defaults


@pytest.mark.parametrize("text, message", [
    ("[data]\nbatch_sise = 4\n", r"run\.toml: unknown key 'data\.batch_sise' \(did you mean 'batch_size'\?\)"),
    ("[optimm]\nlr = 1\n", r"unknown key 'optimm' \(did you mean 'optim'\?\)"),
    ("[data]\nbatch_size = \"4\"\n", r"run\.toml: data\.batch_size: expected an integer, got a string '4'"),
    ("[optim]\nlr = -1.0\n", r"optim\.lr: must be positive, got -1\.0"),
    ("[loss]\nstereo = \"mid\"\n", r"loss\.stereo: expected one of"),
    ("[loss]\nkl_weight = 0.1\nkl_floor = 0.5\n", r"loss\.kl_floor: must not exceed kl_weight"),
    ("[data]\nsegment_length = 512\n", r"data\.segment_length: 512 samples is too short"),
    ("[model]\nchannels = 1\n[loss]\nstereo = \"both\"\n", r"loss\.stereo: 'both' needs a stereo model"),
    ("[runtime]\ndevice = \"tpu\"\n", r"runtime\.device: expected auto, cpu, cuda or cuda:N"),
    ("[model]\nstrides = [2, 4]\n", r"model\.c_mults/strides: lengths differ"),
    ("data = 3\n", r"data: expected a table, got an integer"),
])
def test_bad_configs_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    path = _write(tmp_path / "run.toml", text)
    with pytest.raises(LyraError, match=message) as info:
        TrainConfig.load(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_overrides_are_parsed_as_toml_and_validated():
    data = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3e-4", "data.train_dir=some/folder",
                                                    "loss.fft_sizes=[4096, 1024, 512]", "runtime.compile=true"])
    assert data == {"optim": {"lr": 3e-4}, "data": {"train_dir": "some/folder"},
                    "loss": {"fft_sizes": [4096, 1024, 512]}, "runtime": {"compile": True}}
    with pytest.raises(LyraError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])


def test_toml_writer_round_trips_through_tomllib():
    data = {"a": 1, "b": -2.5e-8, "c": "quote \" and \\ and é", "d": [1, 2], "e": True, "f": float("inf"),
            "t": {"x": [0.5, 1e300], "y": {"k": "v", "spaced key": 1}, "z": {}}, "u": {"w": []}}
    assert tomllib.loads(dumps(data)) == data


def test_config_init_writes_a_commented_config_of_the_defaults(tmp_path, capsys):
    out = tmp_path / "cfg.toml"
    assert main(["config", "init", str(out)]) == 0
    text = out.read_text()
    assert "# folder scanned recursively for training audio" in text
    assert "# val_dir = (unset)" in text
    assert TrainConfig.load(out) == TrainConfig()
    assert main(["config", "init", str(out)]) == 1                       # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["config", "init", str(out), "--small", "--force"]) == 0
    assert TrainConfig.load(out).model == ModelConfig.small()
    capsys.readouterr()
    assert main(["config", "init"]) == 0                                 # standard output
    assert tomllib.loads(capsys.readouterr().out)["data"]["batch_size"] == 4


def test_config_show_prints_the_resolved_config(tmp_path, capsys):
    path = _write(tmp_path / "run.toml", "[data]\nbatch_size = 2\n")
    assert main(["config", "show", str(path), "--set", "optim.lr=0.002"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    cfg = TrainConfig.from_mapping(shown)
    assert cfg.data.batch_size == 2 and cfg.optim.lr == 0.002
    assert cfg.model == ModelConfig() and shown["data"]["segment_length"] == 40960
    assert main(["config", "show", str(path), "--set", "optim.lrr=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lyra: error: {path}: unknown key 'optim.lrr' (did you mean 'lr'?)") and "\n" not in err


def test_shipped_configs_load_and_mean_what_they_say():
    assert TrainConfig.load(REPO / "configs" / "default.toml") == TrainConfig()
    assert TrainConfig.load(REPO / "configs" / "demo.toml") == demo_config("demo-out")
    # Both files are exactly what `lyra config init` writes for them (comments included).
    assert commented_toml(TrainConfig()) == (REPO / "configs" / "default.toml").read_text()
    assert commented_toml(demo_config("demo-out"), DEMO_TOML_HEADER) == (REPO / "configs" / "demo.toml").read_text()


def test_train_fails_in_one_line_before_anything_heavy(tmp_path, capsys, monkeypatch):
    import lyra.train.run_setup as run_setup

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be built when the data folder is bad")

    monkeypatch.setattr(run_setup, "build_model", no_model)
    cases = [
        ("missing.toml", None, "missing.toml: no such config file"),
        ("run.toml", f'[data]\ntrain_dir = "{tmp_path / "nope"}"\n', f"data.train_dir: folder {tmp_path / 'nope'} does not exist"),
        ("run.toml", f'[data]\ntrain_dir = "{tmp_path / "empty"}"\n', f"data.train_dir: folder {tmp_path / 'empty'} has no audio files"),
        ("run.toml", "[data]\ntrain_dir = 5\n", "data.train_dir: expected a string"),
        ("run.toml", f'[data]\ntrain_dir = "{tmp_path / "empty"}"\n[logging]\nwandb = true\n', "has no audio files"),
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not audio")
    for name, text, expected in cases:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert main(["train", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert expected in err, err
        assert err.count("\n") == 0 and "Traceback" not in err


def test_demo_adversarial_config_is_the_demo_plus_discriminators():
    """configs/demo-adversarial.toml (BENCHMARKS.md's with/without comparison) differs from the
    demo's run only in run_dir and [adversarial], and is written by `lyra config init`'s writer."""
    path = REPO / "configs" / "demo-adversarial.toml"
    adv, demo = TrainConfig.load(path), TrainConfig.load(REPO / "configs" / "demo.toml")
    assert adv.adversarial.enabled and not demo.adversarial.enabled
    for table in ("model", "data", "optim", "loss", "runtime", "ema", "checkpoint"):
        assert getattr(adv, table) == getattr(demo, table), table
    text = path.read_text()
    header = "\n".join(line[2:] for line in text.split("\n\n")[0].splitlines())
    assert commented_toml(adv, header) == text
