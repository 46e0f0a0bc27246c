"""What datasets exist and what they hold: the data behind `pipeline datasets list|show`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import shards
from pipeline.data.output import read_own_json
from pipeline.errors import PipelineError

# CelebA attributes worth a caption: the ones a glance at a face can check.
CAPTION_ATTRS = ("Male", "Smiling", "Young", "Eyeglasses", "Blond_Hair", "Black_Hair", "Bald")


@dataclass
class Entry:
    name: str
    source: str
    image: str
    splits: str
    labels: str
    mib: str
    status: str


def scan(root: Path) -> list[Entry]:
    """Every dataset folder directly under `root`, finished or interrupted."""
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / shards.MANIFEST).is_file():
            try:
                manifest = shards.read_manifest(folder)
            except PipelineError as exc:
                entries.append(Entry(folder.name, "?", "", "", "", "", f"unreadable: {exc}"))
                continue
            image = manifest["image"]
            entries.append(
                Entry(
                    name=folder.name,
                    source=manifest["source"]["kind"],
                    image=f"{image['width']}x{image['height']}x{image['channels']} "
                    f"{image['encoding']}",
                    splits=" ".join(f"{s}:{v['rows']:,}" for s, v in manifest["splits"].items()),
                    labels=_labels_text(manifest),
                    mib=f"{manifest['bytes'] / 2**20:,.1f}",
                    status="ok"
                    + (
                        f", {manifest['skipped']['total']} skipped"
                        if manifest["skipped"]["total"]
                        else ""
                    ),
                )
            )
        elif (folder / ".ingest.json").is_file():
            state = read_own_json(folder / ".ingest.json")
            entries.append(
                Entry(
                    folder.name,
                    str(state.get("source", "?")),
                    "",
                    "",
                    "",
                    "",
                    "incomplete: rerun its ingest to finish",
                )
            )
    return entries


def describe(root: Path) -> list[str]:
    """A few lines summing up a dataset's manifest."""
    m = shards.read_manifest(root)
    image = m["image"]
    lines = [
        f"[bold]{m['name']}[/bold]  {root}",
        f"source: {m['source']['kind']}  fingerprint {m['fingerprint'][:16]}",
        f"image: {image['width']}x{image['height']}x{image['channels']} {image['mode']} "
        f"{image['encoding']}; recipe: " + ", ".join(f"{k}={v}" for k, v in m["recipe"].items()),
        "splits: "
        + ", ".join(
            f"{s} {v['rows']:,} rows in {len(v['shards'])} shard(s)" for s, v in m["splits"].items()
        ),
    ]
    for group in (m.get("labels") or {}).get("groups", []):
        classes = group["classes"]
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        lines.append(f"labels {group['name']} ({group['column']}): {len(classes)} classes: {shown}")
    if m.get("attributes"):
        lines.append(
            f"attributes ({m['attributes']['column']}): {len(m['attributes']['names'])} names"
        )
    if m["skipped"]["total"]:
        lines.append(
            f"skipped: {m['skipped']['total']} "
            + ", ".join(f"{n} {r}" for r, n in m["skipped"]["reasons"].items())
        )
    lines += [f"[yellow]note: {note}[/yellow]" for note in m.get("notes", [])]
    return lines


def sample_grid(root: Path, out: Path, n: int = 64, split: str = "train", seed: int = 0) -> Path:
    """Write a PNG grid of `n` random samples of `split`, each captioned with its labels."""
    from pipeline.data.reader import ShardDataset
    from pipeline.grid import make_grid

    if n < 1:
        raise PipelineError(f"--n {n} must be at least 1")
    if out.suffix.lower() != ".png":
        raise PipelineError(f"--grid {out} must be a .png file")
    data = ShardDataset(root, split)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    batch = data.take(rows)
    texts = captions(data.manifest, batch)
    scale = max(1, 96 // data.shape[1]) if texts else 1
    image = make_grid(batch["image"], nrow=8, scale=scale, captions=texts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(out)
    return out


def captions(manifest: dict, batch: dict[str, np.ndarray]) -> list[str] | None:
    """One caption per row: its class in each label group, or its salient CelebA attributes.

    None for a dataset with neither labels nor attributes.
    """
    from pipeline.data.reader import MISSING

    groups = (manifest.get("labels") or {}).get("groups", [])
    attrs = manifest.get("attributes")
    if not groups and not attrs:
        return None
    texts = []
    for i in range(len(batch["image"])):
        parts = []
        for group in groups:
            value = int(batch[group["column"]][i])
            text = "?" if value == MISSING else group["classes"][value]
            parts.append(text if len(groups) == 1 else f"{text} {group['name']}")
        if attrs:
            values = batch[attrs["column"]][i]
            if (values == MISSING).all():
                parts.append("no attrs")
            else:
                names = attrs["names"]
                on = [a for a in CAPTION_ATTRS if a in names and values[names.index(a)] == 1]
                parts.append(" ".join(a.replace("_", " ") for a in on) or "-")
        texts.append("\n".join(parts))
    return texts


def _labels_text(manifest: dict) -> str:
    parts = [
        f"{g['name']}({len(g['classes'])})"
        for g in (manifest.get("labels") or {}).get("groups", [])
    ]
    if manifest.get("attributes"):
        parts.append(f"attrs({len(manifest['attributes']['names'])})")
    return " ".join(parts) or "-"
