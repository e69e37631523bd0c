"""Typer application: each command parses options, calls the libraries, prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.options import DemoDirOpt, JsonOpt, ReportsOpt, WindowOpt, WorkersOpt

app = typer.Typer(help="elmsearch: search clinical EEG archives by report text and by EEG.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
out = Console()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs read by programs: one line per message
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=level, force=True, handlers=[handler])
    for noisy in ("mne", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _progress(total: int, what: str) -> Progress:
    return Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                    disable=not console.is_terminal or logging.getLogger().level > logging.INFO,
                    transient=False)


def _run_scan(root: Path, reports: Path | None, window: float, workers: int):
    from elmsearch.archive import discover
    from indexer.scan import scan_archive

    entries = discover(root, reports)
    total = len(entries)
    with _progress(total, "scan") as progress:
        task = progress.add_task("scan", total=total, rate="")
        hours = [0.0]

        def tick(item) -> None:
            hours[0] += (item.duration or 0) / 3600
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=1, rate=f"{hours[0] / elapsed * 3600:.0f} h EEG/h")

        return scan_archive(root, reports, window_seconds=window, n_jobs=workers, on_item=tick,
                            entries=entries)


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


@app.command()
def scan(
    archive: Annotated[Path, typer.Argument(help="Archive folder or one EDF/BDF file.")],
    reports: ReportsOpt = None,
    window: WindowOpt = 5.0,
    workers: WorkersOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """Read and preprocess every recording of an archive; list what was refused and why."""
    from elmsearch.errors import ReportError

    if not archive.exists():
        raise _fail(f"{archive}: no such file or folder")
    try:
        summary = _run_scan(archive, reports, window, workers)
    except ReportError as err:
        raise _fail(str(err)) from None
    _print_scan(summary, as_json)


@app.command()
def inspect(
    fname: Annotated[Path, typer.Argument(help="An EDF/BDF file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what elmsearch reads from one recording (header, key, montage electrodes)."""
    from elmsearch.errors import RecordingError
    from elmsearch.recording import make_windows, path_info_for, read_recording

    try:
        rec = read_recording(fname)
    except RecordingError as err:
        raise _fail(str(err)) from None
    m = rec.meta
    info = path_info_for(fname)
    doc = {
        "path": str(fname), "key": list(info.key), "layout": info.layout, "subject": m.subject,
        "sex": m.sex, "age": m.age, "start": m.start.isoformat() if m.start else None,
        "date_suspect": m.date_suspect, "duration_s": m.duration, "native_sfreq": m.native_sfreq,
        "n_chans_native": m.n_chans_native, "electrodes": m.electrode_labels,
        "windows_5s": len(make_windows(rec, 5.0)),
        "windows_60s": len(make_windows(rec, 60.0)) if rec.duration >= 60 else 0,
    }
    if as_json:
        out.print_json(json.dumps(doc))
        return
    table = Table(show_header=False, title=str(fname))
    for k, v in doc.items():
        table.add_row(k, str(v))
    out.print(table)


@app.command()
def demo(
    directory: DemoDirOpt = Path("elmsearch-demo"),
    n_recordings: Annotated[int, typer.Option("--n-recordings", min=1, help="Recordings.")] = 100,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    workers: WorkersOpt = 2,
) -> None:
    """Generate the demo archive (once) and scan it; re-running reuses what exists."""
    import time

    from elmsearch.demo import generate_archive

    archive = directory / "archive"
    console.print(f"[bold]1/2[/bold] demo archive in {archive} ({n_recordings} recordings, seed {seed})")
    t0 = time.perf_counter()
    made = generate_archive(archive, n_recordings=n_recordings, seed=seed)
    console.print(f"     {made.n_recordings} recordings, {made.hours:.1f} h of EEG, "
                  f"labels in {made.labels_path} ({time.perf_counter() - t0:.1f} s)")
    console.print("[bold]2/2[/bold] reading and preprocessing every recording (ELM recipe)")
    summary = _run_scan(archive, None, 5.0, workers)
    _print_scan(summary, as_json=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        sys.exit(130)
