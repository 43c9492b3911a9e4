"""The walk that finds a folder's audio files (`lyra.audio.folders.audio_files`, behind folder
encode, decode, eval and training data): a subfolder it cannot list is an error naming it (never
skipped silently), links to folders are followed with loop protection, and odd entries (named
pipes, dangling links, link loops) are passed over; a seeded random tree is walked like a
reference walk. (issue 22, item 4 and the symlinked-subfolder item)

Tests run as root here and in CI, and root lists a chmod-000 folder anyway: the in-process
tests make the listing fail by patching `os.scandir` for that folder; the CLI tests run `lyra`
without root's power over file permissions (`setpriv --bounding-set=-dac_override,...`) when
the test runs as root, or as they are otherwise.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_helpers import lyra_env, lyra_executable, small_checkpoint, write_wav
from lyra.audio.folders import audio_files
from lyra.cli import main
from lyra.core.errors import LyraError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
WAV = (".wav",)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


def music(folder: Path) -> Path:
    """music/a.wav, music/locked/c.wav, music/sub/b.wav (short stereo WAVs)."""
    for rel in ("a.wav", "locked/c.wav", "sub/b.wav"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(folder / rel, 3000, seed=len(rel))
    return folder


def refuse_listing(monkeypatch, folder: Path, code: int = errno.EACCES) -> None:
    """`os.scandir(folder)` fails as it does for a folder without read permission."""
    real = os.scandir

    def scandir(path=".", *args, **kwargs):
        if os.path.abspath(path) == os.path.abspath(folder):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)


def without_root_powers() -> list[str]:
    """A command prefix that runs a program without root's power to read any folder (nothing
    when not root); skips the test when root cannot drop it here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: root lists any folder")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def run_lyra(prefix: list[str], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([*prefix, lyra_executable(), *map(str, args)], capture_output=True, cwd=cwd,
                          env=lyra_env(), timeout=600)     # the timeout only bounds a broken run
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, done.stderr.decode(errors="replace"))


# ---------------------------------------------------------------------------------------
# A folder that cannot be listed
# ---------------------------------------------------------------------------------------
def test_a_folder_that_cannot_be_listed_is_an_error_naming_it(tmp_path, monkeypatch):
    root = music(tmp_path / "music")
    assert audio_files(root, WAV) == [root / "a.wav", root / "locked" / "c.wav", root / "sub" / "b.wav"]
    refuse_listing(monkeypatch, root / "locked")
    with pytest.raises(LyraError) as caught:
        audio_files(root, WAV)
    assert str(caught.value) == f"{root / 'locked'}: cannot read this folder (Permission denied)"
    refuse_listing(monkeypatch, root, errno.EIO)                   # the top folder itself
    with pytest.raises(LyraError, match=f"^{root}: cannot read this folder \\(Input/output error\\)$"):
        audio_files(root, WAV)


@pytest.mark.parametrize("command", ["encode", "decode", "eval"])
def test_folder_commands_stop_before_any_work_on_a_folder_they_cannot_list(tmp_path, capsys, monkeypatch, ckpt,
                                                                          command):
    root = music(tmp_path / "music")
    if command == "decode":                                        # a folder of .lyra files
        assert main(["encode", str(root), str(tmp_path / "latents"), "-c", str(ckpt), "-q"]) == 0
        root = tmp_path / "latents"
    capsys.readouterr()
    refuse_listing(monkeypatch, root / "locked")
    out = tmp_path / "out"
    args = {"encode": ["encode", root, out, "-c", ckpt, "--manifest", tmp_path / "m.jsonl"],
            "decode": ["decode", root, out, "-c", ckpt],
            "eval": ["eval", root, root]}[command]
    assert main([str(a) for a in args]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"lyra: error: {root / 'locked'}: cannot read this folder (Permission denied)\n"
    assert captured.out == b"" or captured.out == ""
    assert not out.exists() and not (tmp_path / "m.jsonl").exists()     # nothing done, nothing written


def test_an_unreadable_subfolder_fails_folder_encode_through_the_cli(tmp_path, ckpt):
    """As users meet it: chmod 000 on a subfolder (without root's powers when run as root)."""
    prefix = without_root_powers()
    root = music(tmp_path / "music")
    other = music(tmp_path / "other")
    (tmp_path / "hidden").mkdir()
    (other / "elsewhere.wav").symlink_to(tmp_path / "hidden" / "x.wav")   # its kind cannot be told
    (root / "locked").chmod(0)
    (tmp_path / "hidden").chmod(0)
    try:
        done = run_lyra(prefix, "encode", "music", "out", "-c", ckpt, "--manifest", "m.jsonl", cwd=tmp_path)
        evaluated = run_lyra(prefix, "eval", "music", "music", cwd=tmp_path)
        linked = run_lyra(prefix, "eval", "other", "other", cwd=tmp_path)
    finally:
        (root / "locked").chmod(0o755)
        (tmp_path / "hidden").chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "lyra: error: music/locked: cannot read this folder (Permission denied)\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.jsonl").exists()
    assert evaluated.returncode == 1 and evaluated.stdout == b""
    assert evaluated.stderr == "lyra: error: music/locked: cannot read this folder (Permission denied)\n"
    assert linked.returncode == 1 and linked.stdout == b""
    assert linked.stderr == "lyra: error: other/elsewhere.wav: cannot tell what it is (Permission denied)\n"


