"""Option declarations shared by several commands."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (stable keys).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")]
ReportsOpt = Annotated[
    Path | None,
    typer.Option("--reports", help="JSON-lines side file of reports: {subject, session, report}."),
]
WindowOpt = Annotated[float, typer.Option("--window", help="Window length in seconds (ELM: 5 or 60).")]
DemoDirOpt = Annotated[Path, typer.Option("--dir", help="Where the demo archive and its outputs go.")]
ModelDirOpt = Annotated[
    Path | None, typer.Option("--model", help="MODEL_DIR from `elmsearch train`, or the ELM release folder.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1...")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DbOpt = Annotated[Path, typer.Option("--db", help="Index folder (FAISS files, manifest, SQLite).")]
DbUrlOpt = Annotated[
    str | None, typer.Option("--db-url", help="SQLAlchemy URL for the metadata (default: SQLite in --db).")
]
KOpt = Annotated[int, typer.Option("-k", min=1, help="Number of hits.")]
SexOpt = Annotated[str | None, typer.Option("--sex", help="F or M.")]
AgeMinOpt = Annotated[float | None, typer.Option("--age-min", help="Youngest age (years).")]
AgeMaxOpt = Annotated[float | None, typer.Option("--age-max", help="Oldest age (years).")]
AfterOpt = Annotated[dt.datetime | None, typer.Option("--after", formats=["%Y-%m-%d"], help="Recorded on/after.")]
BeforeOpt = Annotated[dt.datetime | None, typer.Option("--before", formats=["%Y-%m-%d"], help="Recorded before.")]
MontageOpt = Annotated[str | None, typer.Option("--montage", help="Montage folder, e.g. 01_tcp_ar.")]
MinDurationOpt = Annotated[float | None, typer.Option("--min-duration", help="Shortest recording (s).")]
RecordingIdOpt = Annotated[int | None, typer.Option("--recording", help="An indexed recording id instead of a file.")]
