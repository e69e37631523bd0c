"""Typer application: each command parses options, calls the libraries, prints."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import (
    Backend,
    BackendOpt,
    DbOpt,
    DbUrlOpt,
    DemoDirOpt,
    DeviceOpt,
    FormatOpt,
    JsonOpt,
    KOpt,
    Level,
    ModelDirOpt,
    OutFormat,
    PathsOpt,
    Precision,
    Recipe,
    RecordingIdOpt,
    ReportsOpt,
    Runner,
    SeedOpt,
    Source,
    TextPooling,
    WindowOpt,
    WindowStoreGbOpt,
    WindowStoreOpt,
    WorkersOpt,
    check_fractions,
    check_jobs,
    check_prompts,
    with_filters,
)
from indexer.filters import parse_filters

if TYPE_CHECKING:
    from rich.progress import Progress

PROG = "elmsearch"
# Errors are ours to print (see `main`): no Rich panels, no pretty tracebacks.
app = typer.Typer(help="elmsearch: search clinical EEG archives by report text and by EEG.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
# soft_wrap: Rich never breaks a text line (the terminal wraps it; a file or pipe gets it whole)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
_debug = {"traceback": False}  # set by --verbose: unexpected errors print their traceback


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _debug["traceback"] = verbose
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs read by programs: one line per message
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=level, force=True, handlers=[handler])
    for noisy in ("mne", "matplotlib", "urllib3", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    _error_line(message)
    return typer.Exit(code=1)


def _printable(text: str) -> str:
    r"""``text`` with the undecodable bytes of a file name (lone surrogates) shown as ``\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _error_line(message: str) -> None:
    """Print ``error: MESSAGE`` as one line on stderr."""
    message = _printable(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _progress(title: str, fields: str, time_left: bool = True) -> Progress:
    """A progress bar: bold ``title``, the bar, done/total, ``fields`` (a task-field template), time left.

    Hidden when stderr is not a terminal or the log level is above INFO. Rich's progress module
    is imported here, not by the commands that draw no bar.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TextColumn(fields)]
    return Progress(*columns, *([TimeRemainingColumn()] if time_left else []), console=console,
                    disable=not console.is_terminal or logging.getLogger().level > logging.INFO)


def _run_scan(root: Path, reports: Path | None, window: float, workers: int):
    from elmsearch.archive.discovery import Walk, discover
    from indexer.scan import scan_archive

    walk = Walk()
    entries = discover(root, reports, walk)
    total = len(entries)
    with _progress("scan", "{task.fields[rate]}") as progress:
        task = progress.add_task("scan", total=total, rate="")
        hours = [0.0]

        def tick(item) -> None:
            hours[0] += (item.duration or 0) / 3600
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=1, rate=f"{hours[0] / elapsed * 3600:.0f} h EEG/h")

        return scan_archive(root, reports, window_seconds=window, n_jobs=workers, on_item=tick,
                            entries=entries, walk=walk)


def _print_scan(summary, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
        return
    d = summary.to_dict()
    table = Table(title="scan", show_header=False)
    for k in ("recordings", "failed", "reports", "windows", "hours", "seconds"):
        table.add_row(k, str(d[k]))
    out.print(table)
    if summary.failed:
        fails = Table("path", "reason", title="refused recordings")
        for item in summary.failed:
            fails.add_row(item.path, item.error)
        out.print(fails)
    _print_skipped(summary.skipped)


def _print_skipped(skipped: list[dict]) -> None:
    if skipped:
        table = Table("path", "reason", title="not read (not a recording elmsearch reads)")
        for f in skipped:
            table.add_row(f["path"], f["reason"])
        out.print(table)


FollowOutsideOpt = Annotated[bool, typer.Option(
    "--follow-outside", help="Read links (recordings, folders, reports) that lead out of the archive folder; "
    "without it they are refused with a reason.")]
PatientsOpt = Annotated[Path | None, typer.Option(
    "--patients", help="CSV of path-or-glob,patient (globs relative to the archive folder): who each recording "
    "belongs to, before BIDS, TUH, EDF+ codes and file names.", show_default=False)]


def _warn_empty(archive: Path) -> bool:
    """Print one warning line when the archive holds no recording; returns whether it did."""
    from elmsearch.archive.discovery import find_nothing_message

    message = find_nothing_message(archive)
    if message:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
    return message is not None


@app.command(short_help="What an archive holds, and what is refused and why.")
def scan(
    archive: Annotated[Path, typer.Argument(help="Archive folder or one EDF/BDF file.")],
    reports: ReportsOpt = None,
    window: WindowOpt = 5.0,
    workers: WorkersOpt = 1,
    follow_outside: FollowOutsideOpt = False,
    patients: PatientsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read and preprocess every recording of an archive; list what was refused and why."""
    from elmsearch.archive.discovery import discovery_options
    from elmsearch.errors import InputFileError

    if not archive.exists():
        raise _fail(f"{archive}: no such file or folder")
    try:
        with discovery_options(follow_outside, patients):
            _warn_empty(archive)
            summary = _run_scan(archive, reports, window, workers)
    except InputFileError as err:  # the reports side file or the patients mapping
        raise _fail(str(err)) from None
    _print_scan(summary, as_json)


@app.command(short_help="What elmsearch reads from one recording.")
def inspect(
    fname: Annotated[Path, typer.Argument(help="An EDF/BDF file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what elmsearch reads from one recording (header, key, montage electrodes)."""
    from elmsearch.errors import RecordingError
    from elmsearch.io.events import read_events
    from elmsearch.io.meta import path_info_for
    from elmsearch.io.recording import make_windows
    from elmsearch.io.windowed import read_recording

    try:
        rec = read_recording(fname)
    except RecordingError as err:
        raise _fail(str(err)) from None
    m = rec.meta
    info = path_info_for(fname)
    doc = {
        "path": _printable(str(fname)), "key": [_printable(k) for k in info.key], "layout": info.layout,
        "subject": _printable(m.subject) if m.subject else m.subject,
        "sex": m.sex, "age": m.age, "start": m.start.isoformat() if m.start else None,
        "date_suspect": m.date_suspect, "duration_s": m.duration, "native_sfreq": m.native_sfreq,
        "n_chans_native": m.n_chans_native, "electrodes": m.electrode_labels,
        "windows_5s": len(make_windows(rec, 5.0)),
        "windows_60s": len(make_windows(rec, 60.0)) if rec.duration >= 60 else 0,
    }
    got = read_events(fname, duration=m.duration)
    doc["events"] = [e.to_dict() for e in got.events]
    doc["warnings"] = got.warnings
    if as_json:
        out.print_json(json.dumps(doc))
        return
    table = Table(show_header=False, title=doc["path"])
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in doc.items():
        if k not in {"events", "warnings"}:
            table.add_row(k, _key_text(v) if k == "key" else str(v))
    table.add_row("events", str(len(doc["events"])))
    for w in doc["warnings"]:
        table.add_row("warning", escape(w))
    out.print(table)
    _print_events(doc["events"])


@app.command(short_help="Demo archive → trained model → index → queries.")
def demo(
    directory: DemoDirOpt = Path("elmsearch-demo"),
    n_recordings: Annotated[int, typer.Option("--n-recordings", min=8, help="Recordings.")] = 100,
    seed: Annotated[int, typer.Option(help="Generator and training seed.")] = 0,
    workers: WorkersOpt = 2,
) -> None:
    """Generate a demo archive, train a model on it, index it, run one query of each kind.

    Re-running reuses the archive, the model and the index.
    """
    import time

    from indexer.demo import TEXT_QUERY, demo_archive, demo_model, demo_next_steps, demo_query_recording

    t0 = time.perf_counter()
    console.print(f"[bold]1/4 demo archive[/bold] in {directory / 'archive'} ({n_recordings} recordings, seed {seed})")
    made = demo_archive(directory, n_recordings, seed)
    console.print(f"     {made.n_recordings} recordings, {made.hours:.1f} h of EEG with TUH-style reports; "
                  f"ground truth in {made.labels_path}")
    model_dir, db = directory / "model", directory / "index"
    console.print(f"[bold]2/4 training[/bold] the EEG-language model into {model_dir} (CPU: heads on a frozen trunk)")
    with _progress("epoch {task.fields[epoch]}", "loss {task.fields[loss]:.3f}", time_left=False) as progress:
        task = progress.add_task("train", total=None, epoch=0, loss=float("nan"))
        metrics = demo_model(made, model_dir, seed, on_step=lambda s: progress.update(
            task, completed=s["step"], total=s["steps"], epoch=s["epoch"], loss=s["loss"]))
    after, before = metrics["val"]["text_to_eeg"], metrics["untrained_val"]["text_to_eeg"]
    console.print(f"     held-out patients ({metrics['n_val']} recordings): text→EEG R@10 {after['R@10']:.2f} "
                  f"(untrained {before['R@10']:.2f}), MRR {after['MRR']:.2f} (untrained {before['MRR']:.2f})")
    console.print(f"[bold]3/4 indexing[/bold] into {db}")
    summary = _run_index(made.root, db, model_dir, None, workers, False, None)
    console.print(f"     added {summary.added}, unchanged {summary.skipped - summary.still_refused}, "
                  f"refused {summary.failed + summary.still_refused}; "
                  f"{summary.counts.get('eeg_window', 0)} windows, {summary.counts.get('segment', 0)} report sentences")
    console.print("[bold]4/4 queries[/bold]")
    svc = _open_service(db)
    _print_hits(_query(lambda: svc.search(TEXT_QUERY, k=5)), False,
                f'text → EEG: elmsearch search "{TEXT_QUERY}" --db {db}')
    query = demo_query_recording(made, model_dir)
    rel = query.relative_to(made.root)
    _print_hits(_query(lambda: svc.reports(query, k=3, label=str(rel))), False,
                f"EEG → report: elmsearch reports {rel} --db {db}")
    _print_hits(_query(lambda: svc.similar(query, k=5, label=str(rel))), False,
                f"prior cases (other patients): elmsearch similar {rel} --db {db}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s. Next, try:")
    for line in demo_next_steps(db, query):
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def _load_model_or_fail(model_dir: Path):
    from elmsearch.errors import ElmsearchError
    from elmsearch.models import load_model

    try:
        return load_model(model_dir)
    except (ElmsearchError, OSError, RuntimeError) as err:
        raise _fail(str(err).splitlines()[0]) from None


@app.command(short_help="Train the EEG-language model on an archive's reports.")
def train(
    archive: Annotated[Path, typer.Argument(help="Archive with EDFs and reports.")],
    out: Annotated[Path, typer.Option("--out", help="MODEL_DIR to write (resumed if it holds a checkpoint).")],
    model: Annotated[str, typer.Option("--model-name", help="Registered config: elm-5s or elm-60s.")] = "elm-5s",
    init: Annotated[Path | None, typer.Option("--init", exists=True, help="Start the EEG encoder from these "
                                              "weights (ELM release folder or MODEL_DIR).")] = None,
    recipe: Annotated[Recipe, typer.Option(help="heads: train the heads on a frozen encoder; finetune: heads, "
                                           "then the whole encoder at a low rate; full: everything from the "
                                           "start; auto: chosen by archive size (see docs/model.md).")] = Recipe.auto,
    freeze_eeg: Annotated[bool, typer.Option("--freeze-eeg", help="Train only the heads.")] = False,
    freeze_eeg_epochs: Annotated[int | None, typer.Option(help="Freeze the EEG encoder for the first N "
                                                          "epochs.")] = None,
    spectral: Annotated[bool, typer.Option(help="Give the EEG encoder the spectral view (log band power per "
                                           "channel, posterior dominant frequency).")] = True,
    reports: ReportsOpt = None,
    text_model: Annotated[
        Path | None, typer.Option(exists=True, help="Local Hugging Face folder (default: packaged MiniLM).")
    ] = None,
    text_pooling: Annotated[TextPooling | None, typer.Option(help="mean or cls (e.g. MedCPT: cls).")] = None,
    text_max_length: Annotated[int | None, typer.Option(help="Maximum tokens per segment.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: the recipe's).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Recordings per batch (default: the "
                                                   "recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (default: the recipe's).")] = None,
    max_windows: Annotated[int | None, typer.Option(help="EEG windows sampled per recording "
                                                    "(default: config, ELM 120 / 32).")] = None,
    max_segments: Annotated[int | None, typer.Option(help="Report segments sampled per recording "
                                                     "(default: config, ELM 24 / 8).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Fraction of patients held out for validation.")] = 0.2,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience in epochs (default: the "
                                                 "recipe's).")] = None,
    learn_temperature: Annotated[bool, typer.Option(help="Learn the temperature.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt when present.")] = True,
    window_store: WindowStoreOpt = None,
    window_store_gb: WindowStoreGbOpt = None,
) -> None:
    """Train the EEG-language model contrastively on an archive (ELM's MIL objective)."""
    if not archive.exists():
        raise _fail(f"{archive}: no such file or folder")
    if out.exists() and not out.is_dir():
        raise _fail(f"{out}: not a folder (--out is the MODEL_DIR to write)")
    from elmsearch.errors import ElmsearchError
    from elmsearch.train.trainer import train_archive

    epochs_planned = [0]

    def plan(name, cfg, n_items) -> None:
        epochs_planned[0] = cfg.epochs
        console.print(f"{n_items} recordings with reports; recipe {name}: up to {cfg.epochs} epochs, lr {cfg.lr:g}, "
                      + ("encoder frozen" if cfg.freeze_eeg else f"encoder trained from epoch {cfg.freeze_eeg_epochs}"),
                      highlight=False, soft_wrap=True)

    # steps over the whole run (every planned epoch), so the time left is the run's, not the epoch's
    with _progress("epoch {task.fields[epoch]}/{task.fields[epochs]}",
                   "loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} windows/s") as progress:
        task = progress.add_task("train", total=None, epoch=0, epochs="?", loss=float("nan"), rate=0.0)

        def tick(s: dict) -> None:
            n = max(epochs_planned[0], s["epoch"] + 1)
            progress.update(task, completed=s["epoch"] * s["steps"] + s["step"], total=n * s["steps"],
                            epoch=s["epoch"] + 1, epochs=n, loss=s["loss"], rate=s["windows_per_s"])

        try:
            metrics = train_archive(
                archive, out, model, init, recipe.value, reports=reports, text_model=text_model,
                text_pooling=text_pooling.value if text_pooling else None, text_max_length=text_max_length,
                spectral=spectral, learn_temperature=learn_temperature, seed=seed, device=device, resume=resume,
                window_store=window_store, window_store_gb=window_store_gb or 200.0, on_plan=plan, on_step=tick,
                epochs=epochs, batch_size=batch_size, lr=lr, max_eeg=max_windows,
                max_text=max_segments, val_fraction=val_fraction, patience=patience,
                freeze_eeg=freeze_eeg or None, freeze_eeg_epochs=freeze_eeg_epochs)
        except ElmsearchError as err:
            raise _fail(str(err)) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun: process 0 reports
        return
    val = metrics.get("val") or {}
    t2e = val.get("text_to_eeg", {})
    console.print(f"best epoch {metrics['best_epoch']}: validation text->EEG "
                  + ", ".join(f"{k} {t2e[k]:.3f}" for k in ("R@1", "R@5", "R@10", "MRR") if k in t2e)
                  + f" ({metrics['n_val']} held-out recordings); model in {out}")


@app.command(short_help="Zero-shot: the probability of each prompt.")
def classify(
    fname: Annotated[Path, typer.Argument(help="An EDF/BDF recording.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", callback=check_prompts,
                                              help="A class description; repeat (two or more).")],
    model: ModelDirOpt = None,
    db: Annotated[Path | None, typer.Option("--db", help="Index folder: use the model it was built with "
                                            "(default ./elmsearch-index when no --model).")] = None,
    backend: BackendOpt = Backend.auto,
    windows: Annotated[float | None, typer.Option("--windows", min=0, max=100, help=(
        "The 'minutes' column: how much of the recording a finding must hold in, as a percentile of its "
        "windows (100, the default: one window; 50: half the recording)."))] = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot: each prompt's probability for a recording, pooled and from its minutes.

    Give the background first ("normal EEG"), then the findings. 'recording' is the softmax of
    the pooled recording: read it for what holds throughout (a state, diffuse slowing).
    'minutes' classifies each window and keeps the most convincing ones: read it for
    intermittent findings (spike-and-wave, sharp waves, sleep); the background must hold in
    every window there. 'window' is the window behind each 'minutes' score.
    """
    from elmsearch.errors import ElmsearchError

    if model is None:
        svc = _open_service(db or DEFAULT_DB, backend=backend)
        doc = _query(lambda: svc.classify(prompt, fname=fname, windows=windows))
    else:
        from indexer.service import classify_file

        net = _load_model_or_fail(model)
        try:
            doc = classify_file(net, fname, prompt, backend.value, windows)
        except ElmsearchError as err:
            raise _fail(str(err)) from None
    if as_json:
        out.print_json(json.dumps(doc))
        return
    table = Table("prompt", "recording", "minutes", "window", title=str(fname))
    for s in doc["scores"]:
        a, b = s["window"]
        table.add_row(s["prompt"], f"{s['probability']:.3f}", f"{s['minutes']:.3f}", f"{a:g}–{b:g} s")
    out.print(table)


@app.command(short_help="Linear probe with a label-efficiency curve.")
def probe(
    archive: Annotated[Path, typer.Argument(help="Archive with the labelled recordings.")],
    labels: Annotated[
        Path, typer.Option("--labels", exists=True, dir_okay=False,
                           help="CSV: path or subject,session,montage,token + label columns.")
    ],
    model: Annotated[Path, typer.Option("--model", exists=True,
                                        help="MODEL_DIR from `elmsearch train`, or the ELM release folder.")],
    column: Annotated[str, typer.Option("--column", help="Binary label column.")] = "abnormal",
    fractions: Annotated[str, typer.Option(callback=check_fractions,
                                           help="Label fractions in (0, 1], comma-separated.")] = "0.01,0.1,1",
    seeds: Annotated[int, typer.Option(min=1, help="Splits per point.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Linear probe on frozen embeddings, with a label-efficiency curve (patient-level splits)."""
    from elmsearch.errors import ElmsearchError, InputFileError
    from elmsearch.train.probe import run_probe

    if not archive.exists():
        raise _fail(f"{archive}: no such file or folder")
    net = _load_model_or_fail(model)
    try:
        rows = run_probe(net, archive, labels, column, [float(f) for f in fractions.split(",")],
                         tuple(range(seeds)))
    except (ElmsearchError, InputFileError, ValueError) as err:
        raise _fail(str(err).splitlines()[0]) from None
    if as_json:
        out.print_json(json.dumps({"column": column, "points": rows}))
        return
    table = Table("labels", "n", "balanced accuracy", "AUROC", title=f"linear probe: {column}")
    for r in rows:
        table.add_row(f"{r['fraction']:.0%}", f"{r['n_labels']:.0f}",
                      f"{r['balanced_accuracy']:.3f} ± {r['balanced_accuracy_sd']:.3f}",
                      f"{r['auroc']:.3f} ± {r['auroc_sd']:.3f}")
    out.print(table)


def _run_index(archive: Path, db: Path, model: Path, reports: Path | None, workers: int, prune: bool,
               db_url: str | None, precision: str = "auto", runner: str = "local", ray_address: str | None = None,
               **options):
    if runner == "ray":
        from indexer.ray_runner import index_archive_ray as index_archive

        options["address"] = ray_address
    else:
        from indexer.pipeline import index_archive

    with _progress("index", "{task.fields[rate]}") as progress:
        task = progress.add_task("index", total=None, rate="")
        hours = [0.0, 0]

        def plan(n_todo: int, n_same: int) -> None:
            progress.update(task, total=n_todo)
            if n_same:
                console.print(f"{n_same} recordings unchanged since the last run")

        def tick(_path: str, _outcome: str, h: float) -> None:
            hours[0] += h
            hours[1] += 1
            dt_ = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=1, rate=f"{hours[1] / dt_:.1f} rec/s, {hours[0] / dt_:.2f} h EEG/s")

        summary = index_archive(archive, db, model, reports, n_jobs=workers, prune=prune, db_url=db_url,
                                precision=precision, on_item=tick, on_plan=plan, **options)
    from indexer.calibration import prepare

    prepare(db, db_url)  # the percentiles of the first queries do not wait for it
    return summary


def _print_index(summary) -> None:
    d = summary.to_dict()
    table = Table(title="index run", show_header=False)
    for k in ("added", "updated", "skipped", "failed", "removed"):
        table.add_row(k, str(d[k]))
    if d["still_refused"]:
        table.add_row("of the skipped: still refused", f"{d['still_refused']} (--retry-failed reads them again)")
    table.add_row("hours of EEG embedded", f"{d['hours']:.2f}")
    for k, v in d["timings"].items():
        table.add_row(k.replace("_s", " (s)"), f"{v:.2f}")
    for k, v in d["counts"].items():
        table.add_row(f"vectors: {k}", str(v))
    wall = d["timings"].get("wall_s") or 0
    if wall:
        table.add_row("throughput", f"{d['hours'] / wall:.3f} h EEG/s")
    if d["window_store"]:
        ws = d["window_store"]
        size = f"{ws['bytes'] / 2**20:.1f} MiB" if ws["bytes"] < 2**30 else f"{ws['bytes'] / 2**30:.2f} GiB"
        missed = " (some windows not kept: see the warning)" if ws.get("not_kept") else ""
        table.add_row("window store", f"{ws['folder']}: {ws['read']} read, {ws['written']} written, "
                      f"{size} of {ws['max_gib']:g} GiB{missed}")
    out.print(table)
    if summary.failures:
        from elmsearch.archive.discovery import display_path

        fails = Table("path", "reason", title="refused recordings")
        for f in summary.failures:
            fails.add_row(display_path(f["path"]), f["reason"])
        out.print(fails)
    _print_skipped(summary.skipped_files)


@app.command(short_help="Index an archive (incremental): SQL + FAISS.")
def index(
    archive: Annotated[Path | None, typer.Argument(help="Archive folder (or one EDF/BDF file).",
                                                   show_default=False)] = None,
    db: DbOpt = Path("elmsearch-index"),
    model: ModelDirOpt = None,
    reports: ReportsOpt = None,
    workers: Annotated[str, typer.Option("--workers", "-j", callback=check_jobs, help="Reader processes (each "
                                         "file isolated: a crash or a hang fails that file alone); 0 reads in this "
                                         "process; auto: one per 4 cores, the rest embed.")] = "auto",
    prune: Annotated[bool, typer.Option("--prune", help="Remove recordings whose files are gone.")] = False,
    db_url: DbUrlOpt = None,
    precision: Annotated[Precision, typer.Option(help="EEG encoder precision: auto (bf16 where the CPU has "
                                                 "bf16 units), fp32 or bf16.")] = Precision.auto,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try again files that failed before, "
                                               "even if they did not change.")] = False,
    report_text: Annotated[bool | None, typer.Option("--report-text/--no-report-text", help="Store report text "
                           "(--no-report-text: embeddings, sections and offsets only; the choice sticks to the "
                           "index).", show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds one file may take to read and "
                                           "preprocess before its worker is stopped.")] = 1800.0,
    backend: BackendOpt = Backend.auto,
    runner: Annotated[Runner, typer.Option("--runner", help="local: this machine; ray: Ray actors read and embed "
                                           "(GPU actors when the cluster has GPUs), this process writes the index "
                                           "(pip install -e '.[ray]'); -j is then reader processes per actor."
                                           )] = Runner.local,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to use (e.g. auto, "
                                                    "ray://head:10001); default: start Ray on this machine.")] = None,
    reembed: Annotated[bool, typer.Option("--reembed", help="The index holds another model's embeddings: "
                                          "re-embed every recording with --model into a new generation, made "
                                          "current when the run ends (queries use the old one until then).")
                       ] = False,
    window_store: WindowStoreOpt = None,
    window_store_gb: WindowStoreGbOpt = None,
    rebuild_faiss: Annotated[bool, typer.Option("--rebuild-faiss", help="Rebuild the FAISS files, the full-text "
                                                "index and the manifest from the database (after `elmsearch verify` "
                                                "found them damaged); no ARCHIVE needed.")] = False,
    follow_outside: FollowOutsideOpt = False,
    patients: PatientsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index an archive: preprocess, embed, store in SQL + FAISS. Incremental and resumable."""
    from elmsearch.errors import ElmsearchError

    if rebuild_faiss:
        from indexer.pipeline import rebuild_faiss as rebuild

        if archive is not None or reembed:
            raise _fail("--rebuild-faiss takes no ARCHIVE and no --reembed: it rebuilds from the database")
        try:
            counts = rebuild(db, db_url)
        except (ElmsearchError, OSError) as err:
            raise _fail(str(err).splitlines()[0]) from None
        if as_json:
            out.print_json(json.dumps({"rebuilt": counts}))
        else:
            out.print(f"{db}: FAISS files rebuilt from the database: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return
    if archive is None:
        _error_line("missing argument ARCHIVE: the archive folder to index, or --rebuild-faiss "
                    "(see 'elmsearch index --help')")
        raise typer.Exit(code=2)
    if reembed and runner != Runner.local:
        raise _fail("--reembed runs with --runner local")
    if (window_store is not None or window_store_gb is not None) and runner != Runner.local:
        raise _fail("--window-store runs with --runner local")
    if window_store is not None and window_store.exists() and not window_store.is_dir():
        raise _fail(f"{window_store}: not a folder (--window-store is where the windows are kept)")
    if not archive.exists():
        raise _fail(f"{archive}: no such file or folder")
    if ray_address and runner != Runner.ray:
        raise _fail("--ray-address needs --runner ray")
    if model is None:
        from indexer.service import manifest_model_path

        try:
            model = manifest_model_path(db)
        except ElmsearchError:
            raise _fail("give --model MODEL_DIR (or the ELM release folder); no index to take it from") from None
    from elmsearch.archive.discovery import discovery_options

    try:
        with discovery_options(follow_outside, patients):
            if not reembed and _warn_empty(archive):
                raise typer.Exit(code=1)
            summary = _run_index(archive, db, model, reports, workers, prune, db_url, precision.value,
                                 retry_failed=retry_failed, report_text=report_text, timeout=timeout,
                                 backend=backend.value, runner=runner.value, ray_address=ray_address,
                                 **({"reembed": True} if reembed else {}),
                                 **({"window_store": window_store, "window_store_gb": window_store_gb}
                                    if runner == Runner.local else {}))
    except (ElmsearchError, OSError) as err:
        raise _fail(str(err).splitlines()[0]) from None
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
    else:
        _print_index(summary)


def _open_store(db: Path, db_url: str | None):
    from indexer.store import IndexStateError, IndexStore, locate_index

    folder, hint = locate_index(db)
    try:
        return _opened(IndexStore.open(folder, db_url))
    except IndexStateError as err:
        raise _fail(f"{err}{hint}") from None


@app.command(short_help="Counts, failures with reasons, model, indices.")
def stats(db: DbOpt = Path("elmsearch-index"), db_url: DbUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Counts, failures with reasons, model, index types and sizes."""
    doc = _open_store(db, db_url).stats()
    if as_json:
        out.print_json(json.dumps(doc))
        return
    table = Table(title=f"index {db}", show_header=False)
    labels = {"with_report": "recordings with a report", "reports": "distinct reports", "segments": "report sentences"}
    for k in ("recordings", "with_report", "failed", "reports", "segments", "windows", "patients", "hours"):
        table.add_row(labels.get(k, k), str(doc[k]))
    table.add_row("model", f"{doc['model']['hash']} ({doc['model']['path']})")
    table.add_row("database", doc["db"])
    table.add_row("consistency", doc["consistency"] if doc["consistency"] == "ok" else f"[red]{doc['consistency']}")
    for name, info in doc["indices"].items():
        extra = f", nlist {info['nlist']}, nprobe {info['nprobe']}" if info.get("nlist") else ""
        table.add_row(f"index {name}", f"{info['kind']}, {info['n']} vectors, {info['bytes'] / 1e6:.1f} MB{extra}")
    out.print(table)
    if doc["failures"]:
        fails = Table("path", "reason", title="failed recordings")
        for f in doc["failures"]:
            fails.add_row(f["path"], f["reason"])
        out.print(fails)


@app.command(short_help="Prove an index consistent (checksums, one model).")
def verify(db: DbOpt = Path("elmsearch-index"), db_url: DbUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Prove an index consistent: checksums, one model, every row in FAISS, vectors equal to the database."""
    from indexer.store import IndexStateError, IndexStore

    try:
        doc = _opened(IndexStore.open(db, db_url, tolerate_damage=True)).audit()
    except IndexStateError as err:
        raise _fail(str(err)) from None
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        for name, c in doc["checked"].items():
            out.print(f"{name}: {c['vectors']} vectors, {c['sampled']} compared with the database")
        for problem in doc["problems"]:
            _error_line(problem)
        if doc["ok"]:
            out.print(f"{db}: ok")
    if not doc["ok"]:
        raise typer.Exit(code=1)


@app.command(short_help="Embeddings and metadata as Parquet.")
def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the Parquet files (new, empty, or an earlier "
                                          "export): they hold report text and patient data.", show_default=False)],
    db: DbOpt = Path("elmsearch-index"),
    db_url: DbUrlOpt = None,
) -> None:
    """Export embeddings and metadata as Parquet (recordings, windows, reports, segments)."""
    from indexer.export import export_parquet
    from indexer.private import FolderInUseError

    try:
        written = export_parquet(_open_store(db, db_url), out_dir)
    except FolderInUseError as err:
        raise _fail(str(err)) from None
    for name, n in written.items():
        out.print(f"{out_dir / (name + '.parquet')}: {n} rows")


DEFAULT_DB = Path("elmsearch-index")


def _open_service(db: Path, db_url: str | None = None, backend: Backend = Backend.auto):
    from indexer.service import SearchService
    from indexer.store import IndexStateError, locate_index

    folder, hint = locate_index(db)
    try:
        return _opened(SearchService.open(folder, db_url, backend.value))
    except IndexStateError as err:
        raise _fail(f"{err}{hint}") from None


# The stores and services a process that leaves through `_leave` opened (None: nothing is kept,
# e.g. in a test process that runs many commands)
_OPEN: dict[str, list | None] = {"things": None}


def _opened(thing):
    """``thing`` (anything with ``close()``), remembered to be closed when the process leaves."""
    if _OPEN["things"] is not None:
        _OPEN["things"].append(thing)
    return thing


def _query(run):
    """Run a query; library errors become one line on stderr and exit code 1."""
    from elmsearch.errors import ElmsearchError

    try:
        return run()
    except (ElmsearchError, ValueError) as err:
        raise _fail(str(err).splitlines()[0]) from None


def _print_nearest(nearest: dict | None) -> None:
    """The warning for a query recording unlike the archive (``ScoreReference.nearest``)."""
    if nearest and nearest["unlike_archive"]:
        out.print(f"[yellow]warning:[/yellow] this recording is unlike the archive: its nearest prior case scores "
                  f"{nearest['score']:.3f}, below {100 - nearest['percentile']:.0f} % of the archive's own recordings' "
                  f"nearest ({nearest['reference']:.3f} at the 5th percentile); the cases below are the least "
                  "unlike, not alike", highlight=False)


def _key_text(key) -> str:
    """A recording key as people read it: its parts that are set (``S001R03``, not ``S001R03///``)."""
    parts = key.split("/") if isinstance(key, str) else list(key or [])
    return "/".join(p for p in parts if p)


def _print_hits(doc: dict, as_json: bool, title: str, fmt: OutFormat = OutFormat.text, paths: bool = False) -> None:
    """Print a ranked-query document (``indexer.service.hits_document``) as ``cli.render`` lays it out."""
    from cli.render import print_hits, print_tsv

    if as_json or fmt == OutFormat.json:
        out.print_json(json.dumps(doc))
    elif fmt == OutFormat.tsv:
        print_tsv(doc, out)
    else:
        _print_nearest(doc.get("nearest"))  # before the hits it speaks of
        print_hits(doc, title, out, paths)


@app.command(short_help="Text → EEG: recordings that match a description.")
@with_filters
def search(
    text: Annotated[str, typer.Argument(help='A description, e.g. "generalized 3 Hz spike and wave".')],
    db: DbOpt = DEFAULT_DB,
    k: KOpt = 10,
    level: Annotated[Level, typer.Option(help="recording, or window (rank windows).")] = Level.recording,
    source: Annotated[Source, typer.Option(help="hybrid: what the reports say (negation-aware) and the EEG, "
                                           "fused; reports: the reports alone; eeg: the EEG alone.")] = Source.hybrid,
    filters: dict | None = None,
    backend: BackendOpt = Backend.auto,
    as_json: JsonOpt = False,
    fmt: FormatOpt = OutFormat.text,
    paths: PathsOpt = False,
) -> None:
    """Text → EEG: recordings whose EEG matches a description, with the best-matching window."""
    svc = _open_service(db, backend=backend)
    f = _query(lambda: parse_filters(**filters))
    _print_hits(_query(lambda: svc.search(text, k, level.value, f, source.value)), as_json, f"text → EEG: {text}",
                fmt, paths)


@app.command(short_help="EEG → report: the reports that describe a recording.")
@with_filters
def reports(
    fname: Annotated[Path | None, typer.Argument(help="An EDF/BDF file (indexed or new).")] = None,
    recording: RecordingIdOpt = None,
    db: DbOpt = DEFAULT_DB,
    k: KOpt = 5,
    filters: dict | None = None,
    backend: BackendOpt = Backend.auto,
    as_json: JsonOpt = False,
    fmt: FormatOpt = OutFormat.text,
    paths: PathsOpt = False,
) -> None:
    """EEG → report: the reports that best describe a recording, best sentence first."""
    svc = _open_service(db, backend=backend)
    f = _query(lambda: parse_filters(**filters))
    doc = _query(lambda: svc.reports(fname, recording, k, f))
    _print_hits(doc, as_json, f"EEG → report: {doc['query']}", fmt, paths)


@app.command(short_help="Prior cases: the most similar earlier recordings.")
@with_filters
def similar(
    fname: Annotated[Path | None, typer.Argument(help="An EDF/BDF file (indexed or new).")] = None,
    recording: RecordingIdOpt = None,
    db: DbOpt = DEFAULT_DB,
    k: KOpt = 10,
    include_same_patient: Annotated[bool, typer.Option(help="Allow the query's own patient.")] = False,
    all_per_patient: Annotated[bool, typer.Option("--all-per-patient", help="Several hits per patient.")] = False,
    filters: dict | None = None,
    backend: BackendOpt = Backend.auto,
    as_json: JsonOpt = False,
    fmt: FormatOpt = OutFormat.text,
    paths: PathsOpt = False,
) -> None:
    """Prior cases: the most similar recordings of other patients (one per patient)."""
    svc = _open_service(db, backend=backend)
    f = _query(lambda: parse_filters(**filters))
    doc = _query(lambda: svc.similar(fname, recording, k, include_same_patient, not all_per_patient, f))
    _print_hits(doc, as_json, f"prior cases like {doc['query']}", fmt, paths)


@app.command(short_help="Everything stored about a recording.")
def show(
    recording_id: Annotated[int, typer.Argument(help="Recording id (from search, similar, stats).")],
    db: DbOpt = DEFAULT_DB,
    match: Annotated[str | None, typer.Option("--match", help="A text query: also show the report sentence "
                                              "nearest to it.")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="First report character shown (a long "
                                        "report is shown a page at a time).")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Report characters shown.")] = 100_000,
    as_json: JsonOpt = False,
) -> None:
    """Everything stored about a recording: metadata, report by section (paged), windows."""
    svc = _open_service(db)
    doc = _query(lambda: svc.show(recording_id, match, offset, limit))
    if as_json:
        out.print_json(json.dumps(doc))
        return
    table = Table(show_header=False, title=f"recording {recording_id}")
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a path or a hash is folded onto the next line, never cut
    for key, v in doc.items():
        if key not in {"report", "windows", "match", "events", "warnings"}:
            table.add_row(key, _key_text(v) if key == "key" else "" if v is None else str(v))
    w = doc["windows"]
    table.add_row("windows", f"{len(w)} × {w[0]['end_s'] - w[0]['start_s']:g} s" if w else "0")
    table.add_row("events", str(len(doc["events"])))
    for line in doc["warnings"]:
        table.add_row("warning", escape(line))
    out.print(table)
    _print_events(doc["events"])
    if doc["report"]:
        for sec in doc["report"]["sections"]:
            out.print(f"[bold]{escape(sec['heading'] or '(preamble)')}[/bold]\n{escape(sec['text'])}\n",
                      highlight=False)
        rep = doc["report"]
        if rep["offset"] or rep["next"] is not None:
            shown = sum(len(sec["text"]) for sec in rep["sections"])
            more = f"; next page: --offset {rep['next']}" if rep["next"] is not None else ""
            out.print(f"report characters {rep['offset']}–{rep['offset'] + shown} of {rep['text_chars']}{more}",
                      highlight=False, soft_wrap=True)
    if doc.get("match"):
        m = doc["match"]
        out.print(f"nearest sentence to {match!r} ({m['score']:.3f}): {m['section'] or ''}: {m['text'] or ''}",
                  highlight=False, soft_wrap=True)


EVENTS_SHOWN = 50


def _print_events(events: list[dict]) -> None:
    """The events of a recording as a table (the first ``EVENTS_SHOWN``; ``--json`` has them all)."""
    if not events:
        return
    table = Table("onset (s)", "duration (s)", "event", "channels", "source", title="events")
    for e in events[:EVENTS_SHOWN]:
        label = e["label"] + (f" ({e['meaning']})" if e["meaning"] and e["meaning"] != e["label"] else "")
        table.add_row(f"{e['onset']:.2f}", f"{e['duration']:.2f}", escape(label), escape(", ".join(e["channels"])),
                      e["source"])
    out.print(table)
    if len(events) > EVENTS_SHOWN:
        out.print(f"{len(events) - EVENTS_SHOWN} more events; --json lists them all", highlight=False)


def _read_prompts(fname: Path) -> dict[str, list[str]]:
    from elmsearch.errors import InputFileError
    from indexer.service import read_prompts

    try:
        return read_prompts(fname)
    except InputFileError as err:
        raise _fail(str(err)) from None


@app.command(name="eval", short_help="Quality of an index against ground-truth labels.")
def evaluate(
    labels: Annotated[Path, typer.Option("--labels", exists=True, dir_okay=False,
                                         help="CSV: path or subject,session,montage,token + 0/1 columns.")],
    db: DbOpt = DEFAULT_DB,
    root: Annotated[Path | None, typer.Option("--root", exists=True, file_okay=False,
                                              help="Archive root that relative label paths refer to "
                                              "(default: the labels file's folder).")] = None,
    columns: Annotated[str | None, typer.Option(help="Label columns, comma-separated (default: all with "
                                                "prompts).")] = None,
    prompts: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                 help='JSON {"column": ["negative prompt", "positive prompt"]}.')
                       ] = None,
    elm_weights: Annotated[Path | None, typer.Option(exists=True, help="ELM release folder: the untrained-weights "
                                                     "baseline.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Patient splits per probe point.")] = 3,
    n_per_class: Annotated[int | None, typer.Option(help="Probe with N labels per class instead of "
                                                    "1%/10%/100%.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where eval.json and plots go (default DB/eval).")
                       ] = None,
    events: Annotated[Path | None, typer.Option("--events", exists=True, dir_okay=False, help=(
        "Ground-truth events CSV (path,onset_s,duration_s,kind): window-level localisation (default: "
        "events.csv beside the labels file, if there)."))] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval, zero-shot and probe quality of an index against labels, with baselines."""
    extra = _read_prompts(prompts) if prompts else None  # before the heavy imports: a typo fails at once
    from indexer.evaluate import evaluate_index, write_report
    from indexer.private import FolderInUseError, output_dir

    index = _open_service(db).index
    try:  # before the evaluation: a folder that is not ours fails at once
        output_dir(out_dir or db / "eval", "eval.json", "evaluation")
    except (FolderInUseError, OSError) as err:
        raise _fail(str(err)) from None
    result = _query(lambda: evaluate_index(
        index, labels, root or labels.parent, columns.split(",") if columns else None, extra,
        seeds=tuple(range(seeds)), n_per_class=n_per_class, elm_weights=elm_weights,
        events_csv=events or ((labels.parent / "events.csv") if (labels.parent / "events.csv").is_file() else None)))
    written = write_report(result, out_dir or db / "eval")
    if as_json:
        out.print_json(json.dumps(result, default=float))
        return
    if "retrieval" in result:
        t = Table("direction", "R@1", "R@5", "R@10", "MRR", "n", title="retrieval (own report ↔ own recording)")
        for k, m in result["retrieval"].items():
            if isinstance(m, dict):
                t.add_row(k, *(f"{m[x]:.3f}" for x in ("R@1", "R@5", "R@10", "MRR")), str(m["n"]))
        out.print(t)
    prior = {k: (result.get("same_patient", {}).get(k), result.get("finding_precision", {}).get(k))
             for k in (*result.get("same_patient", {}), *result.get("finding_precision", {}))}
    if prior:
        t = Table("features", "same-patient R@5", "finding P@5", "n", title="prior cases",
                  caption="R@5: another recording of the patient among the 5 nearest; P@5: share of the 5 nearest "
                  "other patients with the query's main finding")
        for k, (sp, fp) in prior.items():
            t.add_row(k, f"{sp['R@5']:.3f} (chance {sp['chance']:.3f})" if sp else "–",
                      f"{fp['P@5']:.3f} (chance {fp['chance']:.3f})" if fp else "–",
                      " / ".join(str(m["n"]) for m in (sp, fp) if m))
        out.print(t)
    if result.get("cohort"):
        t = Table("source", "reports withheld", "MAP", "P@10", title=f"cohort retrieval by finding "
                  f"({len(result['cohort']['queries'])} phrases, {result['cohort']['n']} recordings)")
        for key, m in result["cohort"].items():
            if isinstance(m, dict) and "MAP" in m and m["MAP"] is not None:
                source, fraction = key.split("@")
                t.add_row(source, f"{float(fraction):.0%}", f"{m['MAP']:.3f}", f"{m['P@10']:.3f}")
        out.print(t)
    if result.get("events"):
        ev = result["events"]
        key = f"P@{ev['k']}"
        sources = [x for x in ev if isinstance(ev[x], dict) and key in ev[x]]
        t = Table("event", "query", *(f"{x} {key}" for x in sources), title="which minutes: windows returned by "
                  "a text query that lie in an event of its kind")
        for kind, text in ev["queries"].items():
            t.add_row(kind, text, *(f"{ev[x]['by'][kind]:.2f}" for x in sources))
        t.add_row("mean", "", *(f"{ev[x][key]:.3f}" for x in sources))
        out.print(t)
    if result.get("zero_shot"):
        t = Table("column", "AUROC", "AUROC from the minutes", "balanced acc.", "n", title="zero-shot")
        for c, m in result["zero_shot"].items():
            w = result.get("zero_shot_windows", {}).get(c)
            t.add_row(c, f"{m['auroc']:.3f}", f"{w['auroc']:.3f}" if w else "", f"{m['balanced_accuracy']:.3f}",
                      str(m["n"]))
        out.print(t)
    t = Table("column", "features", "labels", "AUROC", "balanced acc.", title="linear probe (held-out patients)")
    for c, curves in result["probe"].items():
        for name, rows in curves.items():
            for r in rows:
                t.add_row(c, name, f"{r['n_labels']:.0f}", f"{r['auroc']:.3f} ± {r['auroc_sd']:.3f}",
                          f"{r['balanced_accuracy']:.3f} ± {r['balanced_accuracy_sd']:.3f}")
    out.print(t)
    out.print("written: " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)


@app.command(short_help="The search page and the HTTP API (read-only).")
def serve(
    db: DbOpt = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on (another than 127.0.0.1 exposes the archive "
                                      "to the network: put it behind your hospital's authentication).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: one the system picks).")] = 8000,
    db_url: DbUrlOpt = None,
    backend: BackendOpt = Backend.auto,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest EDF accepted by the upload.")] = 512,
    workers_threads: Annotated[int, typer.Option("--threads", min=1, help="Requests answered at once.")] = 16,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Also answer requests for this Host name (repeatable; by default only "
        "localhost, 127.0.0.1, ::1 and --host are, against DNS rebinding).")] = None,
    disk_cache: Annotated[bool, typer.Option("--disk-cache", help="Keep query-text features in DIR/cache "
                                             "(by default in memory only: no query text reaches the disk).")
                          ] = False,
) -> None:
    """HTTP API and search page over an index (read-only; models loaded once)."""
    import uvicorn

    from cli.web.app import create_app
    from indexer.service import SearchService
    from indexer.store import IndexStateError

    sock = _listen(host, port)  # first: a port in use is one line, before the models load
    try:
        svc = SearchService.open(db, db_url, backend.value, max_upload_mb * 2**20,
                                 text_cache="disk" if disk_cache else "memory")
    except IndexStateError as err:
        sock.close()
        raise _fail(str(err)) from None
    _query(svc.warm)
    app_ = create_app(svc, workers_threads, host=host, allow_hosts=allow_host or ())
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    console.print(f"elmsearch: serving {db} on http://{shown}:{port}/ (API: /docs, /openapi.json); Ctrl-C stops",
                  highlight=False, soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _listen(host: str, port: int):
    """A listening socket on ``host:port``, or one line (``port N on HOST is in use``) and exit 1."""
    import errno
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise _fail(f"--host {host}: not an address of this machine ({err})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed port is free
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise _fail(f"port {port} on {host} is in use (another server?); choose one with --port") from None
        raise _fail(f"cannot listen on {host}:{port} ({err.strerror})") from None
    sock.set_inheritable(True)
    return sock


def _usage_line(err: Exception) -> int:
    """Print a usage error (bad option, argument or value) as one line; return its exit code.

    Typer's vendored Click exceptions are duck-typed (``exit_code`` and ``format_message``):
    the style never imports Click and Typer does not re-export its ``UsageError``.
    """
    code = int(err.exit_code)
    ctx = getattr(err, "ctx", None)
    if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `elmsearch`: the help, as Click does
        typer.echo(ctx.get_help(), err=True)
        return code
    message = err.format_message().replace(": Value error, ", ": ")  # Typer's wording for enum/date values
    if code == 2:  # a usage error: point at the command's help
        root_opt = re.search(r"No such option: (-v|--verbose|-q|--quiet)\b", message)
        if root_opt:  # an option of elmsearch itself, given after the command
            cmd = ctx.info_name if ctx is not None else "COMMAND"
            message += f" ({root_opt.group(1)} goes before the command: {PROG} {root_opt.group(1)} {cmd} ...)"
        else:
            message += f" (see '{ctx.command_path if ctx is not None else PROG} --help')"
    _error_line(message)
    return code


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: every user error is one line on stderr.

    Exit codes: 0 success, 1 runtime error, 2 usage error (bad option, argument or value),
    130 interrupted. An unexpected exception prints ``error: Type: message`` (its traceback
    with the root ``--verbose``).
    """
    command = typer.main.get_command(app)
    leave = _leave if args is None and _command_name(sys.argv[1:]) in READ_ONLY else sys.exit
    if leave is _leave:
        _OPEN["things"] = []
    try:
        # standalone_mode=False: Click's exceptions reach us, typer.Exit comes back as its exit code
        rv = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except KeyboardInterrupt:  # pragma: no cover
        _error_line("interrupted")
        sys.exit(130)
    except typer.Abort:
        _error_line("aborted")
        sys.exit(1)
    except Exception as err:
        if hasattr(err, "exit_code") and hasattr(err, "format_message"):
            leave(_usage_line(err))
        if _debug["traceback"]:
            traceback.print_exc()
        else:
            lines = str(err).strip().splitlines()
            _error_line(f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__)
        leave(1)
    leave(rv if isinstance(rv, int) else 0)


# Commands that only read (an index, a file, a model): the process may skip collecting its garbage
READ_ONLY = frozenset({"show", "stats", "search", "reports", "similar", "verify"})


def _command_name(argv: list[str]) -> str | None:
    """The command of an ``elmsearch`` command line (the root takes only flags before it)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _leave(code: int | str | None) -> NoReturn:
    """``sys.exit(code)`` for a process that ran a read-only command, without its last garbage collections.

    The imports of a query leave about 66,000 objects tracked by the garbage collector, and the
    interpreter's exit collects them once more: 0.1 s of a cold `show` (0.49 -> 0.40 s). Frozen
    (``gc.freeze``), they are left to the operating system; atexit handlers, stream flushes and
    reference-count cleanup still run, and a read-only command has nothing of its own to write.
    What the collection would have closed, the stores' database connections, is closed first.
    """
    import gc

    for thing in _OPEN["things"] or []:
        try:
            thing.close()
        except Exception as err:  # noqa: BLE001 - the command's answer is out; this costs nothing
            logging.getLogger(__name__).debug("closing %r: %s", thing, err)
    gc.freeze()
    sys.exit(code)
