"""Pre-encoding a dataset: ``lyra encode DIR OUT_DIR``, resumable, on one process or many.

Every audio file under DIR (picked by suffix, recursively) becomes ``OUT_DIR/<its relative
path>.lyra``, e.g. for a latent-diffusion model's training set. The CLI (`lyra.cli.codec`)
parses the arguments and hands a `Job` to `run`; this module does the rest:

Resuming. Before any work, every output that already exists is looked at:

    complete     it reads in full with `lyra.container.open_lyra` (every chunk's CRC32, its
                 place in the chain, the end marker), and its header names this checkpoint's
                 model fingerprint and shape and the --dtype asked for: skipped ("skipped N
                 already encoded") and still listed in the manifest.
    incomplete   a .lyra file (it starts with the .lyra magic bytes, or is a prefix of them:
                 empty) that is truncated or corrupted: encoded again.
    foreign      a .lyra file written by another model or stored with another --dtype, or
                 anything else (not a .lyra file, a symbolic link, a folder, unreadable): the
                 job is refused before any work with one line naming the first such file,
                 since replacing it could lose something a user wants (a dataset encoded by
                 another model); --force encodes it again.

``--force`` encodes every file again without looking. Outputs are written atomically
(`lyra.atomic`): a killed run leaves at most hidden temporaries ``.NAME.lyra.XXXXXXXX.tmp``
beside the outputs; those of this job's outputs are removed before it starts. Not detected: a
source changed after its output was written, or an earlier run's --precision/--downmix (the
header does not record them); use --force then. Do not run two jobs on one OUT_DIR at once.

Many processes. Under ``torchrun --nproc_per_node=N -m lyra encode DIR OUT_DIR -c ...`` each
process joins a gloo process group (whatever the device: it only carries small Python
objects), and uses ``cuda:LOCAL_RANK`` when --device is auto or cuda and CUDA exists, else the
CPU. Rank 0 lists the files; every rank probes the durations (`soundfile.info`, headers only)
and checks the existing outputs of a strided slice of them; the files to encode are then
shared by `shard` (longest first onto the least-loaded rank: deterministic), so that each is
encoded by exactly one process, with the same bytes as one process would write. An error on
any rank during setup ends the job on every rank (rank 0 says why; no rank waits for one
that has stopped). Rank 0 prints the summary for all ranks, writes the manifest, and the exit
status is 1 on every rank if any file failed.

Failures. A file that fails (unreadable audio, a full disk, any error while encoding it, out of
GPU memory included) is one line ``lyra: error: ...`` naming it, after the others are done;
they are still written, and the exit status is 1. ``LYRA_DEBUG=1`` also prints the traceback
of an error that is not a `LyraError`.

Progress. When standard error is a terminal, rank 0 shows one progress line for the whole job
(`lyra.progress`; the other ranks' counts arrive through torchrun's key-value store): audio
done of the total, the speed in times real-time, the time elapsed and left, and the files
done. Otherwise only a line at the start and the summary at the end are printed; with
`Job.quiet` (``--quiet``) not even those: only errors.

The manifest (``--manifest PATH``, JSON Lines, written atomically by rank 0, sorted by
source, the same bytes for 1 or N processes), one object per complete output (encoded now or
skipped as complete):

    source       the audio file, as DIR/relative-path (relative to the working directory when
                 DIR was given relative, absolute when DIR was absolute)
    duration_s   num_samples / sample_rate
    num_samples  length at the model's sample rate (decoding gives back exactly this many)
    sample_rate  the model's sample rate
    frames       latent frames in the file: ceil(num_samples / hop_length)
    output       the .lyra file, as OUT_DIR/relative-path

A manifest that exists is replaced (it is rewritten on every run, listing everything done so
far) unless it is not one: a file whose first line is not such a JSON object is refused
without --force.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, TypeVar

from lyra.durations import format_duration
from lyra.errors import LyraError, os_error_line
from lyra.progress import Progress, draws

T = TypeVar("T")

# `lyra.atomic.atomic_write`'s temporary for OUT/NAME: OUT/.NAME.<8 hex digits>.tmp
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")
# How long a rank waits for the others (for the slowest rank to finish its share, at the end).
GROUP_TIMEOUT = timedelta(days=7)
MANIFEST_FIELDS = ("source", "duration_s", "num_samples", "sample_rate", "frames", "output")


@dataclass(frozen=True)
class Job:
    """What the command line asks for. `load(device)` returns a codec (a `lyra.codec.Codec`:
    ``fingerprint``, ``config`` and ``checkpoint`` are used here); `encode(codec, source,
    target)` writes one .lyra file atomically (`Codec.encode_file`) and returns its (Trailer,
    Header), or raises `LyraError`/`OSError`."""

    inp: str
    out: str
    load: Callable[[str], Any]
    encode: Callable[[Any, str, str], tuple[Any, Any]]
    suffixes: tuple[str, ...]
    device: str = "auto"
    dtype: str = "float16"
    force: bool = False
    manifest: Optional[str] = None
    quiet: bool = False              # no progress, start line or summary (errors still)


@dataclass(frozen=True)
class Existing:
    """What is at an output's path before the job: `kind` is missing, complete, incomplete or
    foreign (see the module doc); `reason` says why for the last two; a complete one carries
    its lengths (num_samples, sample_rate, frames)."""

    kind: str
    reason: str = ""
    lengths: Optional[tuple[int, int, int]] = None


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------
def run(job: Job) -> None:
    """Encode the folder `job.inp` into `job.out` (see the module doc); raises `LyraError`
    (one process) or `SystemExit(1)` (under torchrun, after rank 0 has said why) on failure."""
    group = Group.join()
    try:
        _run(job, group)
    finally:
        group.leave()


def _run(job: Job, group: "Group") -> None:
    codec = group.everywhere(lambda: job.load(group.device_for(job.device)))
    show = draws(job.quiet)          # rank 0's stderr is a terminal: every rank reports its counts

    def plan() -> tuple[list[tuple[Path, Path]], int, bool]:
        pairs = list_folder(job.inp, job.out, job.suffixes, ".lyra")
        if job.manifest is not None:
            check_manifest(job.manifest, job.force)
        return pairs, remove_leftovers(pairs), show

    pairs, removed, show = group.on_main(plan)    # rank 0's listing, for every rank
    group.announce(0, 0.0)

    def look() -> list[tuple[float, Existing]]:
        return [(probe_seconds(source), Existing("missing") if job.force else
                 check_output(target, codec.fingerprint, codec.config, job.dtype, str(codec.checkpoint)))
                for source, target in pairs[group.rank::group.world_size]]

    looked = group.everywhere(look, gather=True)
    facts = [looked[i % group.world_size][i // group.world_size] for i in range(len(pairs))]
    seconds = [s for s, _ in facts]
    foreign = [(pairs[i][1], e.reason) for i, (_, e) in enumerate(facts) if e.kind == "foreign"]
    if foreign:
        more = f", and {len(foreign) - 1} more outputs in {job.out} cannot be resumed" if len(foreign) > 1 else ""
        group.fail([f"{foreign[0][0]}: {foreign[0][1]}{more} (pass --force to overwrite)"])
    done = {i: e.lengths for i, (_, e) in enumerate(facts) if e.kind == "complete"}
    redo = sum(e.kind == "incomplete" for _, e in facts)
    todo = [i for i in range(len(pairs)) if i not in done]
    shares = [[todo[j] for j in share] for share in shard([seconds[i] for i in todo], group.world_size)]
    mine = shares[group.rank]

    if group.is_main and not job.quiet:
        _echo(_start_line(job.out, todo, seconds, shares, len(done), redo, removed))
    started = time.perf_counter()
    results: list[tuple[int, Optional[dict], Optional[str]]] = []
    with JobProgress(group, show, len(todo), sum(seconds[i] for i in todo)) as progress:
        for i in mine:
            source, target = pairs[i]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                trailer, header = job.encode(codec, str(source), str(target))
                results.append((i, record(source, target, trailer.num_samples, header.sample_rate,
                                          trailer.num_frames), None))
            except LyraError as exc:
                results.append((i, None, str(exc)))
            except OSError as exc:   # disk full, permissions, ...: still one line naming the file
                results.append((i, None, os_error_line(exc, target)))
            except Exception as exc:  # noqa: BLE001 - one file's failure (out of GPU memory, ...) is not the job's
                results.append((i, None, _unexpected(source, exc)))
            progress.advance(seconds[i])
        everyone = group.gather(results)      # rank 0's bar shows the others' files meanwhile
    wall = time.perf_counter() - started

    final: Optional[str] = None
    if group.is_main:
        outcomes = sorted((r for rank in everyone for r in rank), key=lambda r: r[0])
        for _, _, error in outcomes:
            if error:
                _echo(f"lyra: error: {error}")
        failed = sum(error is not None for _, _, error in outcomes)
        records = [record(*pairs[i], *lengths) for i, lengths in done.items()]
        records += [rec for _, rec, _ in outcomes if rec is not None]
        try:
            if job.manifest is not None:
                write_manifest(job.manifest, records)
        except LyraError as exc:
            final = str(exc)
        except OSError as exc:
            final = os_error_line(exc, job.manifest)
        if failed:
            final = f"{failed} of {len(pairs)} files failed; the others were written to {job.out}"
        if not final and not job.quiet:
            _echo(_summary(job, everyone, len(done), wall, group.world_size))
        elif group.world_size > 1:
            _echo(f"lyra: error: {final}")
    if group.world_size == 1:
        if final:
            raise LyraError(final)
        return
    if group.gather(final)[0]:                   # every rank ends with rank 0's verdict
        raise SystemExit(1)


def _start_line(out: str, todo: list[int], seconds: list[float], shares: list[list[int]], skipped: int,
                redo: int, removed: int) -> str:
    line = f"encoding {len(todo)} files ({format_duration(sum(seconds[i] for i in todo))} of audio) into {out}"
    if len(shares) > 1:
        line += f" with {len(shares)} processes ({' + '.join(str(len(s)) for s in shares)} files)"
    if skipped:
        line += f"; skipped {skipped} already encoded"
    if redo:
        line += f"; {redo} incomplete outputs are encoded again"
    if removed:
        line += f"; removed {removed} leftover temporary files"
    return line


def _summary(job: Job, everyone: list[list[tuple[int, Optional[dict], Optional[str]]]], skipped: int,
             wall: float, world_size: int) -> str:
    written = [rec for rank in everyone for _, rec, _ in rank if rec is not None]
    line = f"{len(written)} files written to {job.out}"
    if skipped:
        line += f", skipped {skipped} already encoded"
    audio = sum(rec["duration_s"] for rec in written)
    if written:
        by = f" by {world_size} processes" if world_size > 1 else ""
        line += f" ({format_duration(audio)} of audio in {format_duration(wall)}{by}: {audio / max(wall, 1e-9):.1f}x real-time)"
    if job.manifest is not None and job.manifest != "-":
        line += f"; manifest {job.manifest}"
    return line


def _unexpected(source: Path, exc: Exception) -> str:
    """One line for an error that is not a `LyraError` (the traceback too with LYRA_DEBUG=1)."""
    if os.environ.get("LYRA_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{source}: {type(exc).__name__}: {text}"


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Listing, probing, sharding
# ---------------------------------------------------------------------------------------
def list_folder(inp: str, out: str, suffixes: tuple[str, ...], out_suffix: str) -> list[tuple[Path, Path]]:
    """(source, target) for every file under folder `inp` whose suffix is one of `suffixes`
    (sorted; none inside `out`), the target mirroring it under `out` with `out_suffix`."""
    if out == "-":
        raise LyraError(f"{inp}: is a folder; OUT must be a folder too, not '-'")
    src, dst = Path(inp), Path(out)
    if dst.exists() and not dst.is_dir():
        raise LyraError(f"{out}: IN is a folder, so OUT must be a folder, but it is a file")
    inside = dst.resolve()
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not p.resolve().is_relative_to(inside))
    if not files:
        raise LyraError(f"{inp}: no {' / '.join(suffixes)} files in this folder")
    pairs: list[tuple[Path, Path]] = []
    seen: dict[Path, Path] = {}
    for path in files:
        target = dst / path.relative_to(src).with_suffix(out_suffix)
        if target in seen:
            raise LyraError(f"{seen[target]} and {path} would both be written to {target}; rename one")
        seen[target] = path
        pairs.append((path, target))
    return pairs


def probe_seconds(path: Path) -> float:
    """The duration a file's header gives (`soundfile.info`: no samples decoded); 0 when it
    cannot be read (encoding it will say why)."""
    import soundfile

    from lyra.audio import _quiet_stderr

    try:
        with _quiet_stderr():    # libmpg123 prints probing notes to fd 2 on non-audio input
            info = soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - only an estimate for sharing out the work
        return 0.0
    if info.samplerate <= 0 or not 0 < info.frames < 1 << 48:
        return 0.0
    return info.frames / info.samplerate


def shard(durations: Sequence[float], world_size: int) -> list[list[int]]:
    """Indices of `durations` for each of `world_size` ranks: longest first, each onto the rank
    with the least so far (the lowest rank on a tie); each share in ascending order.
    Deterministic, so every rank computes the same shares."""
    loads = [(0.0, rank) for rank in range(world_size)]
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(durations)), key=lambda i: (-durations[i], i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(i)
        heapq.heappush(loads, (load + durations[i], rank))
    return [sorted(share) for share in shares]


# ---------------------------------------------------------------------------------------
# Existing outputs, leftovers, the manifest
# ---------------------------------------------------------------------------------------
def check_output(target: Path, fingerprint: str, config: Any, dtype: str, checkpoint: str) -> Existing:
    """What `target` holds: see `Existing` and the module doc."""
    from lyra.container import MAGIC, check_model, open_lyra

    if target.is_symlink():
        return Existing("foreign", "already exists as a symbolic link")
    if not target.exists():
        return Existing("missing")
    if target.is_dir():
        return Existing("foreign", "already exists as a folder")
    try:
        with target.open("rb") as f:
            head = f.read(len(MAGIC))
        if not MAGIC.startswith(head):
            return Existing("foreign", "already exists and is not a .lyra file")
        with open_lyra(target) as reader:
            reader.read_all()               # every chunk's CRC32 and place, the end marker
            header, trailer = reader.header, reader.trailer
    except LyraError as exc:
        return Existing("incomplete", str(exc))
    except OSError as exc:
        return Existing("foreign", f"already exists and cannot be read ({exc.strerror or exc})")
    if header.model_fingerprint != fingerprint:
        return Existing("foreign", f"already exists, encoded by model {header.model_fingerprint}; "
                                   f"{checkpoint} is model {fingerprint}")
    if header.dtype != dtype:
        return Existing("foreign", f"already exists, stored as {header.dtype}, not --dtype {dtype}")
    try:
        check_model(header, config, str(target), checkpoint)   # a header altered, CRC redone
    except LyraError as exc:
        return Existing("incomplete", str(exc))
    return Existing("complete", lengths=(trailer.num_samples, header.sample_rate, trailer.num_frames))


def remove_leftovers(pairs: Sequence[tuple[Path, Path]]) -> int:
    """Delete the temporaries a killed run left beside this job's targets; how many."""
    names: dict[Path, set[str]] = {}
    for _, target in pairs:
        names.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = TEMPORARY.match(entry.name)
            if match and match["name"] in wanted and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def record(source: Path, target: Path, num_samples: int, sample_rate: int, frames: int) -> dict:
    """One manifest line (see the module doc)."""
    return {"source": str(source), "duration_s": num_samples / sample_rate, "num_samples": num_samples,
            "sample_rate": sample_rate, "frames": frames, "output": str(target)}


