"""`lyra encode DIR OUT_DIR` as a dataset job (`lyra.codec.preencode`): a rerun skips complete outputs
and redoes incomplete ones and leftovers, --force redoes all, another model's outputs are refused,
the manifest's fields, the sharding, and torchrun on two CPU processes writing the bytes one
process writes (each file by one rank), with the progress bar only on a terminal."""

from __future__ import annotations

import collections
import json
import math
import os
import pty
import random
import re
import select
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli_helpers import CreatedFiles, lyra_env, lyra_executable, small_checkpoint, write_wav
from lyra.audio.resample import resampled_length
from lyra.cli import main
from lyra.audio.container import read_lyra
from lyra.codec.preencode import shard
from lyra.codec.resume import TEMPORARY

REPO = Path(__file__).resolve().parents[1]
SR = 44100
HOP = 2048

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


def dataset(folder: Path) -> dict[str, int]:
    """Short files (one mono at 22.05 kHz, one FLAC); relative path -> samples at the model's rate."""
    (folder / "sub").mkdir(parents=True)
    write_wav(folder / "a.wav", 9000, seed=1)
    write_wav(folder / "sub" / "b.wav", 3000, channels=1, rate=22050, seed=2)
    sf.write(folder / "c.flac", np.random.default_rng(3).uniform(-0.3, 0.3, (20000, 2)).astype(np.float32), SR)
    write_wav(folder / "d.wav", 2500, seed=4)
    return {"a.wav": 9000, "sub/b.wav": resampled_length(3000, 22050, SR), "c.flac": 20000, "d.wav": 2500}


