"""Pre-encoding a dataset: ``lyra encode DIR OUT_DIR``, resumable, on one process or many.

    run(Job("music", "latents", "model.pt", manifest="latents.jsonl"), report)

Every audio file under DIR becomes ``OUT_DIR/<its relative path>.lyra`` (`lyra.codec.mirror`),
e.g. for a latent-diffusion model's training set. A rerun skips the complete outputs and
encodes the incomplete ones again (`lyra.codec.resume`); the manifest lists every complete
output (`lyra.codec.manifest`). Under torchrun each process encodes a share of the files
(`shard`) on its own device (`lyra.codec.group`), with the bytes one process would write. A
file that fails is one line naming it, after the others are written. The job tells the user
how it goes through a `Report` (the command line prints it on standard error); it ends with a
`LyraError` (one process) or `SystemExit(1)` on every rank (under torchrun, rank 0 saying
why) when it fails. Beside a manifest file go the latents' statistics
(`lyra.codec.statistics`: each file's moments, merged by rank 0 in the order of the outputs'
paths, so the same bytes whoever encoded what); ``--batch-size`` and ``--sample`` go through
`lyra.codec.batching`. See docs/codec.md and docs/latent-datasets.md.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Protocol, Sequence, Union

import torch

from lyra.audio.folders import AUDIO_SUFFIXES
from lyra.codec.codec import Codec
from lyra.codec.group import Group
from lyra.codec.manifest import check_manifest, record, write_manifest
from lyra.codec.mirror import list_folder, refuse_special
from lyra.codec.resume import Existing, check_output, remove_leftovers
from lyra.codec.statistics import LatentStats, file_moments, merge_all, stats_path
from lyra.core.durations import format_duration
from lyra.core.errors import LyraError, os_error_line

Outcome = tuple[int, Optional[dict], Optional[str]]    # (file index, manifest record or None, error or None)


@dataclass(frozen=True)
class Job:
    """What ``lyra encode DIR OUT_DIR`` asks for: the folders, the model and how it runs
    (as `Codec.load` takes them), how each file is encoded (as `Codec.encode_file` does it),
    and the job's own options (see the module doc)."""

    inp: str
    out: str
    checkpoint: Union[str, os.PathLike]
    suffixes: tuple[str, ...] = AUDIO_SUFFIXES
    device: str = "auto"             # under torchrun auto/cuda is this process's GPU
    precision: str = "fp32"
    compile: bool = False
    ema: bool = True
    threads: Optional[int] = None
    stream: bool = False
    chunk_seconds: float = 10.0
    dtype: str = "float16"
    downmix: bool = False
    force: bool = False              # encode every file again, replace anything at the outputs
    manifest: Optional[str] = None   # a path, or "-" for standard output
    quiet: bool = False              # no start line or summary (errors and warnings still)
    batch_size: int = 1              # files of equal frame counts encoded together (`lyra.codec.batching`)
    quantizers: Optional[int] = None  # a residual (rvq) model: the code rows stored (None: all)
    sample: bool = False             # posterior samples, seeded per file by `seed`, instead of means
    seed: int = 0


class Report(Protocol):
    """How a job tells the user how it goes (`lyra.cli.codec` prints on standard error)."""

    draws: bool
    """Whether `progress` shows anything (a terminal, not --quiet); rank 0's decides for all."""

    def line(self, text: str) -> None:
        """One line: the start line, a warning, an error (``lyra: error: ...``), the summary."""

    def progress(self, files: int, seconds: float) -> ContextManager[Callable[[int, float], None]]:
        """A display of the job's progress (on rank 0) while the block runs, for `files` files
        holding `seconds` of audio; it is given (files, seconds) done so far by all ranks."""


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------
def run(job: Job, report: Report) -> None:
    """Encode the folder `job.inp` into `job.out` (see the module doc)."""
    group = Group.join(report.line)
    try:
        _run(job, report, group)
    finally:
        group.leave()


def _load(job: Job, device: Union[str, torch.device]) -> Codec:
    codec = Codec.load(job.checkpoint, device=device, precision=job.precision, compile=job.compile,
                       ema=job.ema, threads=job.threads)
    codec.chunk_frames(job.chunk_seconds)       # a bad --chunk-seconds fails before any work
    if job.sample or job.batch_size > 1:
        from lyra.codec.batching import check_batching

        check_batching(codec, job.sample)       # a model without a Gaussian posterior
    return codec


