"""Batched folder pre-encoding (``--batch-size N``, `lyra.codec.batching`) writes the latents
single-file encoding writes, within float rounding, for clips of many lengths; padding past a
clip's own frames would leak (which is why batches hold equal frame counts only); a file that
fails fails alone; ``--sample`` stores seeded, reproducible posterior samples."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lyra
from cli_helpers import lyra as run_lyra
from cli_helpers import small_checkpoint, write_wav
from lyra.audio.container import read_lyra
from lyra.codec import batching
from lyra.codec.batching import Item, Written, encode_batches, file_seed

HOP = 2048
# The bound measured on this model (2-core x86-64 CPU, one thread): |batched - alone| <= 4.5e-7
# with max |z| = 0.32, i.e. 1.4e-6 of the latents' range; asserted with headroom.
BOUND = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=11)


def mixed_lengths(folder: Path, seed: int) -> dict[str, int]:
    """Clips in groups of equal frame counts (1, 2, 3, 5 frames: batches form) and clips of
    their own length, mono and stereo; relative path -> samples."""
    rng = random.Random(seed)
    lengths = {}
    (folder / "sub").mkdir(parents=True)
    for i in range(18):
        frames = [1, 2, 3, 5][i % 4] if i < 14 else rng.randrange(6, 9)
        n = frames * HOP - rng.randrange(0, HOP)
        rel = f"{'sub/' if i % 5 == 0 else ''}c{i:02d}.wav"
        write_wav(folder / rel, n, channels=rng.choice([1, 2]), seed=seed * 100 + i)
        lengths[rel] = n
    return lengths


def test_batched_encoding_equals_single_file_encoding_for_mixed_lengths(tmp_path, ckpt):
    lengths = mixed_lengths(tmp_path / "music", seed=random.randrange(1000))
    common = ["-c", ckpt, "--dtype", "float32", "--threads", "1"]
    one = run_lyra("encode", "music", "one", *common, "--manifest", "one.jsonl", cwd=tmp_path)
    many = run_lyra("encode", "music", "many", *common, "--manifest", "many.jsonl", "--batch-size", "4", cwd=tmp_path)
    assert one.returncode == 0 and many.returncode == 0, (one.stderr, many.stderr)
    assert "18 files written to many" in many.stderr
    for rel in lengths:
        out = Path(rel).with_suffix(".lyra")
        h1, z1, t1 = read_lyra(tmp_path / "one" / out)
        h2, z2, t2 = read_lyra(tmp_path / "many" / out)
        assert (h1, t1) == (h2, t2), rel
        assert t1.num_samples == lengths[rel]
        assert (z1 - z2).abs().max() <= BOUND * max(1.0, z1.abs().max().item()), rel
    manifest = [{**json.loads(line), "output": None} for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert manifest == [{**json.loads(line), "output": None} for line in (tmp_path / "many.jsonl").read_text().splitlines()]
    s1, s2 = (json.loads((tmp_path / f"{name}.stats.json").read_text()) for name in ("one", "many"))
    assert s1["frames"] == s2["frames"] and s1["files"] == s2["files"] == 18
    np.testing.assert_allclose(s1["std"], s2["std"], rtol=1e-4)


def test_batches_hold_equal_frame_counts_and_padding_further_would_leak(tmp_path, ckpt, monkeypatch):
    codec = lyra.Codec.load(ckpt, device="cpu")
    lengths = mixed_lengths(tmp_path / "music", seed=random.randrange(1000))
    seen: list[tuple[int, int]] = []
    real = batching.encode_latents

    def spy(codec, audio, seeds):
        seen.append((audio.shape[0], audio.shape[-1]))
        return real(codec, audio, seeds)

    monkeypatch.setattr(batching, "encode_latents", spy)
    items = [Item(i, tmp_path / "music" / rel, tmp_path / "out" / f"{i}.lyra", n / 44100)
             for i, (rel, n) in enumerate(sorted(lengths.items()))]
    outcomes = dict((item.index, out) for item, out in encode_batches(codec, items, batch_size=3, dtype="float32",
                                                                        downmix=False))
    assert sorted(outcomes) == list(range(18)) and all(isinstance(o, Written) for o in outcomes.values())
    assert sum(b for b, _ in seen) == 18 and max(b for b, _ in seen) == 3          # batches did form
    assert all(t % HOP == 0 for _, t in seen)                                       # each padded to F * hop only
    for item in items:
        alone = codec.encode(lyra.audio.reading.load_audio(str(item.source), 44100, 2, False)[0])
        stored = read_lyra(item.target)[1]
        assert (alone - stored).abs().max() <= BOUND * max(1.0, alone.abs().max().item())

    # Why not pad short clips to a longer clip's length: their last frames change by far more.
    clip = torch.randn(2, 3 * HOP - 700) * 0.3
    alone = codec.encode(clip)                                                      # [D, 3]
    padded = batching.encode_latents(codec, F.pad(clip, (0, 5 * HOP - clip.shape[-1]))[None], [None])[0, :, :3]
    assert (alone - padded).abs().max() > 100 * BOUND * max(1.0, alone.abs().max().item())


def test_a_failing_file_fails_alone_and_options_that_do_not_go_together_are_refused(tmp_path, ckpt):
    mixed_lengths(tmp_path / "music", seed=3)
    (tmp_path / "music" / "bad.wav").write_text("not audio")
    done = run_lyra("encode", "music", "out", "-c", ckpt, "--batch-size", "8", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("lyra: error: music/bad.wav: not a readable audio file") == 1, done.stderr
    assert "1 of 19 files failed" in done.stderr
    assert len(list((tmp_path / "out").rglob("*.lyra"))) == 18
    for args, message in [(["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
                          (["--batch-size", "2", "--stream"], "--stream: encodes one file at a time"),
                          (["--sample", "--stream"], "cannot be combined with --sample")]:
        done = run_lyra("encode", "music", "out2", "-c", ckpt, *args, cwd=tmp_path)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    done = run_lyra("encode", "music/c01.wav", "x.lyra", "-c", ckpt, "--batch-size", "2", cwd=tmp_path)
    assert done.returncode == 1 and "--batch-size: only with a folder IN" in done.stderr


# ---------------------------------------------------------------------------------------
# --sample
# ---------------------------------------------------------------------------------------
def test_sample_stores_seeded_reproducible_posterior_samples(tmp_path, ckpt):
    mixed_lengths(tmp_path / "music", seed=5)
    common = ["-c", ckpt, "--dtype", "float32", "--threads", "1", "--sample"]
    runs = {name: run_lyra("encode", "music", name, *common, *extra, "--manifest", f"{name}.jsonl", cwd=tmp_path)
            for name, extra in [("a", ["--seed", "7"]), ("b", ["--seed", "7"]), ("c", ["--seed", "8"]),
                                ("d", ["--seed", "7", "--batch-size", "4"])]}
    assert all(r.returncode == 0 for r in runs.values()), {k: r.stderr for k, r in runs.items()}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.lyra"))
    assert len(files) == 18
    codec = lyra.Codec.load(ckpt, device="cpu")
    residuals = []
    for rel in files:
        za, zb, zc, zd = (read_lyra(tmp_path / name / rel)[1] for name in "abcd")
        assert torch.equal(za, zb), rel                                 # the same seed: the same bytes
        assert (za - zd).abs().max() <= BOUND * max(1.0, za.abs().max().item()) * 10   # any batch
        assert not torch.allclose(za, zc)                               # another seed, another sample
        source = tmp_path / "music" / rel.with_suffix(".wav")
        x = lyra.audio.reading.load_audio(str(source), 44100, 2, False)[0]
        with torch.inference_mode():
            mean, logvar = codec.model.encode(F.pad(x, (0, za.shape[-1] * HOP - x.shape[-1]))[None])
        residuals.append(((za - mean[0]) / torch.exp(0.5 * logvar[0])).flatten())
        assert not torch.allclose(za, mean[0], atol=1e-4)               # not the mean
    eps = torch.cat(residuals).double()                                 # standardised: N(0, 1) draws
    assert eps.numel() > 500
    assert abs(eps.mean().item()) < 5 / eps.numel() ** 0.5 and abs(eps.std().item() - 1) < 5 / (2 * eps.numel()) ** 0.5
    assert json.loads((tmp_path / "a.stats.json").read_text())["posterior"] == "sample"
    assert file_seed(7, "c00.lyra") != file_seed(7, "c01.lyra") and file_seed(7, "x") == file_seed(7, "x")


def test_sample_is_refused_for_a_bottleneck_without_a_posterior(tmp_path):
    from lyra.model.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "fsq.pt", lyra.build_model(lyra.ModelConfig.small(bottleneck="fsq")))
    mixed_lengths(tmp_path / "music", seed=1)
    done = run_lyra("encode", "music", "out", "-c", tmp_path / "fsq.pt", "--sample", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "lyra: error: --sample: draws from the Gaussian posterior of the vae bottleneck; this model's bottleneck is 'fsq'"]
    done = run_lyra("encode", "music", "out", "-c", tmp_path / "fsq.pt", "--batch-size", "2", cwd=tmp_path)
    assert done.returncode == 1 and "--batch-size: batches float latents (the vae bottleneck)" in done.stderr


def test_means_and_samples_are_never_mixed_in_one_folder(tmp_path, ckpt):
    mixed_lengths(tmp_path / "music", seed=2)
    base = ["encode", "music", "out", "-c", ckpt, "--threads", "1", "--manifest", "out.jsonl"]
    assert run_lyra(*base, "--sample", "--seed", "3", cwd=tmp_path).returncode == 0
    for extra, asks in [([], "posterior means"), (["--sample", "--seed", "4"], "posterior samples of --seed 4")]:
        done = run_lyra(*base, *extra, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"lyra: error: out: holds posterior samples of --seed 3, and this run asks for {asks} (pass --force to "
            "encode every file again, or use another OUT)"]
    again = run_lyra(*base, "--sample", "--seed", "3", cwd=tmp_path)             # the same: resumed
    assert again.returncode == 0 and "skipped 18 already encoded" in again.stderr
    stats = run_lyra("stats", "out.jsonl", "-o", "-", cwd=tmp_path)
    assert stats.returncode == 0 and stats.stdout == (tmp_path / "out.stats.json").read_bytes()
    assert run_lyra(*base, "--force", cwd=tmp_path).returncode == 0              # means now
    assert json.loads((tmp_path / "out.stats.json").read_text())["posterior"] == "mean"
    done = run_lyra(*base, "--sample", cwd=tmp_path)
    assert done.returncode == 1 and "out: holds posterior means, and this run asks for posterior samples" in done.stderr