def run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def state(folder: Path) -> dict[str, tuple[int, int]]:
    """Each .lyra file's (inode, mtime): a file replaced gets a new inode (written beside, renamed)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*.lyra")}


# ---------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------
def test_shards_are_balanced_by_duration_longest_first_and_deterministic():
    durations = [5.0, 1.0, 3.0, 3.0, 2.0, 0.0, 4.0, 2.0]
    # 5 -> r0, 4 -> r1, 3 -> r2, 3 -> r2 (6), 2 -> r1 (6), 2 -> r0 (7), 1 -> r1 (tie with r2: lower rank), 0 -> r2
    assert shard(durations, 3) == [[0, 7], [1, 4, 6], [2, 3, 5]]
    assert shard(durations, 1) == [list(range(8))]
    assert shard([], 2) == [[], []]
    rng = random.Random(0)
    many = [rng.uniform(1, 600) for _ in range(500)]
    shares = shard(many, 4)
    assert shares == shard(list(many), 4)                                   # the same on every rank
    assert sorted(i for share in shares for i in share) == list(range(500))  # each file exactly once
    loads = [sum(many[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(many)                              # greedy LPT's bound
    assert max(loads) - min(loads) < 0.01 * sum(many)                        # and in practice far better


# ---------------------------------------------------------------------------------------
# Resuming, --force, the manifest
# ---------------------------------------------------------------------------------------
def test_a_rerun_skips_complete_outputs_and_redoes_incomplete_ones(tmp_path, capsys, ckpt):
    lengths = dataset(tmp_path / "music")
    music, out, manifest = tmp_path / "music", tmp_path / "out", tmp_path / "index.jsonl"
    code, err = run(capsys, "encode", music, out, "-c", ckpt, "--manifest", manifest)
    assert code == 0, err
    assert "4 files written to" in err and "\x1b" not in err                   # no progress codes in a pipe
    originals = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.lyra")}
    assert sorted(originals) == ["a.lyra", "c.lyra", "d.lyra", "sub/b.lyra"]

    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["source"] for r in lines] == [str(music / rel) for rel in sorted(lengths)]
    for r in lines:
        rel = Path(r["source"]).relative_to(music).as_posix()
        assert list(r) == ["source", "duration_s", "num_samples", "sample_rate", "frames", "output"]
        assert r["num_samples"] == lengths[rel] and r["sample_rate"] == SR
        assert r["frames"] == math.ceil(lengths[rel] / HOP) and r["duration_s"] == lengths[rel] / SR
        assert r["output"] == str((out / rel).with_suffix(".lyra"))
        _, latents, trailer = read_lyra(r["output"])
        assert latents.shape[-1] == trailer.num_frames == r["frames"] and trailer.num_samples == r["num_samples"]
    index = manifest.read_bytes()

    before = state(out)
    code, err = run(capsys, "encode", music, out, "-c", ckpt, "--manifest", manifest)
    assert code == 0, err
    assert "0 files written to" in err and "skipped 4 already encoded" in err
    assert state(out) == before and manifest.read_bytes() == index

    (out / "a.lyra").write_bytes(originals["a.lyra"][: len(originals["a.lyra"]) // 2])     # truncated
    damaged = bytearray(originals["c.lyra"])
    damaged[-40] ^= 0xFF                                                                     # a bit flipped
    (out / "c.lyra").write_bytes(bytes(damaged))
    (out / ".d.lyra.0123abcd.tmp").write_bytes(b"left by a killed run")
    (out / "sub" / ".b.lyra.89abcdef.tmp").write_bytes(b"")
    (out / ".notes.txt.0123abcd.tmp").write_bytes(b"not this job's")
    before = state(out)
    code, err = run(capsys, "encode", music, out, "-c", ckpt, "--manifest", manifest)
    assert code == 0, err
    assert "2 incomplete outputs are encoded again" in err and "removed 2 leftover temporary files" in err
    assert "2 files written to" in err and "skipped 2 already encoded" in err
    after = state(out)
    assert [name for name in before if after[name] != before[name]] == ["a.lyra", "c.lyra"]
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.lyra")} == originals
    assert sorted(p.name for p in out.rglob(".*")) == [".notes.txt.0123abcd.tmp"]
    assert manifest.read_bytes() == index

    code, err = run(capsys, "encode", music, out, "-c", ckpt, "--force")
    assert code == 0 and "4 files written to" in err and "skipped" not in err
    forced = state(out)
    assert all(forced[name] != after[name] for name in after)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.lyra")} == originals
    assert run(capsys, "encode", music, out, "-c", ckpt, "--quiet") == (0, "")   # no start line, no summary


def test_outputs_of_another_model_or_dtype_are_refused_unless_forced(tmp_path, capsys, ckpt):
    music, out = tmp_path / "music", tmp_path / "out"
    music.mkdir()
    write_wav(music / "a.wav", 3000)
    write_wav(music / "b.wav", 5000)
    assert run(capsys, "encode", music, out, "-c", ckpt)[0] == 0
    other = small_checkpoint(tmp_path / "other.pt", seed=4)
    assert run(capsys, "encode", music / "b.wav", out / "b.lyra", "-c", other, "--force")[0] == 0
    mine, theirs = read_lyra(out / "a.lyra")[0].model_fingerprint, read_lyra(out / "b.lyra")[0].model_fingerprint
    before = state(out)
    code, err = run(capsys, "encode", music, out, "-c", ckpt)
    assert code == 1
    assert err == (f"lyra: error: {out / 'b.lyra'}: already exists, encoded by model {theirs}; {ckpt} is model "
                   f"{mine} (pass --force to overwrite)\n")
    code, err = run(capsys, "encode", music, out, "-c", ckpt, "--dtype", "float32")
    assert code == 1
    assert err.startswith(f"lyra: error: {out / 'a.lyra'}: already exists, stored as float16, not --dtype float32, "
                          f"and 1 more outputs in {out} cannot be resumed (pass --force")
    assert state(out) == before                                                # refused before any work
    assert run(capsys, "encode", music, out, "-c", ckpt, "--force")[0] == 0
    assert read_lyra(out / "b.lyra")[0].model_fingerprint == mine


def test_a_manifest_replaces_only_a_manifest(tmp_path, capsys, ckpt):
    music = tmp_path / "music"
    music.mkdir()
    write_wav(music / "a.wav", 3000)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    code, err = run(capsys, "encode", music, tmp_path / "out", "-c", ckpt, "--manifest", notes)
    assert code == 1 and err == f"lyra: error: {notes}: already exists and is not a manifest (pass --force to overwrite)\n"
    assert not (tmp_path / "out").exists() and notes.read_text() == "my notes\n"
    code, err = run(capsys, "encode", music / "a.wav", tmp_path / "a.lyra", "-c", ckpt, "--manifest", notes)
    assert code == 1 and "--manifest: only with a folder IN" in err


def test_a_file_that_fails_in_any_way_is_reported_and_the_others_are_written(tmp_path, capsys, ckpt, monkeypatch):
    from lyra.codec.codec import Codec

    music = tmp_path / "music"
    music.mkdir()
    for name in ("a", "b", "c"):
        write_wav(music / f"{name}.wav", 3000)
    (music / "bad.wav").write_text("not audio")
    encode_file = Codec.encode_file

    def out_of_memory_on_b(c, src, *args, **kwargs):
        if str(src).endswith("b.wav"):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return encode_file(c, src, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode_file", out_of_memory_on_b)
    code, err = run(capsys, "encode", music, tmp_path / "out", "-c", ckpt)
    assert code == 1
    lines = err.splitlines()[1:]                                    # after "encoding 4 files ..."
    assert len(lines) == 3, err
    assert lines[0] == f"lyra: error: {music / 'b.wav'}: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert lines[1].startswith(f"lyra: error: {music / 'bad.wav'}: not a readable audio file")
    assert lines[2] == f"lyra: error: 2 of 4 files failed; the others were written to {tmp_path / 'out'}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.lyra", "c.lyra"]


# ---------------------------------------------------------------------------------------
# torchrun
# ---------------------------------------------------------------------------------------
class Created(CreatedFiles):
    """Every name created in a folder so far (after the run: the kernel queued them all)."""

    def names(self) -> list[str]:
        found = []
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1 << 16)
            offset = 0
            while offset < len(data):
                _, _, _, size = self._EVENT.unpack_from(data, offset)
                offset += self._EVENT.size
                found.append(data[offset:offset + size].rstrip(b"\0").decode())
                offset += size
        return found


# `python -m lyra` (lyra/__main__.py), noting each rank's exit status in status.RANK before it
# exits: torchrun's own report lists only the ranks that had ended when it noticed a failure.
RANK_STATUS = """import os, sys
from lyra.cli import main
code = main(sys.argv[1:])
with open(f"status.{os.environ['RANK']}", "w") as f:
    f.write(str(code))
