"""Latent statistics (`lyra.codec.statistics`): pre-encoding writes the per-channel mean and std
beside the manifest, equal to a float64 computation over every stored frame, and the same
bytes from one process, two torchrun processes and an interrupted-and-resumed run; `lyra
stats` recomputes them (also for folders written before this existed, format version 1
included); `lyra.Codec` normalises with them; `--sample` stores seeded posterior samples."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import lyra, lyra_env, small_checkpoint, write_wav
from lyra.audio.container import read_lyra
from lyra.codec.statistics import LatentStats, Moments, merge, merge_all, moments_of, refuse_codes, stats_path
from lyra.core.errors import LyraError

REPO = Path(__file__).resolve().parents[1]
V1 = Path(__file__).parent / "data" / "v1.lyra"

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=5)


def music(folder: Path, count: int = 7, seed: int = 0) -> None:
    """Files of mixed lengths, rates and channel counts, some in a subfolder."""
    rng = random.Random(seed)
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        where = folder / "sub" if i % 3 == 0 else folder
        write_wav(where / f"clip{i}.wav", rng.randrange(1500, 12000), channels=rng.choice([1, 2]),
                  rate=rng.choice([44100, 22050]), seed=seed * 100 + i)


def float64_reference(outputs: list[Path]) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and population std per channel of every frame of `outputs`, concatenated, in float64."""
    frames = np.concatenate([read_lyra(p)[1].double().numpy() for p in outputs], axis=1)   # [D, sum F]
    return frames.mean(axis=1), frames.std(axis=1), frames.shape[1]


def outputs_of(manifest: Path, cwd: Path) -> list[Path]:
    return [cwd / json.loads(line)["output"] for line in manifest.read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# The accumulator
# ---------------------------------------------------------------------------------------
def test_merged_moments_equal_numpy_over_all_frames_for_any_split():
    rng = np.random.default_rng()
    # A large offset and a small spread: a naive sum of squares would lose most digits.
    x = 1e4 + rng.standard_normal((5, 997)) * rng.uniform(1e-3, 10, (5, 1))
    cuts = np.sort(rng.choice(np.arange(1, 997), 9, replace=False))
    parts = [moments_of(torch.from_numpy(piece)) for piece in np.split(x, cuts, axis=1)]
    total = merge_all(parts)
    assert total.count == 997
    np.testing.assert_allclose(total.mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(total.variance, x.var(axis=1), rtol=1e-9)
    # Merging in another grouping gives the same moments to float rounding.
    other = merge(merge_all(parts[:4]), merge_all(parts[4:]))
    np.testing.assert_allclose(other.variance, total.variance, rtol=1e-9)
    assert merge(total, Moments(0, np.zeros(5), np.zeros(5))) is total


def test_stats_from_moments_give_the_global_std_of_all_channels_together():
    x = torch.randn(4, 300, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [0.5], [3.0]]) + 0.3
    stats = LatentStats.from_moments(moments_of(x), files=1, model_fingerprint="f", dtype="float32")
    np.testing.assert_allclose(stats.std, x.numpy().std(axis=1), rtol=1e-12)
    assert stats.global_mean == pytest.approx(float(x.mean()), rel=1e-12)
    assert stats.global_std == pytest.approx(float(x.numpy().std()), rel=1e-12)


# ---------------------------------------------------------------------------------------
# Pre-encoding writes them: 1 process == 2 torchrun processes == interrupted + resumed
# ---------------------------------------------------------------------------------------
def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "lyra", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=lyra_env(PYTHONPATH=str(REPO)), timeout=600)


