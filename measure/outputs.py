"""Output safety shared by every command: atomic writes with the process umask, output locations checked before any
work, never an output that is also an input, case ids unique across all inputs.

Every function raises :class:`OutputError` (a ``ValueError``) with a message naming the path and the problem; the
commands turn it into exit status 2 before they read or compute anything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence


class OutputError(ValueError):
    """An output location that cannot or must not be written."""


def process_umask() -> int:
    """The process umask: from ``/proc/self/status`` where there is one (reading it with ``os.umask`` sets it to 0
    for a moment, which other threads could see), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_beside(path: Path) -> Path:
    """A fresh hidden temporary name in ``path``'s folder, keeping its suffixes (writers infer the format from
    them: ``.nii.gz``, ``.png``)."""
    suffix = "".join(path.suffixes)[-20:] or ".tmp"
    handle, name = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(handle)
    return Path(name)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(temporary)`` and rename it into place, so that a reader sees the old file or the
    complete new one, never a partial one. The file gets the permissions a plain ``open`` would give it
    (``0o666`` less the umask, not ``mkstemp``'s 0600). The temporary file is removed on any error or interrupt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    try:
        write(temporary)
        try:
            os.chmod(temporary, 0o666 & ~process_umask())
        except OSError:  # file systems without permissions (FAT, some network mounts): keep what they give
            pass
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8, newlines as given)."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)

    return atomic_write(path, write)


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove it writable by creating and removing a file there; raises
    :class:`OutputError` naming it otherwise (checked before the work, not after)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: the {what} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: the {what} cannot be written ({exc.strerror or exc})") from exc
    return folder


def check_writable_file(path: str | Path, what: str = "output file") -> Path:
    """The output file's folder must be writable and the path must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: the {what} is a folder; give a file name")
    check_writable_folder(path.parent if str(path.parent) else Path("."), f"folder of the {what}")
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_outputs_over_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Raise :class:`OutputError` when an output path is an input file, or an output folder is an input folder (so that
    writing would replace what the user gave us)."""
    given_at: dict[Path, Path] = {}
    for given in map(Path, inputs):  # each path resolved once: a cohort's outputs are checked in linear time
        try:
            given_at.setdefault(given.resolve(), given)
        except OSError:
            continue
    for output in map(Path, outputs):
        try:
            given = given_at.get(output.resolve())
        except OSError:
            continue
        if given is not None:
            kind = "folder" if given.is_dir() else "file"
            raise OutputError(f"{output}: the output is the input {kind} {given}; choose another output location "
                              "(inputs are never overwritten)")


def check_measure_outputs(output: str | Path, qc_dir: str | Path | None, inputs: Sequence[str | Path],
                          append: bool, overwrite: bool, tables: Sequence[str | Path] = ()) -> None:
    """Before measuring anything: the CSV and the other ``tables`` may be written (not folders, their folders
    writable, not over existing ones without append/overwrite, no two the same), the QC folder is writable, and none
    is an input. Raises :class:`OutputError`."""
    csvs = [Path(output), *map(Path, tables)]
    for csv in csvs:
        check_writable_file(csv, "output CSV")
        if csv.exists() and not (append or overwrite):
            raise OutputError(f"{csv} exists: use --append to add cases or --overwrite to replace it")
    if len({os.path.abspath(c) for c in csvs}) < len(csvs):
        raise OutputError(f"the output tables must be different files: {', '.join(map(str, csvs))}")
    if qc_dir:
        check_writable_folder(qc_dir, "QC folder")
    refuse_outputs_over_inputs([*csvs, *([qc_dir] if qc_dir else [])], inputs)


def check_unique_case_ids(cases: Sequence[tuple[str, Path]]) -> None:
    """Raise :class:`OutputError` naming both inputs when two of them would be written under one case id."""
    seen: dict[str, Path] = {}
    for case_id, path in cases:
        if case_id in seen and not _same(seen[case_id], path):
            raise OutputError(f"case id {case_id!r} is given by two inputs, {seen[case_id]} and {path}; their outputs "
                              "would overwrite each other: rename one of them or run them separately")
        seen.setdefault(case_id, path)


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` while reading, merging and rewriting a file there, so that two
    processes appending to one table take turns instead of losing each other's rows.

    ``flock`` on the folder itself (no lock file left behind); where the file system refuses that (NFS clients
    emulate flock with fcntl locks, which need a file open for writing; Lustre without ``-o flock``), a POSIX lock on
    a hidden ``.spine-lock`` file in the folder; where both are refused, or without ``fcntl`` (Windows), it warns and
    does not lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            os.close(handle)
            handle = os.open(folder / ".spine-lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX)
            except OSError as exc:
                print(f"warning: cannot lock {folder} ({exc.strerror or exc}): concurrent writers of the same table "
                      "could lose rows", file=sys.stderr)
        yield
    finally:
        os.close(handle)  # closing releases the lock