sys.exit(code)
"""


def torchrun(folder: Path, *args: object) -> list[str]:
    (folder / "lyra_rank.py").write_text(RANK_STATUS)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(folder / "lyra_rank.py"), *map(str, args)]


def statuses(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.glob("status.*")}


def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in lyra_env(PYTHONPATH=str(REPO), TERM="xterm").items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")}
    return env


def on_a_terminal(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run `command` with stderr on a pseudo-terminal; (exit status, what it wrote there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, env=terminal_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    said = b""
    while True:
        try:
            more = os.read(master, 1 << 16)
        except OSError:        # EIO: every process holding the terminal has ended
            break
        if not more:
            break
        said += more
    os.close(master)
    return proc.wait(timeout=600), said.decode(errors="replace").replace("\r\n", "\n")


def test_torchrun_shares_the_files_and_writes_what_one_process_writes(tmp_path, ckpt, capsys, monkeypatch):
    lengths = dataset(tmp_path / "music")
    (tmp_path / "music" / "bad.wav").write_text("not audio")
    single, multi = tmp_path / "single", tmp_path / "multi"
    (multi / "latents" / "sub").mkdir(parents=True)
    single.mkdir()
    watches = [Created(multi / "latents"), Created(multi / "latents" / "sub")]
    args = ["encode", "../music", "latents", "-c", ckpt, "--manifest", "index.jsonl", "--threads", "1"]
    code, said = on_a_terminal(torchrun(multi, *args), multi)
    created = [name for watch in watches for name in watch.names()]
    for watch in watches:
        watch.close()
    monkeypatch.chdir(single)                                 # the same command line, one process
    one_code, one_err = run(capsys, *args)

    # One process, stderr not a terminal: the bad file reported, the others written, no progress codes.
    assert one_code == 1, one_err
    assert one_err.count("lyra: error: ../music/bad.wav: not a readable audio file") == 1
    assert "lyra: error: 1 of 5 files failed; the others were written to latents" in one_err
    assert "\x1b" not in one_err

    # Two processes: rank 0 alone reports, for both; every rank ends with status 1.
    assert code != 0, said
    assert said.count("encoding 5 files") == 1, said
    shares = re.search(r"with 2 processes \((\d+) \+ (\d+) files\)", said)
    assert shares and int(shares[1]) > 0 and int(shares[2]) > 0 and int(shares[1]) + int(shares[2]) == 5, said
    assert said.count("lyra: error: ../music/bad.wav: not a readable audio file") == 1, said
    assert said.count("lyra: error: 1 of 5 files failed; the others were written to latents") == 1, said
    assert "\x1b[" in said and "5/5 files" in said                           # the progress line, on a terminal
    assert statuses(multi) == {"status.0": "1", "status.1": "1"}, said

    expected = sorted(str(Path(rel).with_suffix(".lyra")) for rel in lengths)
    for folder in (single, multi):
        assert sorted(p.relative_to(folder / "latents").as_posix() for p in (folder / "latents").rglob("*")
                      if p.is_file()) == expected
    for rel in expected:
        assert (multi / "latents" / rel).read_bytes() == (single / "latents" / rel).read_bytes(), rel
    assert (multi / "index.jsonl").read_bytes() == (single / "index.jsonl").read_bytes()
    assert len((multi / "index.jsonl").read_text().splitlines()) == 4
    # Each output was written (through its own temporary) exactly once, by one of the ranks.
    written = collections.Counter(m["name"] for m in map(TEMPORARY.match, created) if m)
    assert written == collections.Counter(Path(rel).name for rel in expected), created


def test_an_error_in_one_ranks_setup_ends_every_rank(tmp_path, ckpt):
    """Rank 1 cannot load its checkpoint; rank 0, which could, does not wait for it: rank 0
    says what rank 1 found and both end with status 1, before any work. Two plain processes
    with torchrun's variables (torchrun itself would stop a rank left waiting, hiding a hang)."""
    music = tmp_path / "music"
    music.mkdir()
    write_wav(music / "a.wav", 3000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ranks = [subprocess.Popen([lyra_executable(), "encode", str(music), str(tmp_path / "out"), "-c", str(checkpoint)],
                              env=lyra_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for rank, checkpoint in enumerate([ckpt, tmp_path / "missing.pt"])]
    said = [proc.communicate(timeout=600)[1].decode() for proc in ranks]
    assert [proc.returncode for proc in ranks] == [1, 1], said
    assert said == [f"lyra: error: rank 1: {tmp_path / 'missing.pt'}: no such checkpoint file\n", ""]
    assert not (tmp_path / "out").exists()