def test_preencoding_writes_stats_equal_to_float64_and_the_same_from_torchrun_and_a_resumed_run(tmp_path, ckpt):
    music(tmp_path / "music")
    single, multi, resumed = (tmp_path / name for name in ("single", "multi", "resumed"))
    for folder in (single, multi, resumed):
        folder.mkdir()
    args = ["encode", "../music", "latents", "-c", ckpt, "--manifest", "latents.jsonl", "--threads", "1",
            "--dtype", "float32"]
    done = lyra(*args, cwd=single)
    assert done.returncode == 0, done.stderr
    stats = json.loads((single / "latents.stats.json").read_text())

    # Equal to a float64 computation over every frame as stored.
    outputs = outputs_of(single / "latents.jsonl", single)
    assert len(outputs) == 7
    mean, std, frames = float64_reference(outputs)
    assert stats["frames"] == frames and stats["files"] == 7 and stats["latent_dim"] == mean.shape[0]
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-12)
    assert stats["dtype"] == "float32" and stats["posterior"] == "mean"
    assert stats["model_fingerprint"] == read_lyra(outputs[0])[0].model_fingerprint

    # Two torchrun processes (each encodes some of the files): the same bytes.
    two = torchrun(*args, cwd=multi)
    assert two.returncode == 0, two.stderr
    assert "with 2 processes" in two.stderr
    assert (multi / "latents.stats.json").read_bytes() == (single / "latents.stats.json").read_bytes()

    # Interrupted: some outputs complete, one cut short, the rest and manifest/stats never written.
    shutil.copytree(single / "latents", resumed / "latents")
    kept = sorted((resumed / "latents").rglob("*.lyra"))
    for p in kept[:3]:
        p.unlink()
    kept[3].write_bytes(kept[3].read_bytes()[:-20])
    again = lyra(*args, cwd=resumed)
    assert again.returncode == 0, again.stderr
    assert "skipped 3 already encoded" in again.stderr and "1 incomplete" in again.stderr
    assert (resumed / "latents.stats.json").read_bytes() == (single / "latents.stats.json").read_bytes()

    # `lyra stats` recomputes the same bytes, from the manifest or from the folder.
    (single / "latents.stats.json").rename(single / "written.json")
    again = lyra("stats", "latents.jsonl", cwd=single)
    assert again.returncode == 0, again.stderr
    assert (single / "latents.stats.json").read_bytes() == (single / "written.json").read_bytes()
    assert f"statistics of 7 files ({frames} frames" in again.stderr
    folder = lyra("stats", "latents", "-q", cwd=single)
    assert folder.returncode == 0 and folder.stderr == ""
    assert folder.stdout == (single / "written.json").read_bytes()


def test_stats_of_a_folder_written_by_an_older_version(tmp_path):
    """Format version 1 files (tests/data/v1.lyra, from commit d4a95ad), no stats file, no model."""
    (tmp_path / "old" / "deep").mkdir(parents=True)
    shutil.copy(V1, tmp_path / "old" / "a.lyra")
    shutil.copy(V1, tmp_path / "old" / "deep" / "b.lyra")
    done = lyra("stats", tmp_path / "old", "-o", tmp_path / "old.stats.json")
    assert done.returncode == 0, done.stderr
    stats = LatentStats.read(tmp_path / "old.stats.json")
    values = torch.linspace(-2, 2, 48).reshape(16, 3).half().double().numpy()    # what v1.lyra holds
    both = np.concatenate([values, values], axis=1)
    assert stats.frames == 6 and stats.files == 2 and stats.dtype == "float16"
    np.testing.assert_allclose(stats.mean, both.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, both.std(axis=1), rtol=1e-12)