def check_manifest(path: str, force: bool) -> None:
    """Refuse, before any work, a --manifest that cannot be written or would replace a file
    that is not a manifest (unless `force`)."""
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise LyraError(f"{p}: --manifest is a folder; give a file name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise LyraError(f"{p}: --manifest's folder {folder} does not exist")
    if force or not (p.exists() or p.is_symlink()):
        return
    try:
        with p.open("rb") as f:
            first = f.readline(1 << 20)
        ok = not first.strip() or set(MANIFEST_FIELDS) <= set(json.loads(first))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        ok = False
    if not ok:
        raise LyraError(f"{p}: already exists and is not a manifest (pass --force to overwrite)")


def write_manifest(path: str, records: Sequence[dict]) -> None:
    """The manifest, sorted by source, written atomically (``-``: standard output)."""
    from lyra.atomic import atomic_write

    text = "".join(json.dumps({k: r[k] for k in MANIFEST_FIELDS}) + "\n"
                   for r in sorted(records, key=lambda r: r["source"]))
    with atomic_write(path) as f:
        f.write(text.encode())


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------
class Group:
    """This process's place in the job: the only process, or one of torchrun's (gloo)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, store: Any = None,
                 group: Any = None, owned: bool = False) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.store, self.group, self.owned = store, group, owned

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls) -> "Group":
        """Join torchrun's processes (`lyra.train.distributed.launched_by_torchrun`), if any."""
        from lyra.train.distributed import launched_by_torchrun

        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
            return cls()
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if dist.is_initialized():   # a program that set up its own group calls this
            return cls(dist.get_rank(), dist.get_world_size(), local_rank, None, dist.new_group(backend="gloo"))
        # As `init_process_group` does it, keeping the store for the progress counts.
        store, rank, world_size = next(dist.rendezvous("env://", timeout=GROUP_TIMEOUT))
        store.set_timeout(GROUP_TIMEOUT)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=GROUP_TIMEOUT)
        return cls(rank, world_size, local_rank, dist.PrefixStore("lyra-preencode", store), None, owned=True)

    def leave(self) -> None:
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def device_for(self, preference: str) -> str:
        """--device for this process: ``cuda:LOCAL_RANK`` for auto/cuda under torchrun."""
        if self.world_size == 1 or preference not in ("auto", "cuda"):
            return preference
        import torch

        if not torch.cuda.is_available():
            return preference             # auto: the CPU; cuda: `resolve_device` says why not
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise LyraError(f"--device {preference}: process {self.local_rank} on this machine has no GPU "
                            f"(only {count} are visible); start at most {count} processes per machine")
        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.group)
        return values

    def everywhere(self, step: Callable[[], T], gather: bool = False) -> Any:
        """`step()` on every rank (its result, or with `gather` every rank's); a `LyraError` on
        any rank ends the job on every rank."""
        result, error = _attempt(step)
        if self.world_size == 1:
            self._stop([error])
            return [result] if gather else result
        answers = self.gather((error, result if gather else None))
        self._stop([e for e, _ in answers])
        return [r for _, r in answers] if gather else result

    def on_main(self, step: Callable[[], T]) -> T:
        """`step()` on rank 0, its result on every rank (or its `LyraError` ending the job)."""
        error, result = _attempt(step)[::-1] if self.is_main else (None, None)
        if self.world_size > 1:
            error, result = self.gather((error, result))[0]
        self._stop([error])
        return result

    def announce(self, files: int, seconds: float) -> None:
        """This rank's progress, for rank 0's bar (a key in torchrun's store)."""
        if self.store is not None and not self.is_main:
            self.store.set(f"done/{self.rank}", f"{files} {seconds!r}")

    def progress_of_others(self) -> tuple[int, float]:
        files, seconds = 0, 0.0
        for rank in range(1, self.world_size):
            n, s = self.store.get(f"done/{rank}").decode().split()
            files, seconds = files + int(n), seconds + float(s)
        return files, seconds

    def _stop(self, errors: Sequence[Optional[str]]) -> None:
        found = [(rank, e) for rank, e in enumerate(errors) if e]
        if not found:
            return
        if len(found) == len(errors) and len({e for _, e in found}) == 1:
            self.fail([found[0][1]])                     # every rank found the same
        self.fail([f"rank {rank}: {e}" for rank, e in found])

    def fail(self, lines: Sequence[str]) -> NoReturn:
        """End the job on every rank with these error lines (rank 0 prints them). Every rank
        calls this at the same point of the job."""
        if self.world_size == 1:
            for line in lines[:-1]:
                _echo(f"lyra: error: {line}")
            raise LyraError(lines[-1])
        if self.is_main:
            for line in lines:
                _echo(f"lyra: error: {line}")
        # torchrun stops every process as soon as one ends with an error: rank 0 speaks first.
        self.gather(None)
        raise SystemExit(1)


