"""Option declarations shared by several commands, and the checks that make bad values usage errors."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from indexer.filters import FILTERS, SOURCES, FilterError, FilterField


class Precision(StrEnum):
    """EEG encoder precision for indexing."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Backend(StrEnum):
    """EEG encoder inference engine (``elmsearch.models.backends``)."""

    auto = "auto"
    torch = "torch"
    openvino = "openvino"
    onnxruntime = "onnxruntime"


class Runner(StrEnum):
    """Where ``elmsearch index`` reads and embeds: this machine, or a Ray cluster."""

    local = "local"
    ray = "ray"


Source = StrEnum("Source", [(s, s) for s in SOURCES])  # what ranks a text search, from indexer.hybrid's table
Source.__doc__ = "What ranks a text search (``indexer.hybrid.SOURCES``)."


class OutFormat(StrEnum):
    """How a query command prints its hits."""

    text = "text"
    tsv = "tsv"
    json = "json"


class Level(StrEnum):
    """What a text search ranks."""

    recording = "recording"
    window = "window"


class Recipe(StrEnum):
    """``elmsearch train --recipe`` (``elmsearch.train.trainer.RECIPES``, or ``auto``)."""

    auto = "auto"
    heads = "heads"
    finetune = "finetune"
    full = "full"


class TextPooling(StrEnum):
    """Pooling of the text encoder's token states."""

    mean = "mean"
    cls = "cls"


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def check_device(value: str) -> str:
    """``--device``: auto, cpu, mps, cuda or cuda:N (a usage error otherwise)."""
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N.")
    return value


def check_positive(value: float) -> float:
    """A length that must be above zero."""
    if not value > 0:
        raise typer.BadParameter(f"{value:g} is not above 0.")
    return value


def check_fractions(value: str) -> str:
    """``--fractions``: comma-separated numbers in (0, 1]."""
    try:
        numbers = [float(f) for f in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.01,0.1,1.") from None
    if not all(0 < f <= 1 for f in numbers):
        raise typer.BadParameter(f"{value!r}: every fraction must be in (0, 1].")
    return value


def check_prompts(value: list[str]) -> list[str]:
    """``--prompt``: zero-shot needs at least two classes."""
    if len(value) < 2:
        raise typer.BadParameter("give at least two (one per class), e.g. -p 'normal EEG' -p 'abnormal EEG'.")
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (stable keys).")]
FormatOpt = Annotated[OutFormat, typer.Option("--format", help=(
    "text: a block per hit, wrapped to the terminal (plain lines in a pipe); tsv: a line per hit; json: as --json."))]
PathsOpt = Annotated[bool, typer.Option("--paths", help="Show each hit's full file path.")]
BackendOpt = Annotated[Backend, typer.Option(
    "--backend", help="EEG encoder engine: auto (the fastest that matches torch fp32 on this machine, "
    "measured once), torch, openvino or onnxruntime (torch when missing or not matching).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")]


def check_jobs(value: str) -> str:
    """``-j``: ``auto`` or a whole number >= 0."""
    if value == "auto" or (value.isdigit() and int(value) >= 0):
        return value
    raise typer.BadParameter(f"{value!r} is not 'auto' or a whole number >= 0")
ReportsOpt = Annotated[
    Path | None,
    typer.Option("--reports", exists=True, dir_okay=False,
                 help="JSON-lines side file of reports: {subject, session, report}."),
]
WindowOpt = Annotated[float, typer.Option("--window", callback=check_positive,
                                          help="Window length in seconds (ELM: 5 or 60).")]
DemoDirOpt = Annotated[Path, typer.Option("--dir", help="Where the demo archive and its outputs go.")]
ModelDirOpt = Annotated[
    Path | None, typer.Option("--model", exists=True,
                              help="MODEL_DIR from `elmsearch train`, or the ELM release folder.")
]
DeviceOpt = Annotated[str, typer.Option("--device", callback=check_device,
                                        help="auto (CUDA when present), cpu, cuda, cuda:1...")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DbOpt = Annotated[Path, typer.Option("--db", help="Index folder (FAISS files, manifest, SQLite).")]
DbUrlOpt = Annotated[
    str | None, typer.Option("--db-url", help="SQLAlchemy URL for the metadata (default: SQLite in --db).")
]
KOpt = Annotated[int, typer.Option("-k", min=1, help="Number of hits.")]
WindowStoreOpt = Annotated[Path | None, typer.Option("--window-store", help=(
    "Keep every recording's preprocessed windows in this folder (float16, by file content and preprocessing) "
    "and read them from it: index --reembed, train and eval then read no EDF twice."), show_default=False)]
WindowStoreGbOpt = Annotated[float | None, typer.Option("--window-store-gb", min=0.001, help=(
    "Size limit of --window-store in GiB (default 200, or what the index recorded)."), show_default=False)]
RecordingIdOpt = Annotated[int | None, typer.Option("--recording", help="An indexed recording id instead of a file.")]


def _checked(field: FilterField):
    """A Typer callback running ``field.normalise``: a bad value is a usage error (exit 2)."""
    def callback(value):
        try:
            return field.normalise(value)
        except FilterError as err:
            raise typer.BadParameter(str(err)) from None

    return callback


def filter_option(field: FilterField):
    """The Typer option of one filter of ``indexer.filters.FILTERS``."""
    if field.kind is dt.date:
        return Annotated[dt.datetime | None, typer.Option(field.option, formats=["%Y-%m-%d"], help=field.help)]
    extra = {"min": field.ge} if field.ge is not None else {}
    if field.normalise is not None:
        extra["callback"] = _checked(field)
    return Annotated[field.kind | None, typer.Option(field.option, help=field.help, **extra)]


def with_filters(command):
    """Give a Typer command the options of every filter, passed to it as one ``filters`` dict.

    The command declares ``filters: dict`` where the options go; it hands the dict to
    ``indexer.filters.parse_filters``, as the HTTP API does with its query parameters.
    """
    sig = inspect.signature(command, eval_str=True)
    params = []
    for p in sig.parameters.values():
        if p.name == "filters":
            params += [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                         annotation=filter_option(f)) for f in FILTERS]
        else:
            params.append(p)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        filters = {f.name: kwargs.pop(f.name, None) for f in FILTERS}
        return command(*args, filters=filters, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
