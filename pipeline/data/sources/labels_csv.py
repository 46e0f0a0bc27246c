"""Reading a labels CSV for `pipeline ingest images` (the rules are in `images.py`'s docstring).

The file is read whole as UTF-8 and parsed strictly: a quote that does not close, text after
a closing quote, or a quoted cell that spans lines is an error naming the file and the line
the row starts on, never a class made of the rest of the file.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.sources.annotations import read_text
from pipeline.errors import PipelineError

# A header row's first cell is made of these words only (`id`, `file`, `image_name`, `Img ID`);
# anything else in the first row's first cell (`0`, `img_001`, `cat.jpg`) is an image id.
ID_HEADER_WORDS = frozenset(
    {"id", "file", "filename", "fname", "image", "img", "name", "path", "key", "stem"}
)


@dataclass
class LabelTable:
    """A parsed labels CSV: per row its line, its id and one value (or None) per group."""

    path: Path
    sha256: str
    groups: list[str]
    columns: list[str]
    headers: list[str] | None
    rows: list[tuple[int, str, list[str | None]]]


def read_labels_csv(path: Path) -> LabelTable:
    """Parse a labels CSV by the rules in `images.py`'s docstring (errors name file and line)."""
    text, sha256 = read_text(
        path,
        "labels file {path} is not UTF-8 text (byte {byte}); save it as UTF-8 CSV",
        encoding="utf-8-sig",
    )

    def bad(line: int, why: str) -> PipelineError:
        return PipelineError(f"labels file {path} line {line}: {why}; fix or remove that row")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1  # the line the next row starts on
    try:
        for row in reader:
            if any("\n" in c or "\r" in c for c in row):
                raise bad(start, "a quoted cell runs over several lines (a quote not closed?)")
            cells = [c.strip() for c in row]
            while cells and not cells[-1]:
                cells.pop()  # trailing commas
            if cells:
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise bad(start, f"not valid CSV ({exc}: check its quotes)") from None
    if not records:
        raise PipelineError(f"labels file {path} holds no rows; pass a CSV such as `id,label`")

    if all(len(cells) == 1 for _, cells in records):
        raise PipelineError(
            f"labels file {path} has no label column (first line: "
            f"{records[0][1][0][:60]!r}); it must be comma-separated: id,label"
        )
    first_line, first = records[0]
    headers = None
    if set(re.split(r"[\s_-]+", first[0].lower())) <= ID_HEADER_WORDS:
        headers = first[1:]
        if not headers or any(not h for h in headers):
            raise bad(
                first_line,
                "a header row needs a name for every column after the id (e.g. id,hair,eyes)",
            )
        records = records[1:]
        if len(headers) == 1:
            groups, columns = ["label"], ["label"]
        else:
            groups = list(headers)
            columns = [f"label_{_slug(h)}" for h in headers]
        width = len(headers)
        pairs = False
    else:
        width = 1
        words = first[1].split() if len(first) > 1 else []
        pairs = len(words) >= 4 and len(words) % 2 == 0
        if pairs:
            groups = words[1::2]
            columns = [f"label_{_slug(g)}" for g in groups]
        else:
            groups, columns = ["label"], ["label"]
    for what in (groups, columns):
        repeated = sorted({g for g in what if what.count(g) > 1})
        if repeated:
            raise bad(first_line, f"group {repeated[0]!r} appears twice")
    if any(c == "label_" for c in columns):
        raise bad(first_line, "a group name needs a letter or a digit")

    form = " ".join(f"<value> {g}" for g in groups)
    rows: list[tuple[int, str, list[str | None]]] = []
    for line, cells in records:
        if len(cells) > width + 1:
            expected = "id," + ",".join(headers) if headers else "id,tags"
            raise bad(line, f"{len(cells)} columns, expected {width + 1} ({expected})")
        if not cells[0]:
            raise bad(line, "the id is empty")
        values = [c or None for c in cells[1:]] + [None] * (width + 1 - len(cells))
        if pairs and values[0] is not None:
            words = values[0].split()
            if len(words) != 2 * len(groups) or words[1::2] != groups:
                raise bad(
                    line, f"tags {values[0]!r} are not in the form {form!r} of line {first_line}"
                )
            values = list(words[0::2])
        elif pairs:
            values = [None] * len(groups)
        rows.append((line, cells[0], values))
    return LabelTable(
        path=path,
        sha256=sha256,
        groups=groups,
        columns=columns,
        headers=headers,
        rows=rows,
    )


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
