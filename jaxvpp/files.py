"""Writing outputs: paths checked before any work, folders and files written whole or not at all, one writer
at a time.

Every command writes through this module (:func:`write_folder`, :func:`write_folders`, :func:`write_file`):

* **Checked first.** :func:`check_folder` and :func:`check_file` find the faults that a path shows before
  anything is computed (an output folder that is a file, a file that is a folder, a parent that is a file or
  cannot be written, a folder that holds the working directory) and raise :class:`OutputError`, an
  :class:`~jaxvpp.errors.InputError` naming the path and the option (the command exits with 2).
* **Whole or not at all.** A folder is written as a complete sibling folder
  (``.NAME.jaxvpp-new-<writer>``) that then takes the place of the old one in one atomic exchange
  (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, the old folder kept aside until the new
  one is in place). Readers see the old set or the new set, never a mix, and a crash (even ``SIGKILL``)
  leaves the old or the new set. A file is written beside its place and renamed over it.
* **The writer owns its files.** The new folder holds the files written now; entries of the old folder
  named in ``owned`` (the names the command writes in any run) that are not written now are dropped, so no
  stale file of an earlier run stays beside the new ones. Every other entry of the old folder is kept (hard
  links of the same files; sub-folders copied as hard links).
* **Debris is cleaned up.** Temporary entries carry their writer in the name (host, process id and process
  start time). A later write to the same place removes those whose writer is provably dead (same host, no
  such process, or another process under that id) and, where a crash left no folder but an old one kept
  aside, puts the old one back.
* **One writer at a time.** The write holds an exclusive ``flock`` on the parent folder (no lock file is
  left behind). A second writer waits for it (up to ``JAXVPP_LOCK_TIMEOUT`` seconds, default 120), so two
  commands writing the same place leave the complete set of the one that wrote last.
* **Interrupts.** ``Ctrl-C`` while files are being prepared removes them: nothing is written. The commit
  itself (the renames, milliseconds) is not interrupted: a ``SIGINT`` that arrives then is raised after it as
  :class:`InterruptedAfterWrite`.

For tests, ``JAXVPP_TEST_HOOK=POINT:ACTION`` stops a write at ``staged`` (every new file in place in the
temporary folder), ``aside`` (two-rename fallback: the old folder moved aside) or ``swapped`` (the new
folder in place, the old one not yet removed); ACTION is ``pause`` (print a line to stderr and sleep),
``sleep=SECONDS``, ``kill`` (``SIGKILL`` itself) or ``fail`` (raise a disk-full ``OSError``).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jaxvpp.errors import InputError

try:
    import fcntl
except ImportError:  # not POSIX: writes are still atomic, but not serialised
    fcntl = None  # type: ignore[assignment]

#: What a file may be given as: its text (UTF-8), its bytes, or a function that writes it at the given path.
Content = str | bytes | Callable[[Path], None]

#: Seconds a writer waits for another one writing beside the same path (``JAXVPP_LOCK_TIMEOUT`` overrides).
LOCK_TIMEOUT_S = 120.0
#: Environment variable of the test hook (see the module docstring).
HOOK_ENV = "JAXVPP_TEST_HOOK"

_DEBRIS = re.compile(
    r"^\.(?P<name>.+)\.jaxvpp-(?P<kind>new|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{8}$"
)


class OutputError(InputError, OSError):
    """An output path that cannot be written, named with the option that gave it (the command exits with 2).

    An :class:`~jaxvpp.errors.InputError` (``file`` is the path, ``column`` the option such as ``--out``) and
    an :class:`OSError` (a failed write).
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str], option: str | None = None) -> None:
        InputError.__init__(self, message, file=path, column=option)

    def __reduce__(self):
        return (_rebuild_output_error, (self.message, self.file, self.column))


def _rebuild_output_error(message: str, path: str, option: str | None) -> OutputError:
    return OutputError(message, path=path, option=option)