# ---------------------------------------------------------------------------------------
# Links to folders, odd entries
# ---------------------------------------------------------------------------------------
def test_linked_folders_are_followed_once_and_loops_end(tmp_path):
    root = music(tmp_path / "music")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    write_wav(outside / "x.wav", 100)
    write_wav(outside / "deep" / "y.WAV", 100)
    (root / "linked").symlink_to(outside)                          # followed
    (root / "again").symlink_to(outside)                           # the same folder: walked once
    (root / "a_sub").symlink_to(root / "sub")                      # a folder already inside: nothing more
    (root / "sub" / "up").symlink_to(root)                         # a loop to the top
    (outside / "back").symlink_to(outside)                         # a loop on itself
    (root / "self.wav").symlink_to(root / "self.wav")              # a link loop
    (root / "gone").symlink_to(tmp_path / "nothing")               # dangling links
    (root / "gone.wav").symlink_to(tmp_path / "nothing.wav")
    (root / "file.wav").symlink_to(root / "a.wav")                 # a link to a file counts (as before)
    os.mkfifo(root / "pipe.wav")                                   # not a file
    (root / "folder.wav").mkdir()
    found = [p.relative_to(root).as_posix() for p in audio_files(root, WAV)]
    # "again" sorts before "linked": the linked folder is found there, and only there
    assert found == ["a.wav", "again/deep/y.WAV", "again/x.wav", "file.wav", "locked/c.wav", "sub/b.wav"]


def test_folder_encode_follows_a_linked_subfolder(tmp_path, capsys, ckpt):
    root = music(tmp_path / "music")
    (tmp_path / "more").mkdir()
    write_wav(tmp_path / "more" / "m.wav", 2000)
    (root / "more").symlink_to(tmp_path / "more")
    (root / "loop").symlink_to(root)
    assert main(["encode", str(root), str(tmp_path / "out"), "-c", str(ckpt)]) == 0
    assert "4 files written" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.lyra")) == \
        ["a.lyra", "locked/c.lyra", "more/m.lyra", "sub/b.lyra"]


def _reference_walk(root: Path) -> list[Path]:
    """What the walk must find, computed the slow, obvious way: every path reachable through
    folders and links, keeping for each real folder the first path (in the walk's order: the
    real tree first, then links breadth-first in name order) that reaches it."""
    seen, found = set(), []
    real, linked = [root], []
    while real or linked:
        here = real.pop() if real else linked.pop(0)
        try:
            key = (os.stat(here).st_dev, os.stat(here).st_ino)
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        for name in sorted(os.listdir(here)):
            path = here / name
            if path.is_dir():
                (linked if path.is_symlink() else real).append(path)
            elif path.suffix.lower() == ".wav" and path.is_file():
                found.append(path)
    return sorted(found)


@pytest.mark.parametrize("seed", range(12))
def test_a_random_tree_is_walked_like_the_reference(tmp_path, seed):
    rng = random.Random(seed)
    root, outside = tmp_path / "root", tmp_path / "outside"     # links may lead outside, or up to tmp_path
    root.mkdir()
    outside.mkdir()
    folders = [root, outside]
    names = ["a", "B", "ü", "\udcff", ".hidden", "x y", "z.wav", "-", "long" * 10]   # \udcff: the byte 0xff
    made = 0
    for _ in range(rng.randint(5, 40)):
        parent = rng.choice(folders)
        name = rng.choice(names) + str(made) + rng.choice(["", ".wav", ".WAV", ".flac", ".txt"])
        made += 1
        path = parent / name
        kind = rng.choices(["dir", "file", "link_dir", "link_file", "dangling", "fifo"], [4, 6, 2, 1, 1, 1])[0]
        if kind == "dir":
            path.mkdir()
            folders.append(path)
        elif kind == "file":
            path.write_bytes(b"RIFF")
        elif kind == "link_dir":
            path.symlink_to(rng.choice([*folders, tmp_path]))      # loops and re-entries included
        elif kind == "link_file":
            files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
            path.symlink_to(rng.choice(files) if files else tmp_path / "none")
        elif kind == "dangling":
            path.symlink_to(tmp_path / f"missing{made}")
        else:
            os.mkfifo(path)
    found = audio_files(root, WAV)
    assert found == _reference_walk(root)
    assert len(set(found)) == len(found) and all(p.is_file() for p in found)
