"""pytest configuration of the benchmark suite: ``pytest benchmarks [--lyra-size default|full]``.

- collects ``bench_*.py`` files (the test suite's ``test_*.py`` pattern does not match them);
- ``--lyra-size {small,default,full}`` picks the problem sizes (`benchmarks.sizes`);
- ``--lyra-threads N`` sets torch's intra-op threads (default: PyTorch's own choice; on a
  shared machine, 1 avoids OpenMP threads spinning on cores that others hold);
- orders each benchmark's variants so the eager baseline runs first (its figures are what
  the others' `speedup_vs_eager` and `mem_ratio_vs_eager` divide by);
- turns dynamo's silent fall-back to eager (recompile limit hit) into an error, so a
  "compiled" figure is never an eager one;
- pins glibc's allocator thresholds for the session (`benchmarks.memory`), so timings do not
  depend on the order benchmarks run in;
- adds the torch version, the device and the size to the saved run's ``machine_info``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import harness
from benchmarks.memory import PeakMemoryMeter, use_steady_allocator
from benchmarks.sizes import SIZE_OPTION, Sizes, sizes_from_config
from benchmarks.variants import ORDER

THREADS_OPTION = "--lyra-threads"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lyra", "Lyra benchmarks")
    group.addoption(
        SIZE_OPTION, choices=("small", "default", "full"), default="small",
        help="problem sizes: 'small' (demo model, short clips; minutes on a 2-core CPU), "
             "'default' (the design document's model at CPU sizes; about an hour on 2 cores) "
             "or 'full' (the design document's model, batch 4 x 40960 samples; for GPUs)",
    )
    group.addoption(
        THREADS_OPTION, type=int, default=0, metavar="N",
        help="torch intra-op threads for the run (default 0: PyTorch's default, one per core)",
    )


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption(THREADS_OPTION, default=0)
    if threads < 0:
        raise pytest.UsageError(f"{THREADS_OPTION}: expected a positive thread count (or 0), got {threads}")
    if threads:
        torch.set_num_threads(threads)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    # A file named on the command line is collected by pytest itself, whatever its name.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Eager first within each benchmark, otherwise keeping the collected order."""
    rank = ORDER
    first: dict[tuple, int] = {}
    keys = []
    for index, item in enumerate(items):
        params = dict(getattr(getattr(item, "callspec", None), "params", {}))
        variant = params.pop("variant", None)
        group = (str(item.path), getattr(item, "originalname", item.name),
                 tuple(sorted((k, str(v)) for k, v in params.items())))
        first.setdefault(group, index)
        label = getattr(variant, "label", None)
        keys.append((first[group], rank.get(label, -1), index))
    order = sorted(range(len(items)), key=keys.__getitem__)
    items[:] = [items[i] for i in order]


def pytest_report_header(config: pytest.Config) -> list[str]:
    device = _device()
    return [f"lyra benchmarks: size {config.getoption(SIZE_OPTION)}, device {harness.describe(device)}, "
            f"torch {torch.__version__}"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    device = _device()
    machine_info["lyra"] = {
        "size": config.getoption(SIZE_OPTION),
        "device": harness.describe(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return _device()


@pytest.fixture(scope="session")
def bench_sizes(pytestconfig: pytest.Config) -> Sizes:
    return sizes_from_config(pytestconfig)


@pytest.fixture(scope="session")
def bench_session(device: torch.device) -> harness.Session:
    use_steady_allocator()
    meter = PeakMemoryMeter(device)
    yield harness.Session(device, meter)
    meter.close()


@pytest.fixture(scope="session", autouse=True)
def strict_compilation():
    import torch._dynamo

    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