class InterruptedAfterWrite(KeyboardInterrupt):
    """``SIGINT`` arrived while outputs were committed: they were written completely, then the interrupt was raised."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__(", ".join(paths))
        self.paths = list(paths)


@dataclass(frozen=True)
class FolderWrite:
    """One folder of a :func:`write_folders` call: its path, its files (name -> content) and the names it owns."""

    path: str | os.PathLike[str]
    files: Mapping[str, Content]
    owned: Sequence[str] = ()
    option: str | None = None


# ----------------------------------------------------------------------------------------------------
# Checks (before any work, and again under the lock)
# ----------------------------------------------------------------------------------------------------


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ValueError(f"output file name must be a plain file name, got {name!r}")


def _check_parent(p: Path, given: str, option: str | None) -> None:
    """The nearest existing ancestor of ``p`` must be a folder that this process may write in."""
    anc = p.parent
    while not os.path.lexists(anc) and anc.parent != anc:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot create it: {anc} is a file, not a folder", path=given, option=option)
    if not os.access(anc, os.W_OK | os.X_OK):
        what = "write in" if anc == p.parent else "create folders in"
        raise OutputError(f"cannot {what} {anc}: permission denied", path=given, option=option)


def check_folder(path: str | os.PathLike[str], *, option: str | None = None, names: Sequence[str] = ()) -> Path:
    """Check that ``path`` can become an output folder holding files ``names``; returns its resolved path.

    Raises :class:`OutputError` if it exists and is not a folder, if one of ``names`` in it is a folder, if
    it is (or holds) the working directory or is the root, or if its nearest existing ancestor is a file or
    cannot be written (or, for an existing folder, read).
    """
    for name in names:
        _check_name(name)
    p = _resolve(path)
    _check_folder_at(p, os.fspath(path), option, names)
    return p


def _check_folder_at(p: Path, given: str, option: str | None, names: Sequence[str]) -> None:
    if p.parent == p:
        raise OutputError("the root folder cannot be an output folder", path=given, option=option)
    try:
        cwd: Path | None = Path(os.getcwd()).resolve()
    except OSError:
        cwd = None
    if cwd is not None and (p == cwd or p in cwd.parents):
        raise OutputError(
            "an output folder is replaced as a whole: it must not be the working directory or hold it "
            "(give a folder below it, e.g. results/)",
            path=given,
            option=option,
        )
    if os.path.lexists(p):
        if not p.is_dir():
            raise OutputError("exists and is not a folder", path=given, option=option)
        if not os.access(p, os.R_OK | os.X_OK):
            raise OutputError("cannot read the existing folder: permission denied", path=given, option=option)
        for name in names:
            q = p / name
            if q.is_dir() and not q.is_symlink():
                raise OutputError(f"{name} in it is a folder, where a file would be written", path=given, option=option)
    _check_parent(p, given, option)


def check_file(path: str | os.PathLike[str], *, option: str | None = None) -> Path:
    """Check that ``path`` can be written as a file; returns its resolved path (raises :class:`OutputError`)."""
    p = _resolve(path)
    _check_file_at(p, os.fspath(path), option)
    return p


def _check_file_at(p: Path, given: str, option: str | None) -> None:
    if p.is_dir():
        raise OutputError("is a folder; give a file name", path=given, option=option)
    _check_parent(p, given, option)


# ----------------------------------------------------------------------------------------------------
# Writers, their temporary names and their debris
# ----------------------------------------------------------------------------------------------------


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc``), ``"0"`` where unknown, None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else "0"
    except (OSError, IndexError):
        return "0"


def _temp_name(name: str, kind: str) -> str:
    pid = os.getpid()
    return f".{name}.jaxvpp-{kind}-{_host()}-{pid}-{_start_time(pid) or '0'}-{secrets.token_hex(4)}"


def _writer_dead(host: str, pid: int, start: str) -> bool:
    """True only when the writer of a temporary entry provably no longer runs."""
    if host != _host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    now = _start_time(pid)
    if now is None:
        return True
    return start != "0" and now != "0" and now != start  # the id now belongs to another process


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clean_debris(target: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary entries beside ``target`` that dead writers left; returns what was removed or restored.

    Where ``target`` is missing and a dead writer kept the old folder aside (a crash between the two renames
    of the fallback swap), that folder is put back first.
    """
    p = _resolve(target)
    done: list[str] = []
    try:
        entries = sorted(os.scandir(p.parent), key=lambda e: e.name)
    except FileNotFoundError:
        return done
    dead = []
    for e in entries:
        m = _DEBRIS.match(e.name)
        if m and m["name"] == p.name and _writer_dead(m["host"], int(m["pid"]), m["start"]):
            dead.append((m["kind"], Path(e.path)))
    for kind, path in sorted(dead, key=lambda x: x[0] != "old"):
        if kind == "old" and not os.path.lexists(p):
            os.rename(path, p)
            done.append(f"restored {p} from {path.name}")
        else:
            _remove(path)
            done.append(f"removed {path.name}")
    return done


# ----------------------------------------------------------------------------------------------------
# Test hook, lock, signals, renames
# ----------------------------------------------------------------------------------------------------


