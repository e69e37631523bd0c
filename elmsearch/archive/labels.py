"""Label files: CSV with a recording path or key columns and one or more label columns."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from elmsearch.errors import InputFileError

KEY_COLUMNS = ("subject", "session", "montage", "token")
_TRUE = {"1", "true", "yes", "abnormal", "y", "t"}
_FALSE = {"0", "false", "no", "normal", "n", "f"}


def parse_binary(value: str) -> int | None:
    """``"1"/"true"/"yes"/"abnormal"`` -> 1, ``"0"/"false"/"no"/"normal"`` -> 0, empty -> None."""
    v = (value or "").strip().lower()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    if v == "":
        return None
    try:
        return int(float(v) != 0)
    except ValueError:
        return None


def read_labels(fname: str | os.PathLike, column: str, root: str | os.PathLike | None = None
                ) -> dict[str, int]:
    """Read one binary label column.

    Rows are keyed by ``path`` (resolved against ``root`` when relative) when the
    file has that column, else by ``subject/session/montage/token`` (missing key
    columns count as empty) — the key format ``ArchiveEntry.key`` joined by ``/``.

    Returns
    -------
    dict
        Key -> 0/1, rows with an empty or unreadable label left out.
    """
    fname = Path(fname)
    try:
        with fname.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise InputFileError(fname, f"cannot read ({err.strerror or err})") from None
    if not rows:
        raise InputFileError(fname, "no rows")
    if column not in rows[0]:
        raise InputFileError(fname, f"no column {column!r} (columns: {', '.join(rows[0])})")
    out = {}
    for row in rows:
        y = parse_binary(row[column])
        if y is None:
            continue
        out[label_key(row, root)] = y
    return out


def label_key(row: dict, root: str | os.PathLike | None = None) -> str:
    """The key a label row refers to (see ``read_labels``)."""
    if row.get("path"):
        p = Path(row["path"])
        if not p.is_absolute() and root is not None:
            p = Path(root) / p
        return os.path.abspath(p)  # the recording's identity, symlinks kept (elmsearch.archive.discovery.archive_path)
    return "/".join((row.get(c) or "") for c in KEY_COLUMNS)