def _run(job: Job, report: Report, group: Group) -> None:
    check_options(job)
    codec = group.everywhere(lambda: _load(job, group.device_for(job.device)))

    def plan() -> tuple[list[tuple[Path, Path]], int, bool]:
        pairs = list_folder(job.inp, job.out, job.suffixes, ".lyra")
        refuse_special(pairs)                     # a folder, a named pipe, ... at an output
        if job.manifest is not None:
            check_manifest(job.manifest, job.force, pairs, job.inp, job.out, job.checkpoint)
        return pairs, remove_leftovers(pairs), report.draws

    pairs, removed, show = group.on_main(plan)    # rank 0's listing, for every rank
    group.announce(0, 0.0)

    # What a complete output holds: latents of the job's --dtype, or a discrete model's code rows.
    stored = (("codes", str(codec.checkpoint), codec.model.bottleneck.check_quantizers(job.quantizers))
              if codec.discrete else (job.dtype, str(codec.checkpoint)))

    def look() -> list[tuple[float, Existing]]:
        return [(probe_seconds(source), Existing("missing") if job.force else
                 check_output(target, codec.fingerprint, codec.config, *stored))
                for source, target in pairs[group.rank::group.world_size]]

    looked = group.everywhere(look, gather=True)
    facts = [looked[i % group.world_size][i // group.world_size] for i in range(len(pairs))]
    seconds = [s for s, _ in facts]
    foreign = [(pairs[i][1], e.reason) for i, (_, e) in enumerate(facts) if e.kind == "foreign"]
    if foreign:
        more = f", and {len(foreign) - 1} more outputs in {job.out} cannot be resumed" if len(foreign) > 1 else ""
        group.fail([f"{foreign[0][0]}: {foreign[0][1]}{more} (pass --force to overwrite)"])
    done = {i: e.lengths for i, (_, e) in enumerate(facts) if e.kind == "complete"}
    from lyra.codec.batching import check_posterior        # means and samples never mixed in OUT

    problem = group.on_main(lambda: check_posterior(job.out, job.sample, job.seed, job.force, bool(done)))
    if problem:
        group.fail([problem])
    redo = sum(e.kind == "incomplete" for _, e in facts)
    todo = [i for i in range(len(pairs)) if i not in done]
    shares = [[todo[j] for j in share] for share in shard([seconds[i] for i in todo], group.world_size)]
    mine = shares[group.rank]

    if group.is_main and not job.quiet:
        report.line(_start_line(job.out, todo, seconds, shares, len(done), redo, removed))
    started = time.perf_counter()
    results: list[Outcome] = []
    with JobProgress(group, report, show, len(todo), sum(seconds[i] for i in todo)) as progress:
        if job.batch_size > 1 or job.sample:
            _run_batches(job, codec, report, pairs, [(i, seconds[i]) for i in mine], results, progress)
        for i in ([] if job.batch_size > 1 or job.sample else mine):
            source, target = pairs[i]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = codec.encode_file(str(source), str(target), stream=job.stream,
                                            chunk_seconds=job.chunk_seconds, dtype=job.dtype, downmix=job.downmix,
                                            quantizers=job.quantizers)
                if written.truncation:
                    report.line(written.truncation)   # the header promised more than the file holds
                rec = record(source, target, written.samples, written.header.sample_rate, written.frames)
                if written.header.dtype != "codes":         # the statistics: as stored, read back
                    rec["moments"] = file_moments(target)[0]
                results.append((i, rec, None))
            except LyraError as exc:
                results.append((i, None, str(exc)))
            except OSError as exc:   # disk full, permissions, ...: still one line naming the file
                results.append((i, None, os_error_line(exc, target)))
            except Exception as exc:  # noqa: BLE001 - one file's failure (out of GPU memory, ...) is not the job's
                results.append((i, None, _unexpected(source, exc, report)))
            progress.advance(seconds[i])
        everyone = group.gather(results)      # rank 0's bar shows the others' files meanwhile
    wall = time.perf_counter() - started

    final: Optional[str] = None
    if group.is_main:
        outcomes = sorted((r for rank in everyone for r in rank), key=lambda r: r[0])
        for _, _, error in outcomes:
            if error:
                report.line(f"lyra: error: {error}")
        failed = sum(error is not None for _, _, error in outcomes)
        records = [{**record(*pairs[i], *facts[i][1].lengths), "moments": facts[i][1].moments} for i in done]
        records += [rec for _, rec, _ in outcomes if rec is not None]
        try:
            if job.manifest is not None:
                write_manifest(job.manifest, records)
                write_job_stats(job, codec.fingerprint, records)
        except LyraError as exc:
            final = str(exc)
        except OSError as exc:
            final = os_error_line(exc, job.manifest)
        if failed:
            final = f"{failed} of {len(pairs)} files failed; the others were written to {job.out}"
        if not final and not job.quiet:
            report.line(_summary(job, everyone, len(done), wall, group.world_size))
        elif group.world_size > 1:
            report.line(f"lyra: error: {final}")
    if group.world_size == 1:
        if final:
            raise LyraError(final)
        return
    if group.gather(final)[0]:                   # every rank ends with rank 0's verdict
        raise SystemExit(1)


def check_options(job: Job) -> None:
    """Refuse, before any work, options that do not go together."""
    if job.batch_size < 1:
        raise LyraError(f"--batch-size: must be at least 1, got {job.batch_size}")
    if job.stream and (job.batch_size > 1 or job.sample):
        raise LyraError(f"--stream: encodes one file at a time, in chunks; it cannot be combined with "
                        f"{'--sample' if job.sample else '--batch-size'}")


def _run_batches(job: Job, codec: Codec, report: Report, pairs: list[tuple[Path, Path]],
                 mine: list[tuple[int, float]], results: list[Outcome], progress: "JobProgress") -> None:
    """This rank's files through `lyra.codec.batching` (--batch-size, --sample), into `results`."""
    from lyra.codec.batching import Item, Written, encode_batches, file_seed

    items = [Item(i, *pairs[i], seconds,
                  file_seed(job.seed, pairs[i][1].relative_to(job.out).as_posix()) if job.sample else None)
             for i, seconds in mine]
    for item, outcome in encode_batches(codec, items, batch_size=job.batch_size, dtype=job.dtype,
                                        downmix=job.downmix):
        if isinstance(outcome, Written):
            if outcome.truncation:
                report.line(outcome.truncation)
            rec = record(item.source, item.target, outcome.samples, codec.sample_rate, outcome.frames)
            results.append((item.index, {**rec, "moments": outcome.moments}, None))
        elif isinstance(outcome, LyraError):
            results.append((item.index, None, str(outcome)))
        elif isinstance(outcome, OSError):
            results.append((item.index, None, os_error_line(outcome, item.target)))
        elif isinstance(outcome, Exception):
            results.append((item.index, None, _unexpected(item.source, outcome, report)))
        else:
            raise outcome                       # KeyboardInterrupt, SystemExit: the job's
        progress.advance(item.seconds)


def write_job_stats(job: Job, fingerprint: str, records: list[dict]) -> None:
    """The latents' statistics beside a manifest file (`lyra.codec.statistics.stats_path`),
    merged in the order of the outputs' paths; none for "-", a stream, or codes."""
    from lyra.core.paths import file_kind

    if job.manifest in (None, "-") or file_kind(job.manifest) == "stream":
        return
    ordered = sorted(records, key=lambda r: r["output"])
    if not ordered or any(r.get("moments") is None for r in ordered):
        return
    total = merge_all(r["moments"] for r in ordered)
    LatentStats.from_moments(total, files=len(ordered), model_fingerprint=fingerprint, dtype=job.dtype,
                             posterior="sample" if job.sample else "mean").write(stats_path(job.manifest))


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


def _summary(job: Job, everyone: list[list[Outcome]], skipped: int, wall: float, world_size: int) -> str:
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


def _unexpected(source: Path, exc: Exception, report: Report) -> str:
    """One line for an error that is not a `LyraError` (the traceback too with LYRA_DEBUG=1)."""
    if os.environ.get("LYRA_DEBUG"):
        report.line("".join(traceback.format_exception(exc)).rstrip("\n"))
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{source}: {type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------
# Probing, sharding
# ---------------------------------------------------------------------------------------
def probe_seconds(path: Path) -> float:
    """The duration a file's header gives (`soundfile.info`: no samples decoded); 0 when it
    cannot be read (encoding it will say why)."""
    import soundfile

    from lyra.audio.sndfile import quiet_stderr

    try:
        with quiet_stderr():    # libmpg123 prints probing notes to fd 2 on non-audio input
            info = soundfile.info(os.fsencode(path))     # bytes: any file name
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
# Progress
# ---------------------------------------------------------------------------------------
class JobProgress:
    """The job's progress on rank 0 when `show` (`Report.progress`): audio and files done of
    the total by all ranks. Other ranks report their counts (`Group.announce`), which a thread
    on rank 0 reads twice a second."""

    def __init__(self, group: Group, report: Report, show: bool, files: int, seconds: float) -> None:
        self.group, self.show = group, show
        self.total_files, self.total_seconds = files, seconds
        self.files, self.seconds = 0, 0.0
        self._others = (0, 0.0)
        self._display: ContextManager[Optional[Callable[[int, float], None]]] = (
            report.progress(files, seconds) if show and group.is_main else contextlib.nullcontext(None))
        self._update: Optional[Callable[[int, float], None]] = None
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def __enter__(self) -> "JobProgress":
        self._update = self._display.__enter__()
        self._draw()
        if self._update is not None and self.group.world_size > 1 and self.group.store is not None:
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
        if self._update is None:
            return
        with self._lock:
            if files is None or seconds is None:
                files, seconds = self.files + self._others[0], self.seconds + self._others[1]
            self._update(files, seconds)

    def __exit__(self, kind: Any, *rest: Any) -> Optional[bool]:
        if self._thread is not None:
            self._stopped.set()
            self._thread.join()
        if kind is None:             # everyone is done: the exact totals
            self._draw(self.total_files, self.total_seconds)
        return self._display.__exit__(kind, *rest)
