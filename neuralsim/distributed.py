"""Independent pieces of work — one object's capture and field, one optimize run, one retraining, one judged seed —
run one after another in this process (`Serial`, the default) or as tasks on Ray (`RayExecutor`: a local Ray on
this machine's cores, or a cluster).

A piece is a plain function of its inputs and of files; it writes its output through a staged folder or an atomic
rename and reuses an output that exists, and every random number it draws derives from the run's seed and the
piece's name. So the order in which pieces run, the process that runs them and a retry after a killed worker change
no byte of what they write. On a cluster the output folder and the cache must live on storage every node sees (NFS,
a shared volume): results travel as files there, not through Ray. A task first checks that its inputs are there and
the driver that its outputs are, so storage that one node lacks is one clear error instead of a half-written run.

Ray is imported only when a `RayExecutor` first runs something."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from neuralsim.errors import UserError

MAX_RETRIES = 3
"""Times a task whose worker died (killed, out of memory, its node lost) is run again. An error the task raises
itself is not retried: it would raise it again."""

SHARED = "put the output folder and the cache on storage every node mounts"

Label = str | Callable[[Any], str] | None
Paths = Callable[..., Iterable[str | Path]] | None


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *, num_cpus: int = 1, num_gpus: int = 0,
                      name: Label = None, needs: Paths = None, makes: Paths = None,
                      log: Callable[[str], None] | None = None) -> Iterator[tuple[Any, Any]]:
        """`fn(item)` of every item, yielded as (item, result) in the order the pieces finish. `num_cpus` (the
        torch threads of a task) and `num_gpus` are what each piece takes; `name` labels a piece (a string or a
        function of the item); `needs(item)` lists the files a piece reads and `makes(item, result)` those it
        writes, checked where storage may differ; `log` takes one line per piece."""
        ...


def _label(name: Label, item: Any) -> str:
    return name(item) if callable(name) else name if name is not None else str(item)


class Serial:
    """Each piece in this process, one after another, in the order given: the pieces' own threads and settings."""

    def map_unordered(self, fn, items, *, num_cpus=1, num_gpus=0, name=None, needs=None, makes=None, log=None):
        for item in items:
            if log is not None and name is not None:
                log(_label(name, item))
            yield item, fn(item)

    def close(self) -> None:
        pass

    def __enter__(self) -> Serial:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Span:
    """Where and when one task ran (wall-clock seconds since the epoch, as the worker's clock reads them)."""

    name: str
    host: str
    pid: int
    start: float
    end: float