def _hook(point: str) -> None:
    spec = os.environ.get(HOOK_ENV, "")
    where, _, action = spec.partition(":")
    if where != point:
        return
    if action == "pause":
        print(f"jaxvpp test hook: paused at {point} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(600)
    elif action.startswith("sleep="):
        print(f"jaxvpp test hook: sleeping at {point} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(float(action.partition("=")[2]))
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "fail":
        raise OSError(errno.ENOSPC, f"disk full (test hook at {point})")


@contextmanager
def _locked(folders: Sequence[Path], given: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on each folder (sorted, so that writers never wait on each other in a circle)."""
    if fcntl is None:
        yield
        return
    timeout = float(os.environ.get("JAXVPP_LOCK_TIMEOUT", LOCK_TIMEOUT_S))
    fds: list[int] = []
    try:
        for folder in sorted(set(folders), key=str):
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            fds.append(fd)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise OutputError(
                            f"another process has been writing in {folder} for {timeout:g} s (JAXVPP_LOCK_TIMEOUT); "
                            "nothing written",
                            path=given,
                        ) from None
                    time.sleep(0.02)
        yield
    finally:
        for fd in reversed(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


@contextmanager
def _sigint_deferred(paths: Sequence[str]) -> Iterator[None]:
    """Let the commit finish before a ``SIGINT``; one that arrived meanwhile is raised afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hits:
        if old is signal.default_int_handler:
            raise InterruptedAfterWrite(paths)
        if callable(old):
            old(signal.SIGINT, None)
        else:
            os.kill(os.getpid(), signal.SIGINT)


def _load_exchange() -> Callable[[bytes, bytes], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return lambda a, b: fn(at_fdcwd, a, at_fdcwd, b, rename_exchange)


_renameat2 = _load_exchange()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (then the caller renames twice)."""
    if _renameat2 is None:
        return False
    if _renameat2(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_one(path: Path, content: Content, mode: int | None = None) -> None:
    """Write one new file (exclusive create) and flush it to disk."""
    if callable(content):
        content(path)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    else:
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    if mode is not None:
        os.chmod(path, mode)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _keep(entry: os.DirEntry, dst: Path) -> None:
    """Carry an entry of the old folder into the new one (hard links; folders copied as hard links)."""
    if entry.is_symlink():
        os.symlink(os.readlink(entry.path), dst)
    elif entry.is_dir():
        shutil.copytree(entry.path, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(entry.path, str(dst))


def _make_parents(p: Path) -> list[Path]:
    """Create the missing ancestors of ``p``; returns those created (outermost first)."""
    missing = []
    anc = p.parent
    while not os.path.lexists(anc):
        missing.append(anc)
        anc = anc.parent
    created = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
            created.append(d)
        except FileExistsError:
            pass
    return created


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _failed(exc: OSError, given: str, option: str | None) -> OutputError:
    where = f" ({exc.filename})" if exc.filename and os.fspath(exc.filename) != given else ""
    return OutputError(f"cannot write: {exc.strerror or exc}{where}; nothing written", path=given, option=option)


# ----------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    given: str
    target: Path
    files: Mapping[str, Content]
    owned: frozenset[str]
    option: str | None
    staged: Path | None = None
    how: str = ""  # "renamed" (no old folder), "exchanged", "aside"
    aside: Path | None = None


def _stage(plan: _Plan) -> None:
    target = plan.target
    staged = target.parent / _temp_name(target.name, "new")
    os.mkdir(staged, 0o777)
    plan.staged = staged
    if target.is_dir():
        os.chmod(staged, stat.S_IMODE(os.stat(target).st_mode))
        with os.scandir(target) as it:
            for entry in it:
                if entry.name not in plan.files and entry.name not in plan.owned:
                    _keep(entry, staged / entry.name)
    for name, content in plan.files.items():
        _write_one(staged / name, content)
    _fsync_dir(staged)


def _swap(plan: _Plan) -> None:
    target, staged = plan.target, plan.staged
    assert staged is not None
    if not os.path.lexists(target):
        os.rename(staged, target)
        plan.how = "renamed"
    elif _exchange(staged, target):
        plan.how = "exchanged"
    else:
        aside = target.parent / _temp_name(target.name, "old")
        os.rename(target, aside)
        plan.how, plan.aside = "aside", aside
        _hook("aside")
        os.rename(staged, target)


def _undo(plan: _Plan) -> None:
    target, staged = plan.target, plan.staged
    assert staged is not None
    if plan.how == "renamed":
        os.rename(target, staged)
    elif plan.how == "exchanged":
        if not _exchange(staged, target):
            raise OSError(errno.EIO, "cannot swap back", str(target))
    elif plan.how == "aside" and plan.aside is not None:
        if os.path.lexists(target):
            os.rename(target, staged)
        os.rename(plan.aside, target)
    plan.how = ""


def check_folders(writes: Sequence[FolderWrite]) -> list[Path]:
    """:func:`check_folder` for each write (its files and owned names), and that no folder holds another one.

    Returns the resolved paths; raises :class:`OutputError`.
    """
    targets = []
    for w in writes:
        names = list(w.files) + [n for n in w.owned if n not in w.files]
        targets.append(check_folder(w.path, option=w.option, names=names))
    for a, wa in zip(targets, writes):
        for b, wb in zip(targets, writes):
            if wa is not wb and (a == b or a in b.parents):
                raise OutputError(
                    f"it is or holds the output folder {os.fspath(wb.path)}; give separate folders",
                    path=os.fspath(wa.path),
                    option=wa.option,
                )
    return targets


def write_folders(writes: Sequence[FolderWrite]) -> None:
    """Write several folders together: each whole or not at all, all of them or none (short of a crash).

    Every folder is checked and staged before any is swapped in; if a swap fails, the ones done are swapped
    back. A crash between two swaps leaves each folder whole (old or new set). Raises :class:`OutputError`
    for a path that cannot be written; other exceptions (e.g. from a content function) propagate. In every
    failure nothing is changed.
    """
    plans = [
        _Plan(os.fspath(w.path), target, dict(w.files), frozenset(w.owned), w.option)
        for w, target in zip(writes, check_folders(writes))
    ]
    if not plans:
        return
    created: list[Path] = []
    current = plans[0]
    try:
        for plan in plans:
            current = plan
            created += _make_parents(plan.target)
        with _locked([p.target.parent for p in plans], plans[0].given):
            for plan in plans:
                current = plan
                clean_debris(plan.target)
                _check_folder_at(plan.target, plan.given, plan.option, list(plan.files) + list(plan.owned))
            try:
                for plan in plans:
                    current = plan
                    _stage(plan)
                _hook("staged")
                with _sigint_deferred([p.given for p in plans]):
                    done: list[_Plan] = []
                    try:
                        for plan in plans:
                            current = plan
                            _swap(plan)
                            done.append(plan)
                        _hook("swapped")
                    except BaseException:
                        for plan in reversed(done):
                            _undo(plan)
                        raise
                    for plan in plans:  # committed: the old sets go
                        old = {"exchanged": plan.staged, "aside": plan.aside}.get(plan.how)
                        plan.staged = None
                        if old is not None:
                            shutil.rmtree(old, ignore_errors=True)
                        _fsync_dir(plan.target.parent)
            finally:
                for plan in plans:
                    if plan.staged is not None and os.path.lexists(plan.staged):
                        shutil.rmtree(plan.staged, ignore_errors=True)
    except OSError as exc:
        _remove_created(created)
        if isinstance(exc, OutputError):
            raise
        raise _failed(exc, current.given, current.option) from exc
    except BaseException:
        _remove_created(created)
        raise


def write_folder(
    path: str | os.PathLike[str],
    files: Mapping[str, Content],
    *,
    owned: Sequence[str] = (),
    option: str | None = None,
) -> None:
    """Write ``files`` (name -> text, bytes or a function writing the file) as the folder ``path``, whole or
    not at all.

    Entries of an existing folder that are written again are replaced; those named in ``owned`` and not
    written now are dropped; every other entry is kept. See the module docstring for the guarantees; raises
    :class:`OutputError` (naming ``path`` and ``option``) when the path cannot be written.
    """
    write_folders([FolderWrite(path, files, owned, option)])


# ----------------------------------------------------------------------------------------------------
# Single files
# ----------------------------------------------------------------------------------------------------


def write_file(path: str | os.PathLike[str], content: Content, *, option: str | None = None) -> None:
    """Write one file whole or not at all (a temporary file beside it, then a rename over it).

    An existing file keeps its permission bits. Raises :class:`OutputError` naming ``path`` and ``option``.
    """
    given = os.fspath(path)
    target = check_file(path, option=option)
    created: list[Path] = []
    tmp: Path | None = None
    try:
        created = _make_parents(target)
        with _locked([target.parent], given):
            clean_debris(target)
            _check_file_at(target, given, option)
            mode = stat.S_IMODE(os.stat(target).st_mode) if target.is_file() else None
            tmp = target.parent / _temp_name(target.name, "new")
            _write_one(tmp, content, mode)
            _hook("staged")
            with _sigint_deferred([given]):
                os.replace(tmp, target)
                tmp = None
                _fsync_dir(target.parent)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _remove_created(created)
        if isinstance(exc, OutputError):
            raise
        raise _failed(exc, given, option) from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _remove_created(created)
        raise
