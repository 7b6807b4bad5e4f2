"""What every batch command shares: the progress bar and one parallel map over cases.

:func:`parallel_map` runs ``function(*task)`` for every task, serially or in worker processes, with a progress bar,
turning a crashed worker into one failed case (never a lost batch). Interrupts stop it promptly and leave nothing
running: workers ignore Ctrl-C (the parent handles it), an interrupted parent cancels what has not started and kills
the workers before it re-raises, and on Linux a worker dies with its parent even when the parent is killed outright
(``SIGKILL``), so no worker is ever left orphaned.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence, TypeVar

Result = TypeVar("Result")
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.lru_cache(maxsize=1)
def tool_version() -> str:
    """The installed package's version (``unknown`` when run from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spine-mri-toolkit")
    except PackageNotFoundError:
        return "unknown"


NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_folder(name: str) -> str | None:
    """The folder nnU-Net's environment variable ``name`` (``nnUNet_raw``, ``nnUNet_preprocessed``,
    ``nnUNet_results``) names, None when it is unset or empty: the one place the project reads them."""
    if name not in NNUNET_FOLDERS:
        raise ValueError(f"{name}: not one of nnU-Net's folder variables {', '.join(NNUNET_FOLDERS)}")
    return os.environ.get(name) or None


def dataset_folder_name(dataset: str, *folders: Path) -> str:
    """``DatasetNNN_Name`` for an id or a name: the single ``DatasetNNN_*`` folder in the first of ``folders`` that
    has exactly one; raises FileNotFoundError when none does."""
    if dataset.startswith("Dataset"):
        return dataset
    prefix = f"Dataset{int(dataset):03d}_"
    problems = []
    for folder in folders:
        found = sorted(p.name for p in folder.glob(prefix + "*") if p.is_dir())
        if len(found) == 1:
            return found[0]
        problems.append(f"{folder}: {'several dataset folders ' + ', '.join(found) if found else 'no ' + prefix + '*'}")
    raise FileNotFoundError("; ".join(problems))


def add_version_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version`` on a command's parser: prints ``PROG VERSION`` and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {tool_version()}")
    return parser


def progress_bar(total: int, enabled: bool):
    """The progress bar of every batch command (tqdm on stderr, counting cases)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="case", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _die_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux; elsewhere nothing). The parent is
    whatever started the worker (the command, or a fork server): checked before and after the request, so that a
    parent that died in between still ends the worker."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker_start() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent handles it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (inherited through fork): just end
    _die_with_parent()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the tasks not started and kill the workers now (not after their current case)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor's workers (CPython)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=5)


def parallel_map(function: Callable[..., Result], tasks: Sequence[tuple], jobs: int = 1, progress: bool = False,
                 on_crash: Callable[[tuple, BaseException], Result] | None = None,
                 on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
    """``function(*task)`` for every task, results in task order.

    ``jobs`` > 1 (and more than one task): in that many worker processes. A worker that raises or dies gives
    ``on_crash(task, exception)`` as that task's result (re-raised when None). ``on_result(index, result)`` is called
    as each result arrives (completion order); an exception it raises stops the map like an interrupt does.
    """
    results: list = [None] * len(tasks)

    def accept(index: int, result: Result) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)

    with progress_bar(len(tasks), progress) as bar:
        if jobs <= 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                accept(index, function(*task))
                bar.update(1)
            return results
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_start)
        try:
            pending: dict[Future, int] = {pool.submit(function, *task): n for n, task in enumerate(tasks)}
            while pending:
                # a short timeout keeps the main thread responsive to Ctrl-C while it waits
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - a crashed worker loses one case, not the batch
                        if on_crash is None:
                            raise
                        result = on_crash(tasks[index], exc)
                    accept(index, result)
                    bar.update(1)
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)
    return results


_handler_pid: int | None = None
"""The process that installed :func:`_terminate_as_interrupt` (a forked child inherits the handler, not the role)."""


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    if os.getpid() != _handler_pid:  # a forked child before its at-fork reset ran: end as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """In a process forked while a command's SIGTERM handler is installed (a worker of a pool the command does not
    own, such as nnU-Net's ``multiprocessing.Pool`` under ``spine-convert --verify``), SIGTERM ends it as by default:
    ``Pool.terminate()`` relies on that, and a worker that inherited the handler raised KeyboardInterrupt instead and
    could hang, and the command with it, waiting for it. A SIGTERM that reaches the child before this runs is ended
    the same way by the handler itself (it acts only in the process that installed it)."""
    if signal.getsignal(signal.SIGTERM) is _terminate_as_interrupt:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # pragma: no cover - forked from a thread other than the main one: it cannot be reset
            pass


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


def interruptible(command: str) -> Callable:
    """Decorator of a command's ``main(argv) -> int``: Ctrl-C or SIGTERM stops it (workers included, see
    :func:`parallel_map`), removes temporary files on the way out, prints one line and returns exit status 130
    instead of a traceback. Outputs are written atomically, so each file is either complete or not there."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            global _handler_pid
            installed = threading.current_thread() is threading.main_thread()
            if installed:
                _handler_pid = os.getpid()
            previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if installed else None
            try:
                return main(argv)
            except KeyboardInterrupt:
                print(f"{command}: interrupted; every worker stopped; files already complete are kept, none is "
                      "half-written", file=sys.stderr)
                return EXIT_INTERRUPTED
            finally:
                if installed:  # signal.signal returns None for a handler not set from Python: the default then
                    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

        return run

    return decorate