@dataclass
class RayExecutor:
    """Pieces as Ray tasks. `address` None or "local": a Ray started here on this machine's cores (shut down by
    `close`); "auto", "HOST:6379" (on a node of a running cluster) or "ray://HOST:10001" (from outside it): that
    cluster. A Ray already initialised in this process (`ray.init` by the caller) is used as it is."""

    address: str | None = None
    max_retries: int = MAX_RETRIES
    connect_timeout: float = 5.0
    spans: list[Span] = field(default_factory=list)
    """Each finished task's host, process and times, in the order they finished."""
    _started: bool = field(default=False, init=False, repr=False)

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UserError("--ray needs the ray package: pip install 'ray>=2.9'.") from None
        local = self.address in (None, "", "local")
        if not local:
            check_listening(self.address, self.connect_timeout)
        if ray.is_initialized():
            return ray
        import logging

        settings = {"include_dashboard": False, "logging_level": logging.WARNING}
        if local:
            ray.init(address="local", num_cpus=machine_cpus(), **settings)
        else:
            try:
                ray.init(address=self.address, **settings)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError, ImportError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                # Ray turns token authentication on for a cluster whose head holds a token (~/.ray/auth_token), but
                # never for a driver given an explicit address
                auth = "" if "RAY_AUTH_MODE" in os.environ or self.address == "auto" else (
                    "; a cluster with token authentication needs RAY_AUTH_MODE=token here and its token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN")
                raise UserError(f"Cannot join the Ray cluster at {self.address} ({first}){auth}.") from None
        self._started = True
        return ray

    def close(self) -> None:
        """Shut down the Ray this executor started or joined (not one the caller initialised)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        self._ray()  # a cluster that does not answer is an error before anything is written
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map_unordered(self, fn, items, *, num_cpus=1, num_gpus=0, name=None, needs=None, makes=None, log=None):
        items = list(items)
        if not items:
            return
        ray = self._ray()
        threads = max(1, int(num_cpus))
        env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        task = ray.remote(_run_task)
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": self.max_retries,
                   "retry_exceptions": False, "runtime_env": {"env_vars": env}}
        total = ray.cluster_resources()
        slots = total.get("GPU", 0) // num_gpus if num_gpus else total.get("CPU", 1) // max(num_cpus, 1)
        limit = 2 * max(1, int(slots))  # enough queued to keep every slot busy, not the whole list at once
        cwd, queue, pending = os.getcwd(), iter(items), {}
        try:
            while True:
                for item in queue:
                    wanted = [str(Path(cwd, p)) for p in needs(item)] if needs else []
                    ref = task.options(name=_label(name, item)[:100], **options).remote(fn, item, wanted, threads, cwd)
                    pending[ref] = item
                    if len(pending) >= limit:
                        break
                if not pending:
                    return
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ref)
                result, (host, pid, start, end) = self._get(ray, ref, _label(name, item))
                self.spans.append(Span(_label(name, item), host, pid, start, end))
                if makes:
                    check_made([str(Path(cwd, p)) for p in makes(item, result)], host)
                if log is not None and name is not None:
                    log(f"{_label(name, item)} — done on {host} in {end - start:.0f} s")
                yield item, result
        finally:  # an error, or a caller that stopped early: the tasks not done are not wanted
            for ref in pending:
                ray.cancel(ref)

    def _get(self, ray, ref, label: str):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise UserError(str(e.cause)) from None
            raise
        except ray.exceptions.RayError as e:  # the worker or its node died every time it was tried
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"The Ray task {label!r} failed {self.max_retries + 1} times: {type(e).__name__} "
                            f"{first}".rstrip() + ".") from None


def _run_task(fn, item, needs: list[str], threads: int, cwd: str):
    """On the worker: the driver's folder (relative paths), the inputs checked, `threads` torch threads,
    deterministic algorithms, then the piece."""
    import torch

    from neuralsim.runtime import make_deterministic

    start, host = time.time(), socket.gethostname()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    check_visible(needs, host)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    make_deterministic()
    result = fn(item)
    return result, (host, os.getpid(), start, time.time())


def check_visible(paths: Iterable[str | Path], host: str | None = None) -> None:
    """Every path exists here (on a worker), else one line naming the worker and the path."""
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"worker {host or socket.gethostname()} cannot see {path}: {SHARED}.")


def check_made(paths: Iterable[str | Path], host: str) -> None:
    """Every path a worker wrote exists on this machine (the driver), else one line naming both."""
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path} was written on worker {host} but this machine ({socket.gethostname()}) cannot "
                            f"see it: {SHARED}.")


def machine_cpus() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT", "ray://HOST:PORT" or "[IPv6]:PORT"; a bare host is Ray's port 6379, and
    ray:// its client port 10001."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    default = 10001 if address.startswith("ray://") else 6379
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, ""
    if not host:
        raise UserError(f"--ray {address}: expected local, auto, HOST:PORT or ray://HOST:PORT.")
    try:
        return host, int(port) if port else default
    except ValueError:
        raise UserError(f"--ray {address}: the port {port!r} is not a number.") from None


def check_listening(address: str, timeout: float = 5.0) -> None:
    """Something answers at a cluster's address (a quick TCP connection), else one line saying how to start one:
    `ray.init` itself would retry for a minute or more."""
    if address == "auto":
        return  # the cluster started on this machine, found by Ray itself
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
        raise UserError(f"No Ray cluster answers at {address} ({reason}): start one with `ray start --head` on its "
                        "head node and give that address, or --ray local for a Ray on this machine alone.") from None


def make_executor(ray: str | None) -> Serial | RayExecutor:
    """The executor of a command's `--ray` option: none → `Serial`; "local" → a Ray here; an address → that cluster."""
    return Serial() if ray is None else RayExecutor(ray)


def gpus_per_task(device: str) -> int:
    """1 when pieces run on CUDA (device "cuda…", or "auto" with CUDA here), else 0."""
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        import torch

        return int(torch.cuda.is_available())
    return 0
