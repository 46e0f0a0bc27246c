"""Resumable downloads (HTTP Range) with a progress bar, and zip extraction.

A download goes to `<file>.part`; a rerun asks the server for the remaining bytes
(`Range: bytes=N-`) and appends. A server that ignores the range (200 instead of 206) makes us
start over rather than append garbage. Only a complete download is renamed to its final name,
and an archive is extracted into a working folder renamed into place, so a later step never
reads half a file.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pipeline.errors import PipelineError

CHUNK = 1 << 20


class Unreachable(PipelineError):
    """The server could not be reached at all (offline, DNS, refused): callers may fall back."""


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60) -> Path:
    """Fetch `url` to `dest`, resuming a `.part` file left by an interrupted run."""
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
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if have else "wb") as sink,
            _bar(progress, dest.name, total, have) as bar,
        ):
            while block := response.read(CHUNK):
                sink.write(block)
                bar(len(block))
    if total is not None and part.stat().st_size != total:
        raise PipelineError(
            f"download of {url} stopped at {part.stat().st_size} of {total} bytes; rerun to resume"
        )
    os.replace(part, dest)
    return dest


def extract_zip(archive: Path, into: Path) -> list[Path]:
    """Extract `archive` into `into`; its top-level entries appear only when complete."""
    into = Path(into)
    work = into / f".extract-{archive.stem}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (work / member).resolve()
                if not str(target).startswith(str(work.resolve())):
                    raise PipelineError(
                        f"{archive} holds an unsafe path {member!r}; not extracting"
                    )
            zf.extractall(work)
    except zipfile.BadZipFile:
        raise PipelineError(
            f"{archive} is not a valid zip (incomplete download? delete it and rerun)"
        ) from None
    placed = []
    for entry in sorted(work.iterdir()):
        target = into / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(entry, target)
        placed.append(target)
    work.rmdir()
    return placed


def download_and_extract(url: str, into: Path, *, progress: bool = True) -> list[Path]:
    archive = download(url, Path(into) / url.rsplit("/", 1)[-1], progress=progress)
    placed = extract_zip(archive, Path(into))
    archive.unlink()
    return placed


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