def _attempt(step: Callable[[], T]) -> tuple[Optional[T], Optional[str]]:
    try:
        return step(), None
    except LyraError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, os_error_line(exc)


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------
class JobProgress:
    """The job's progress line (`lyra.progress.Progress`) on rank 0 when `show` (its stderr is
    a terminal): audio and files done of the total, times real-time, ETA. Other ranks report
    their counts (`Group.announce`), which a thread on rank 0 reads twice a second."""

    def __init__(self, group: Group, show: bool, files: int, seconds: float) -> None:
        self.group, self.show = group, show
        self.total_files, self.total_seconds = files, seconds
        self.files, self.seconds = 0, 0.0
        self._others = (0, 0.0)
        # (the line before says how many files and processes)
        self._bar = Progress("encoding", total=seconds or None, unit="s", quiet=not (show and group.is_main))
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def __enter__(self) -> "JobProgress":
        self._bar.__enter__()
        self._draw()
        if self._bar.enabled and self.group.world_size > 1 and self.group.store is not None:
            self._thread = threading.Thread(target=self._poll, name="lyra-progress", daemon=True)
            self._thread.start()
        return self

    def advance(self, seconds: float) -> None:
        self.files += 1
        self.seconds += seconds
        if self.show:
            self.group.announce(self.files, self.seconds)
        self._draw()

    def _poll(self) -> None:
        while not self._stopped.wait(0.5):
            try:
                others = self.group.progress_of_others()
            except Exception:  # noqa: BLE001 - the store is gone: the job is ending
                return
            with self._lock:
                self._others = others
            self._draw()

    def _draw(self, files: Optional[int] = None, seconds: Optional[float] = None) -> None:
        if not self._bar.enabled:
            return
        with self._lock:
            if files is None:
                files, seconds = self.files + self._others[0], self.seconds + self._others[1]
            self._bar.update(completed=seconds, files=f"{files}/{self.total_files} files")

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self._thread is not None:
            self._stopped.set()
            self._thread.join()
        if kind is None:             # everyone is done: the exact totals
            self._draw(self.total_files, self.total_seconds)
        self._bar.__exit__(kind, *rest)
