"""The record of a run on this node's disk first, MLflow second (W&B's model: a local file, a
sender, `wandb sync`). Nothing a run logs is lost when the tracking server is away.

Every event a `Tracker` would send (metric points with their own timestamps, params, tags,
artifacts, images, the final status) is appended as one JSON line to the run's journal:

    <journals>/<run_id>/<started>-<pid>.jsonl     one file per process that logs to the run
    <journals>/<run_id>/<started>-<pid>.sent      bytes of it MLflow has acknowledged
    <journals>/<run_id>/files/                    the artifacts' bytes until delivered

`<journals>` is `$PIPELINE_RUNS/journals` where PIPELINE_RUNS names a local folder, else
`$PIPELINE_CACHE/journals` (a bucket cannot be appended to; without PIPELINE_RUNS a Ray
worker's `./runs` would be its own working folder): on the node that logged.

Delivery (`deliver`) sends what follows the acknowledged offset, in order, and moves the
offset after each acknowledged event, under a lock on the file (the run's own sender, the
driver finishing the run and `pipeline sync` never send one event twice). A point resent
after a crash between MLflow's answer and the offset's update is the same point (same key,
value, step and timestamp: MLflow keeps one); params resent with their value are accepted,
tags and artifacts overwrite, and an image-series entry gets a name fixed by its event
(`delivery._log_series_image`), so a resend overwrites it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

FORMAT = "pipeline-journal/1"
SUFFIX = ".jsonl"


def journals_root() -> Path:
    """Where this node keeps journals: PIPELINE_RUNS when it is a local folder, else the
    node-local cache (the same for every process of the user)."""
    from pipeline import settings, storage

    if not os.environ.get("PIPELINE_RUNS") or storage.is_uri(settings.runs_root()):
        return storage.cache_dir() / "journals"
    return Path(settings.runs_root()) / "journals"


@dataclass(frozen=True)
class Event:
    """One journalled event: `kind` and its fields, ending at byte `end` of its file."""

    kind: str
    fields: dict[str, Any]
    end: int


class Journal:
    """The journal file this process appends to for one run (made on the first event)."""

    def __init__(self, handle, root: Path | None = None):
        self.handle = handle
        self.folder = (root or journals_root()) / handle.run_id
        self.path = self.folder / f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
        self._seq = 0

    def append(self, kind: str, **fields: Any) -> None:
        """One event, on disk (the OS's cache: a killed process loses nothing it appended)."""
        if self._seq == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            header = {"kind": "header", "format": FORMAT, **self.handle.to_dict()}
            self._write(header)
        self._seq += 1
        self._write({"kind": kind, "seq": self._seq, **fields})

    def keep(self, source, name: str | None = None) -> str:
        """A copy of `source` (a file, a folder or a PIL image, saved as `name`) until it is
        delivered: its path in the journal's folder (the run may overwrite the original before
        the server is back)."""
        name = name or ("image.png" if hasattr(source, "save") else source.name)
        kept = Path("files") / f"{self.path.stem}-{self._seq + 1:06d}" / name
        target = self.folder / kept
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(source, "save"):
            source.save(target)  # in the format its name says, as MLflow's log_image would
        elif source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return kept.as_posix()

    def _write(self, event: dict) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, line)  # one write: a reader never sees half a line as whole
        finally:
            os.close(descriptor)


def sent_path(journal: Path) -> Path:
    return journal.with_suffix(".sent")


def sent_offset(journal: Path) -> int:
    try:
        return int(sent_path(journal).read_text() or 0)
    except FileNotFoundError:
        return 0


def mark_sent(journal: Path, offset: int) -> None:
    draft = sent_path(journal).with_suffix(".sent.new")
    draft.write_text(str(offset))
    os.replace(draft, sent_path(journal))


def header(journal: Path) -> dict[str, Any]:
    """The journal's run (uri, run_id, experiment_id, name); refused when it is no journal."""
    try:
        with open(journal, "rb") as file:
            first = json.loads(file.readline(1 << 16))
    except (OSError, ValueError) as error:
        raise PipelineError(f"{journal} is not a pipeline journal ({error})") from None
    if not isinstance(first, dict) or first.get("format") != FORMAT:
        raise PipelineError(f"{journal} is not a pipeline journal (no {FORMAT} header)")
    if not all(isinstance(first.get(k), str) for k in ("uri", "run_id", "experiment_id")):
        raise PipelineError(f"{journal} is not a pipeline journal (its header names no run)")
    return first


def pending(journal: Path) -> Iterator[Event]:
    """The events after the acknowledged offset, in order; a last line without its newline
    (the process killed while writing it) is not an event yet."""
    with open(journal, "rb") as file:
        file.seek(sent_offset(journal))
        end = file.tell()
        for line in file:
            if not line.endswith(b"\n"):
                return
            try:
                event = json.loads(line)
            except ValueError:
                raise PipelineError(f"{journal}: no JSON event at byte {end} (damaged?)") from None
            end += len(line)
            if event.get("kind") != "header":
                kind = event.pop("kind")
                yield Event(kind, event, end)


def undelivered(journal: Path) -> bool:
    try:
        return journal.stat().st_size > sent_offset(journal)
    except FileNotFoundError:  # removed with its folder: nothing left to deliver from it
        return False


NAME = re.compile(r"(\d+)-\d+")  # <started ns>-<pid>, as `Journal` names its file


def run_journals(folder: Path) -> list[Path]:
    """A run's journal files, oldest first (other files in the folder are not journals)."""
    files = [p for p in folder.glob(f"*{SUFFIX}") if NAME.fullmatch(p.stem)]
    return sorted(files, key=lambda p: int(NAME.fullmatch(p.stem).group(1)))


def all_undelivered(root: Path | None = None) -> list[Path]:
    """Every run folder under `root` (default: this node's) whose journals are not delivered."""
    root = root or journals_root()
    if not root.is_dir():
        return []
    return sorted(f for f in root.iterdir() if any(map(undelivered, run_journals(f))))


@contextlib.contextmanager
def locked(journal: Path) -> Iterator[None]:
    """One sender at a time per journal file, across the processes of this node."""
    with open(journal.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def forget_files(journal: Path, event: Event) -> None:
    """An artifact's kept copy, once delivered (or superseded)."""
    kept = event.fields.get("file")
    if kept:
        path = journal.parent / kept
        shutil.rmtree(path.parent, ignore_errors=True)
