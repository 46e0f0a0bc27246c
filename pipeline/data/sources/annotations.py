"""Reading the text files that come with image datasets: annotation tables and label CSVs.

`read_text` is how every such file is opened (bytes hashed for the fingerprint, then decoded,
a file that is not text being an error that says what to do). `parse_annotation` reads the
whitespace tables of releases such as CelebA's (`<file name> <values...>` per row, optionally
after a row count and a line of column names), checked row by row and never trusted blindly:
a row out of form is an error naming the file and line, and a file cut short by a partial
download is noticed and reported with numbers rather than read as if it were whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


def read_text(path: Path, not_text: str, encoding: str = "utf-8") -> tuple[str, str]:
    """The text of `path` and the sha256 of its bytes.

    `not_text` is the error message when the bytes do not decode, formatted with `path` and
    `byte` (the offset of the first bad byte).
    """
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise PipelineError(not_text.format(path=path, byte=exc.start)) from None
    return text, hashlib.sha256(data).hexdigest()


@dataclass
class Annotation:
    """One parsed annotation file: a value per image file name, and how complete it is.

    `declared` is the row count line 1 states (files with a header), `cut` the line number
    of an unterminated last line that was dropped because it may be cut mid-row.
    """

    path: Path
    rows: dict[str, Any]
    names: list[str] | None = None
    declared: int | None = None
    cut: int | None = None
    last_key: str | None = None
    sha256: str = ""

    @property
    def truncated(self) -> bool:
        return self.declared is not None and len(self.rows) < self.declared

    def cut_note(self) -> str:
        """A note for the user when the last line was dropped as possibly cut; else ""."""
        if self.cut is None:
            return ""
        return (
            f" ({self.path.name} ends without a line break and its last line, line {self.cut}, "
            "may be cut short: it was ignored; is the file truncated?)"
        )


def parse_annotation(
    path: Path,
    row: Callable[[list[str]], Any],
    *,
    remedy: str,
    header: int | None = None,
    exact_last_row: bool = True,
) -> Annotation:
    """Parse an annotation file: rows `<file name> <values...>`, split on whitespace.

    `row` turns a row's values into the value kept (a `ValueError` says why a row is bad);
    `remedy` ends every error about the file (e.g. "re-download it from URL").
    `header`: the file opens with a row count (line 1) and `header` column names (line 2).
    `exact_last_row`: a last row without a line break can be trusted when it parses, because
    no cut can turn its values into other valid ones (-1/1, 0/1/2). Multi-digit numbers can be
    cut into other numbers ("5570" -> "55"), so files of those drop such a row, with a note.
    A last line without a line break that does not parse is a cut row when the file is short
    of its declared count (or declares none); anywhere else a bad row is an error.
    """

    def malformed(line: int, reason: str) -> PipelineError:
        return PipelineError(f"{path}, line {line}: {reason}; the file is malformed ({remedy})")

    text, sha256 = read_text(
        path, "{path} is not a text annotation file (byte {byte} is not UTF-8); re-download it"
    )
    lines = text.splitlines()  # CRLF and LF alike
    terminated = text.rstrip(" \t").endswith(("\n", "\r"))  # does the last row end?
    table = Annotation(path=path, rows={}, sha256=sha256)
    first = 0
    if header is not None:
        if len(lines) < 2:
            raise malformed(
                len(lines) + 1,
                "the file ends before its two header lines (row count, column names)",
            )
        count = lines[0].strip()
        if not count.isdigit():
            raise malformed(1, f"{count[:30]!r} is not the row count")
        table.declared = int(count)
        table.names = lines[1].split()
        if len(table.names) != header:
            raise malformed(2, f"the header has {len(table.names)} column names, expected {header}")
        first = 2
    last = len(lines) - 1
    while last >= first and not lines[last].strip():
        last -= 1
    rows = table.rows
    for i in range(first, last + 1):
        parts = lines[i].split()
        if not parts:
            continue
        unterminated = i == last and not terminated
        try:
            value = row(parts[1:])
        except ValueError as exc:
            short = table.declared is None or len(rows) < table.declared
            if unterminated and short:
                table.cut = i + 1
                break
            raise malformed(i + 1, str(exc)) from None
        if unterminated and not exact_last_row:
            table.cut = i + 1
            break
        key = parts[0]
        if key in rows:
            raise malformed(i + 1, f"{key} is listed twice")
        rows[key] = value
        table.last_key = key
    if table.declared is not None and len(rows) > table.declared:
        raise malformed(1, f"it declares {table.declared} rows but holds {len(rows)}")
    return table