def test_stats_refuse_what_they_cannot_use(tmp_path, ckpt):
    (tmp_path / "empty").mkdir()
    done = lyra("stats", tmp_path / "empty")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "lyra: error: latent statistics: no .lyra files to compute them from"]
    (tmp_path / "mixed").mkdir()
    shutil.copy(V1, tmp_path / "mixed" / "a.lyra")
    music(tmp_path / "music", count=1)
    assert lyra("encode", tmp_path / "music" / "sub" / "clip0.wav", tmp_path / "mixed" / "b.lyra", "-c", ckpt).returncode == 0
    done = lyra("stats", tmp_path / "mixed")
    assert done.returncode == 1 and "b.lyra: model_fingerprint" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.jsonl").write_text("not json\n")
    done = lyra("stats", tmp_path / "bad.jsonl")
    assert done.returncode == 1 and "bad.jsonl: line 1 is not JSON" in done.stderr
    with pytest.raises(LyraError, match="^x.lyra: holds integer codes"):
        refuse_codes("codes", "x.lyra")
    (tmp_path / "s.json").write_text(json.dumps({"format": "lyra-latent-stats", "version": 1, "latent_dim": 2,
                                                 "mean": [0, 1], "std": [1]}))
    with pytest.raises(LyraError, match="s.json: 'std' must be a list of latent_dim finite numbers"):
        LatentStats.read(tmp_path / "s.json")
    assert stats_path("a/latents.jsonl") == Path("a/latents.stats.json")
    assert stats_path("index") == Path("index.stats.json")


# ---------------------------------------------------------------------------------------
# lyra.Codec normalises and denormalises with them
# ---------------------------------------------------------------------------------------
def test_codec_normalizes_with_the_stats_and_denormalizes_back(tmp_path, ckpt):
    from lyra import Codec

    codec = Codec.load(ckpt, device="cpu")
    d = codec.latent_dim
    mean, std = np.random.default_rng().normal(size=d), np.random.default_rng().uniform(0.1, 3, d)
    stats = LatentStats(tuple(mean), tuple(std), 100, 2, codec.fingerprint, "float16", 0.0, 1.0)
    z = torch.randn(3, d, 11)
    with pytest.raises(LyraError, match="this codec has none"):
        codec.normalize(z)
    codec.stats = stats
    expected = (z.double() - torch.from_numpy(mean)[:, None]) / torch.from_numpy(std)[:, None]
    torch.testing.assert_close(codec.normalize(z), expected.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codec.denormalize(codec.normalize(z[0])), z[0], rtol=1e-5, atol=1e-5)
    stats.write(tmp_path / "s.json")
    torch.testing.assert_close(Codec.load(ckpt, device="cpu").normalize(z, tmp_path / "s.json"), codec.normalize(z))
    other = LatentStats(tuple(mean), tuple(std), 100, 2, "0123456789abcdef", "float16", 0.0, 1.0)
    with pytest.raises(LyraError, match="computed from model 0123456789abcdef's latents"):
        codec.normalize(z, other)
    with pytest.raises(LyraError, match=rf"expected shape \[{d}, frames\]"):
        codec.normalize(torch.randn(d + 1, 4))


def test_an_export_carries_the_stats_and_codec_load_gives_them_back(tmp_path, ckpt):
    from lyra import Codec

    music(tmp_path / "music", count=3)
    assert lyra("encode", "music", "latents", "-c", ckpt, "--manifest", "latents.jsonl", "--threads", "1",
                cwd=tmp_path).returncode == 0
    done = lyra("export", ckpt, tmp_path / "model.safetensors", "--latent-stats", tmp_path / "latents.stats.json")
    assert done.returncode == 0 and "with latent statistics" in done.stdout.decode(), done.stderr
    written = LatentStats.read(tmp_path / "latents.stats.json")
    assert Codec.load(ckpt, device="cpu").stats is None
    codec = Codec.load(tmp_path / "model.safetensors", device="cpu")
    assert codec.stats == written
    z = torch.randn(written.latent_dim, 5)
    torch.testing.assert_close(codec.normalize(z), written.normalize(z))
    # An export of that export keeps them; statistics of another model are refused.
    again = lyra("export", tmp_path / "model.safetensors", tmp_path / "again.safetensors")
    assert again.returncode == 0 and Codec.load(tmp_path / "again.safetensors", device="cpu").stats == written
    other = small_checkpoint(tmp_path / "other.pt", seed=99)
    done = lyra("export", other, tmp_path / "x.safetensors", "--latent-stats", tmp_path / "latents.stats.json")
    assert done.returncode == 1 and f"--latent-stats: computed from model {written.model_fingerprint}'s latents" in done.stderr
    assert not (tmp_path / "x.safetensors").exists()
