"""Resumable downloads (HTTP Range) with a progress bar, and checked zip extraction.

A download goes to `<file>.part`; a rerun asks the server for the remaining bytes
(`Range: bytes=N-`) and appends. A server that ignores the range (200 instead of 206) makes us
start over rather than append garbage. Only a complete download is renamed to its final name.

An archive is looked at before anything is written: every member must stay inside the working
folder (resolved paths, not string prefixes), hold only the names the caller expects, and the
sizes its headers declare must fit the caller's bound and the free disk. It is extracted into
a working folder whose top-level entries are renamed into place only when all are complete and
checked, and never over something already there: a refused or interrupted extraction changes
nothing that was there before.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import PipelineError

CHUNK = 1 << 20


class Unreachable(PipelineError):
    """The server could not be reached at all (offline, DNS, refused): callers may fall back."""


def download(
    url: str,
    dest: Path,
    *,
    progress: bool = True,
    timeout: float = 60,
    max_bytes: int | None = None,
) -> Path:
    """Fetch `url` to `dest`, resuming a `.part` file left by an interrupted run.

    With `max_bytes`, a file announced or sent larger than that is refused and its `.part`
    removed (a server, or anyone on a plain-http path, cannot fill the disk).
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part already holds every byte
            os.replace(part, dest)
            return dest
        raise PipelineError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"cannot reach {url} ({reason}); check the network or download it "
            "yourself and pass its path"
        ) from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length", "")
        total = have + int(length) if length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            part.unlink(missing_ok=True)
            raise PipelineError(
                f"{url} is {total} bytes, more than the {max_bytes} expected; not downloading it"
            )
        written = have
        with (
            open(part, "ab" if have else "wb") as sink,
            _bar(progress, dest.name, total, have) as bar,
        ):
            while block := response.read(CHUNK):
                written += len(block)
                if max_bytes is not None and written > max_bytes:
                    break
                sink.write(block)
                bar(len(block))
    if max_bytes is not None and written > max_bytes:
        part.unlink()
        raise PipelineError(
            f"{url} sent more than the {max_bytes} bytes expected; download refused and removed"
        )
    if total is not None and part.stat().st_size != total:
        raise PipelineError(
            f"download of {url} stopped at {part.stat().st_size} of {total} bytes; rerun to resume"
        )
    os.replace(part, dest)
    return dest


def extract_zip(
    archive: Path,
    into: Path,
    *,
    allowed: Collection[str] | None = None,
    required: Collection[str] = (),
    max_bytes: int | None = None,
    check: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Extract `archive` into `into`; its top-level entries appear only when complete.

    `allowed` lists the member names the archive may hold (folders end in "/"): any other is
    refused, as is an archive lacking one of `required`. The sizes the members declare must
    add up to at most `max_bytes` and fit the free disk. `check(folder)` may look at the
    extracted working folder and raise `PipelineError` before anything is moved into `into`.
    An entry already in `into` is never replaced: that is refused too.
    """
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    work = into / f".extract-{archive.stem}"
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted run
    work.mkdir()
    try:
        _unpack(archive, work, allowed, required, max_bytes)
        if check is not None:
            check(work)
        return _place(archive, work, into)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unpack(
    archive: Path,
    work: Path,
    allowed: Collection[str] | None,
    required: Collection[str],
    max_bytes: int | None,
) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_members(archive, members, work.resolve(), allowed, required, max_bytes)
            for info in members:
                target = (work.resolve() / info.filename).resolve()
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # zipfile stops a member at the size its header declares and checks its CRC,
                # so the declared sizes checked above bound what is written.
                with zf.open(info) as source, open(target, "xb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK)
    except (zipfile.BadZipFile, EOFError):
        raise PipelineError(
            f"{archive} is not a valid zip (incomplete download? delete it and rerun)"
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
        raise PipelineError(f"cannot extract {archive}: {exc}") from None
    except OSError as exc:
        raise PipelineError(f"cannot extract {archive}: {exc}") from None


def _check_members(
    archive: Path,
    members: list[zipfile.ZipInfo],
    root: Path,
    allowed: Collection[str] | None,
    required: Collection[str],
    max_bytes: int | None,
) -> None:
    names = [info.filename for info in members]
    for name in names:
        target = (root / name).resolve()
        if target == root or not target.is_relative_to(root):
            raise PipelineError(f"{archive} holds an unsafe path {name!r}; not extracting")
    if len(set(names)) != len(names):
        raise PipelineError(f"{archive} holds a member name twice; not extracting")
    unexpected = sorted(set(names) - set(allowed)) if allowed is not None else []
    if unexpected:
        raise PipelineError(
            f"{archive} holds {unexpected[0]!r}, which does not belong in it (expected only "
            f"{', '.join(sorted(allowed))}); not extracting, delete it"
        )
    missing = sorted(set(required) - set(names))
    if missing:
        raise PipelineError(f"{archive} lacks {missing[0]!r}; not extracting, delete it")
    declared = sum(info.file_size for info in members)
    if max_bytes is not None and declared > max_bytes:
        raise PipelineError(
            f"{archive} would extract to {declared} bytes, more than the {max_bytes} expected; "
            "not extracting, delete it"
        )
    free = shutil.disk_usage(root).free
    if declared > free:
        raise PipelineError(
            f"extracting {archive} needs {_size(declared)} but only {_size(free)} is free there; "
            "free some space and rerun"
        )


def _place(archive: Path, work: Path, into: Path) -> list[Path]:
    """Rename the extracted top-level entries into `into`, none over an existing one."""
    entries = sorted(work.iterdir())
    for entry in entries:
        target = into / entry.name
        if target.exists() or target.is_symlink():
            raise PipelineError(
                f"{target} already exists; not replacing it with the one from {archive} "
                "(move it away and rerun to use the download)"
            )
    for entry in entries:
        os.rename(entry, into / entry.name)
    return [into / entry.name for entry in entries]


def download_and_extract(
    url: str,
    into: Path,
    *,
    name: str | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
    allowed: Collection[str] | None = None,
    required: Collection[str] = (),
    check: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Download the zip at `url` into `into` as `name` (default: the URL's file name), extract
    it as `extract_zip` does, and delete it. A refused archive stays, named in the message."""
    name = name or Path(urlsplit(url).path).name
    if name in ("", ".", ".."):
        raise PipelineError(f"{url} names no file; cannot tell what to save it as")
    archive = download(url, Path(into) / name, progress=progress, max_bytes=max_bytes)
    placed = extract_zip(
        archive, into, allowed=allowed, required=required, max_bytes=max_bytes, check=check
    )
    archive.unlink()
    return placed


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class _bar:
    """A Rich download bar (bytes, speed, ETA), or nothing when progress is off."""

    def __init__(self, enabled: bool, name: str, total: int | None, done: int):
        self.enabled, self.name, self.total, self.done = enabled, name, total, done

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            "{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.__enter__()
        task = self._progress.add_task(
            f"download {self.name}", total=self.total, completed=self.done
        )
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.__exit__(*exc)
