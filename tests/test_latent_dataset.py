"""`lyra.data.LatentDataset`: fixed-length crops of a pre-encoded folder's latents with padding
masks, normalised with the stored statistics, the manifest's metadata, deterministic from
(seed, epoch, index) in any worker; reading only the chunks a crop needs (`lyra.data.crops`)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cli_helpers import lyra, small_checkpoint, write_wav
from lyra.audio.container import Header, read_lyra, write_lyra
from lyra.codec.statistics import LatentStats
from lyra.core.errors import LyraError
from lyra.data import LatentDataset
from lyra.data import crops

HOP, SR = 2048, 44100
V1 = Path(__file__).parent / "data" / "v1.lyra"

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    """A folder of 9 clips of 1 to 12 frames, encoded (float32) with a manifest and stats."""
    root = tmp_path_factory.mktemp("encoded")
    ckpt = small_checkpoint(root / "small.pt", seed=2)
    rng = random.Random(4)
    (root / "music" / "sub").mkdir(parents=True)
    for i, frames in enumerate([1, 2, 3, 5, 6, 8, 9, 10, 12]):
        where = root / "music" / ("sub" if i % 2 else "")
        write_wav(where / f"x{i}.wav", frames * HOP - rng.randrange(0, HOP), channels=rng.choice([1, 2]), seed=i)
    done = lyra("encode", "music", "latents", "-c", ckpt, "--manifest", "latents.jsonl", "--dtype", "float32",
                "--threads", "1", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_crops_masks_and_metadata_are_the_stored_frames(encoded):
    data = LatentDataset(encoded / "latents.jsonl", frames=6, seed=random.randrange(1 << 30))
    assert len(data) == 9
    lines = [json.loads(line) for line in (encoded / "latents.jsonl").read_text().splitlines()]
    starts = set()
    for i in range(len(data)):
        item = data[i]
        rec = lines[i]
        full = read_lyra(encoded / rec["output"])[1]                     # [D, F]
        frames = full.shape[-1]
        n, start = item["length"], item["start"]
        assert frames == rec["frames"] and n == min(6, frames)
        assert 0 <= start <= max(0, frames - 6)
        assert item["latents"].shape == (full.shape[0], 6) and item["latents"].dtype == torch.float32
        assert torch.equal(item["latents"][:, :n], full[:, start:start + n])
        assert torch.equal(item["latents"][:, n:], torch.zeros(full.shape[0], 6 - n))
        assert item["mask"].tolist() == [True] * n + [False] * (6 - n)
        assert item["start_seconds"] == pytest.approx(start * HOP / SR)
        assert item["source"] == rec["source"] and item["output"] == rec["output"] and item["index"] == i
        assert item["metadata"] == rec
        starts.add(start)
    assert len(starts) > 1
    assert LatentDataset(encoded / "latents.jsonl", frames=6, random_crop=False)[8]["start"] == 0


def test_crops_are_deterministic_from_seed_epoch_and_index_in_any_worker(encoded):
    manifest = encoded / "latents.jsonl"
    a, b = LatentDataset(manifest, 4, seed=3), LatentDataset(manifest, 4, seed=3)
    order = list(range(9))
    random.shuffle(order)
    first = {i: a[i]["start"] for i in range(9)}
    assert {i: b[i]["start"] for i in order} == first                 # any order: the same crops
    assert [LatentDataset(manifest, 4, seed=4).crop_start(i) for i in range(9)] != list(first.values())
    b.set_epoch(1)
    assert [b.crop_start(i) for i in range(9)] != list(first.values())
    b.set_epoch(0)
    assert [b.crop_start(i) for i in range(9)] == list(first.values())
    # Two worker processes give the batches one process gives.
    batches = [list(DataLoader(LatentDataset(manifest, 4, seed=3), batch_size=3, num_workers=w)) for w in (0, 2)]
    for one, two in zip(*batches):
        assert torch.equal(one["latents"], two["latents"]) and torch.equal(one["mask"], two["mask"])
        assert one["source"] == two["source"] and torch.equal(one["metadata"]["frames"], two["metadata"]["frames"])


def test_normalised_crops_use_the_stats_beside_the_manifest_and_keep_padding_zero(encoded):
    data = LatentDataset(encoded / "latents.jsonl", 5, seed=1, normalize=True)
    stats = json.loads((encoded / "latents.stats.json").read_text())
    mean, std = np.array(stats["mean"]), np.array(stats["std"])
    for i in (0, 4, 8):
        item, raw = data[i], LatentDataset(encoded / "latents.jsonl", 5, seed=1)[i]
        n = item["length"]
        expected = (raw["latents"][:, :n].double().numpy() - mean[:, None]) / std[:, None]
        np.testing.assert_allclose(item["latents"][:, :n].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(item["latents"][:, n:], torch.zeros_like(item["latents"][:, n:]))
    other = LatentStats(tuple(mean), tuple(std), 10, 1, "0123456789abcdef", "float32", 0.0, 1.0)
    with pytest.raises(LyraError, match="but the statistics are of model 0123456789abcdef"):
        LatentDataset(encoded / "latents.jsonl", 5, normalize=True, stats=other)[0]


def test_extra_manifest_fields_come_through_for_captions(encoded, tmp_path):
    lines = [json.loads(line) for line in (encoded / "latents.jsonl").read_text().splitlines()]
    manifest = tmp_path / "captioned.jsonl"
    manifest.write_text("".join(json.dumps({**rec, "caption": f"clip {i}", "label": i}) + "\n"
                                for i, rec in enumerate(lines)))
    data = LatentDataset(manifest, 3, root=encoded)
    assert data[5]["metadata"]["caption"] == "clip 5" and data[5]["metadata"]["label"] == 5
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["metadata"]["caption"] == ["clip 0", "clip 1", "clip 2", "clip 3"]


def test_a_crop_reads_only_the_chunks_that_hold_it(tmp_path):
    """A file of 5 chunks (1024 frames each but the last) with its first chunk damaged: a crop in
    the last chunk reads fine (the first one's payload was skipped, not read), one in it fails."""
    z = torch.randn(8, 4500)
    header = Header(SR, 2, HOP, 8, "float32", "abcd", SR, 2)
    path = tmp_path / "long.lyra"
    write_lyra(path, header, z, 4500 * HOP, 4500 * HOP)
    data = bytearray(path.read_bytes())
    data[data.index(b"DATA") + 8 + 16 + 100] ^= 0xFF                       # inside chunk 1's values
    path.write_bytes(bytes(data))
    _, got = crops.read_frames(path, 4300, 64)
    assert torch.equal(got, z[:, 4300:4364])
    _, got = crops.read_frames(path, 4490, 64)                            # the file ends first
    assert torch.equal(got, z[:, 4490:])
    with pytest.raises(LyraError, match="the chunk at frame 0 fails its CRC32 check"):
        crops.read_frames(path, 10, 4)
    _, old = crops.read_frames(V1, 1, 2)                                   # format version 1, two chunks
    assert torch.equal(old, torch.linspace(-2, 2, 48).reshape(16, 3).half().float()[:, 1:3])


def test_start_up_opens_no_lyra_file_and_errors_are_one_line(encoded, tmp_path, monkeypatch):
    lines = (encoded / "latents.jsonl").read_text().splitlines()
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(lines[i % len(lines)] for i in range(20000)) + "\n")

    def refuse(*args):
        raise AssertionError("a .lyra file was opened")

    monkeypatch.setattr("lyra.data.latent_dataset.read_frames", refuse)
    assert len(LatentDataset(big, 16, root=encoded)) == 20000
    monkeypatch.undo()

    with pytest.raises(LyraError, match="no such latent statistics file"):
        LatentDataset(big, 16, root=encoded, normalize=True)
    with pytest.raises(LyraError, match="frames: must be a positive integer, got 0"):
        LatentDataset(big, 0, root=encoded)
    copy = tmp_path / "copy"
    shutil.copytree(encoded / "latents", copy / "latents")
    rec = json.loads(lines[-1])
    (copy / rec["output"]).unlink()
    with pytest.raises(LyraError, match=r"x\d\.lyra: no such \.lyra file"):
        LatentDataset(encoded / "latents.jsonl", 4, root=copy)[8]
    short = json.loads(lines[0])                                           # said to be 30 frames
    (tmp_path / "lying.jsonl").write_text(json.dumps({**short, "frames": 30}) + "\n")
    with pytest.raises(LyraError, match=rf"holds {short['frames']} frames, but .*lying.jsonl says 30"):
        LatentDataset(tmp_path / "lying.jsonl", 4, root=encoded, random_crop=False)[0]
    (tmp_path / "bad.jsonl").write_text('{"source": "a"}\n')
    with pytest.raises(LyraError, match="bad.jsonl: line 1 has no 'duration_s'"):
        LatentDataset(tmp_path / "bad.jsonl", 4)
