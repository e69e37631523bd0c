"""Fuzz: a few hundred hostile EEG files indexed together with good ones (tests/fuzz_corpus.py).

The corpus goes through ``index_archive``, ``scan_archive`` and ``elmsearch inspect``; a
small tree of symlinks (DataLad style, dangling, loops, aliases), a folder named ``x.edf``,
odd file names and the hazards of issue 20 (names that are not UTF-8, a FIFO, a socket, links
out of the archive to a recording, a device, a folder and a report, BrainVision data files
elsewhere, an oversized report, data past the header's records) goes through the same three.
A ``skip`` case must never get a row: the walk lists it, with its reason, before anything
opens it. Nothing may crash or hang; every good file
is indexed; every broken file is refused with one line that names the problem; every file
found has exactly one row; no stored vector is non-finite and FAISS holds exactly the
indexed rows. Each test collects every problem and fails once, listing them all grouped by
corpus kind. A file that crashes the whole index run is reported, set aside (into a hidden
folder, which the walk skips) and the run is started again, so one run finds every crash.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from fuzz_corpus import Case, build_corpus, group_of, synthetic_edf

SEED = 20240611
RUN_TIMEOUT_S = 300  # every attempt of one index run together; a hang is reported, not waited for
FILE_TIMEOUT_S = 60  # one scan or inspect of one file
MAX_CRASHES = 40  # crashing files set aside before an index run is given up
QUARANTINE = ".fuzz-quarantine"  # hidden: never walked, so a crashing file can be set aside

# A refusal must name its problem: loose patterns per corpus group (or group/variant).
REASON_HINTS: dict[str, str] = {
    "header_bytes": r"header|bytes",
    "n_records": r"record",
    "record_duration": r"record|duration|long|short|Hz",
    "n_signals": r"signal",
    "version": r"EDF|BDF",
    "physical": r"range|physical|calibrat|scal",
    "digital": r"range|digital|calibrat|scal",
    "samples_per_record": r"sample|record|rate|Hz|truncat",
    "labels": r"electrode|channel|label",
    "truncated": r"truncat|empty|short|EDF|bytes",
    "not_eeg": r"EDF|BDF|header",
    "shape/2h_header_1s_data": r"truncat|record|bytes",
    "shape/short_3s": r"short|long",
    "shape/short_4s": r"short|long",
    "shape/only_non_eeg": r"electrode|channel|EEG",
    "shape/sampled_at_64hz": r"Hz|rate|sampl",
    "tree/dangling_symlink": r"symlink|link|exist|no such|not there|cannot",
    "tree/symlink_loop": r"loop|link|cannot",
    "tree/fifo": r"FIFO",
    "tree/socket": r"socket",
    "tree/folder_named_edf": r"folder",
    "tree/link_outside": r"outside the archive",
    "tree/link_to_device": r"outside the archive",
    "tree/folder_link_outside": r"outside the archive",
    "tree/brainvision_data_elsewhere": r"header's own folder",
    "tree/brainvision_data_outside": r"outside the archive.*DataFile|DataFile.*outside the archive",
}
SPECIAL = {"tree/fifo", "tree/socket"}  # `inspect` too must refuse these without opening them
SECRET = "SECRET-7f3a outside the archive"  # the text of a file outside the tree: never in an index
NO_REPORT = {"tree/report_link_outside", "tree/oversized_report"}  # read, but their report is refused


class Hang(BaseException):
    """Raised by the watchdog (a BaseException, so no library ``except Exception`` eats it)."""


class watchdog:
    """``with watchdog(seconds, what):`` raises ``Hang`` in the main thread after ``seconds``."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what

    def _fire(self, signum, frame):
        raise Hang(f"{self.what}: still running after {self.seconds:g} s")

    def __enter__(self):
        self._old = signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)
        return False


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__module__}.{type(err).__name__}: {text[:300]}"


def where(err: BaseException, depth: int = 1) -> str:
    """The innermost ``depth`` frames of an exception, as ``file:line function`` (innermost last)."""
    frames = traceback.extract_tb(err.__traceback__)[-depth:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def realpath(path: Path) -> str:
    return os.path.realpath(path)  # never raises, even on symlink loops


def row_keys(path: Path) -> tuple[str, str]:
    """What a file's row may be keyed on: its archive path, or its resolved path (as stored)."""
    from elmsearch.archive.discovery import archive_path, path_to_text

    return archive_path(path), path_to_text(realpath(path))


def skip_reasons(skipped: list[dict]) -> dict[str, str]:
    """``display_path`` -> reason, from a run's or a scan's list of skipped files."""
    return {s["path"]: s["reason"] for s in skipped}


def check_skipped(problems: Problems, case: Case, reasons: dict[str, str]) -> None:
    """A ``skip`` case: listed among the skipped files, with a reason that names the problem."""
    from elmsearch.archive.discovery import display_path

    reason = reasons.get(display_path(os.path.abspath(case.path)))
    if reason is None:
        problems.add(case, "not listed among the skipped files")
    else:
        check_reason(problems, case, reason)


# ---- archives ---------------------------------------------------------------------------
def build_tree(root: Path, seed: int = SEED) -> list[Case]:
    """Good files plus symlinks (DataLad style, dangling, loops, an alias), a folder named x.edf."""
    root.mkdir(parents=True)
    data = synthetic_edf(seed=seed)
    out: list[Case] = []
    good = root / "good.edf"
    good.write_bytes(data)
    out.append(Case(good, "tree/good", "ok"))
    (root / "good_2.edf").write_bytes(synthetic_edf(seed=seed + 1, annotations=True))
    out.append(Case(root / "good_2.edf", "tree/good", "ok"))
    # DataLad / git-annex: the file is a relative symlink into the hidden annex
    annexed = root / "datalad" / ".git" / "annex" / "objects" / "Xk" / "Q2" / "SHA256E-s1--ab.edf" / "content.edf"
    annexed.parent.mkdir(parents=True)
    annexed.write_bytes(synthetic_edf(seed=seed + 2))
    link = root / "datalad" / "sub-01_task-rest_eeg.edf"
    link.symlink_to(os.path.relpath(annexed, link.parent))
    out.append(Case(link, "tree/datalad_symlink", "ok"))
    # an annexed file whose content was never fetched
    missing = root / "datalad" / "sub-02_task-rest_eeg.edf"
    missing.symlink_to(".git/annex/objects/Zz/Q9/SHA256E-s2--cd.edf/SHA256E-s2--cd.edf")
    out.append(Case(missing, "tree/dangling_symlink", "refuse"))
    (root / "dangling.edf").symlink_to("nowhere/gone.edf")
    out.append(Case(root / "dangling.edf", "tree/dangling_symlink", "refuse"))
    # two symlinks pointing at each other
    (root / "loop_a.edf").symlink_to("loop_b.edf")
    (root / "loop_b.edf").symlink_to("loop_a.edf")
    out += [Case(root / "loop_a.edf", "tree/symlink_loop", "refuse"),
            Case(root / "loop_b.edf", "tree/symlink_loop", "refuse")]
    # folder symlinks that loop: whether followed or not, they must add no rows
    (root / "sub").mkdir()
    (root / "sub" / "loop_dir").symlink_to(".")
    (root / "sub" / "up_dir").symlink_to("..")
    # a second name for a file of the archive
    (root / "sub" / "alias_of_good.edf").symlink_to("../good.edf")
    out.append(Case(root / "sub" / "alias_of_good.edf", "tree/symlink_alias", "ok"))
    # a folder named like a recording, with a recording inside
    (root / "folder_named.edf").mkdir()
    (root / "folder_named.edf" / "inside.edf").write_bytes(synthetic_edf(seed=seed + 3))
    out.append(Case(root / "folder_named.edf" / "inside.edf", "tree/inside_folder_named_edf", "ok"))
    # names: upper-case suffix, spaces and non-ASCII; a hidden file (never walked)
    for i, name in enumerate(("UPPER_CASE.EDF", "Prüfung 01 — ü 王.edf")):
        (root / name).write_bytes(synthetic_edf(seed=seed + 4 + i))
        out.append(Case(root / name, "tree/odd_name", "ok"))
    (root / ".hidden.edf").write_bytes(b"not even an EDF")
    out.append(Case(root / "folder_named.edf", "tree/folder_named_edf", "skip"))
    return out + build_hazards(root, root.parent / "outside", seed + 10)


def _vhdr(data_file: str) -> str:
    return ("Brain Vision Data Exchange Header File Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
            f"DataFile={data_file}\nMarkerFile=rec.vmrk\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
            "NumberOfChannels=1\nSamplingInterval=4000\n\n[Binary Infos]\nBinaryFormat=INT_16\n\n"
            "[Channel Infos]\nCh1=Fp1,,0.1,µV\n")


def build_hazards(root: Path, outside: Path, seed: int) -> list[Case]:
    """Issue 20's hazards: odd bytes in names, special files, links out of ``root``, foreign data files."""
    from fuzz_corpus import layout

    from elmsearch.archive.discovery import MAX_REPORT_BYTES

    outside.mkdir(parents=True)
    out: list[Case] = []
    for i, raw in enumerate((b"caf\xe9.edf", b"\xff\xfe-\x80.edf")):  # not UTF-8: stored losslessly
        path = Path(os.fsdecode(os.fsencode(root) + b"/" + raw))
        path.write_bytes(synthetic_edf(seed=seed + i))
        out.append(Case(path, "tree/non_utf8_name", "ok"))
    os.mkfifo(root / "pipe.edf")  # opening it would block until a writer comes
    out.append(Case(root / "pipe.edf", "tree/fifo", "skip"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock.edf"))  # the socket file stays after close
        out.append(Case(root / "sock.edf", "tree/socket", "skip"))
    except OSError:  # a path too long for a socket address
        pass
    finally:
        sock.close()
    (outside / "elsewhere.edf").write_bytes(synthetic_edf(seed=seed + 2))
    (outside / "shadow.txt").write_text(f"{SECRET}\nroot:x:0:0\n")
    (root / "link_out.edf").symlink_to(outside / "elsewhere.edf")
    out.append(Case(root / "link_out.edf", "tree/link_outside", "skip"))
    (root / "devnull.edf").symlink_to(os.devnull)
    out.append(Case(root / "devnull.edf", "tree/link_to_device", "skip"))
    (outside / "folder").mkdir()
    (outside / "folder" / "far.edf").write_bytes(synthetic_edf(seed=seed + 3))
    (root / "linked_folder").symlink_to(outside / "folder")
    out.append(Case(root / "linked_folder", "tree/folder_link_outside", "skip"))
    (root / "p1").mkdir()
    (root / "p1" / "rec.edf").write_bytes(synthetic_edf(seed=seed + 4))
    (root / "p1" / "rec.txt").symlink_to(outside / "shadow.txt")
    out.append(Case(root / "p1" / "rec.edf", "tree/report_link_outside", "ok"))
    (root / "p2").mkdir()
    (root / "p2" / "rec.edf").write_bytes(synthetic_edf(seed=seed + 5))
    line = f"Findings: normal background activity. {SECRET}\n"
    (root / "p2" / "rec.txt").write_text(line * (int(1.5 * MAX_REPORT_BYTES) // len(line)))
    out.append(Case(root / "p2" / "rec.edf", "tree/oversized_report", "ok"))
    raw = synthetic_edf(seed=seed + 6, duration=20)
    (root / "extra_records.edf").write_bytes(raw + raw[layout(raw).header_bytes:])  # twice the header's records
    out.append(Case(root / "extra_records.edf", "tree/extra_records", "ok"))
    (root / "bv1").mkdir()
    (root / "bv1" / "rec.vhdr").write_text(_vhdr("../p1/rec.eeg"))
    (root / "p1" / "rec.eeg").write_bytes(b"\0" * 64)
    out.append(Case(root / "bv1" / "rec.vhdr", "tree/brainvision_data_elsewhere", "refuse"))
    (root / "bv2").mkdir()
    (root / "bv2" / "rec.vhdr").write_text(_vhdr("rec.eeg"))
    (outside / "rec.eeg").write_bytes(b"\0" * 64)
    (root / "bv2" / "rec.eeg").symlink_to(outside / "rec.eeg")
    out.append(Case(root / "bv2" / "rec.vhdr", "tree/brainvision_data_outside", "skip"))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("fuzz") / "archive"
    return root, build_corpus(root, seed=SEED, shared=SHARED_DATA if SHARED_DATA.is_dir() else None)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("fuzz-tree") / "archive"
    return root, build_tree(root)




# ---- index ------------------------------------------------------------------------------
def _culprit(err: BaseException, root: Path, db: Path) -> Path | None:
    """The archive file a crash happened on: from the traceback, else the first without a row."""
    tb, frames = err.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in ("entry", "p", "prepared", "item"):
            obj = frame.f_locals.get(name)
            path = getattr(getattr(obj, "entry", obj), "path", None)
            if isinstance(path, Path) and (path.exists() or path.is_symlink()) and root in path.parents:
                return path
    from sqlalchemy import select

    from db import Recording
    from elmsearch.archive.discovery import discover
    from indexer.store import IndexStore

    try:
        with IndexStore(db).session() as s:
            have = set(s.scalars(select(Recording.path)))
    except Exception:  # noqa: BLE001 -- no database yet
        have = set()
    return next((e.path for e in discover(root) if not set(row_keys(e.path)) & have), None)


def run_index(root: Path, cases: list[Case], db: Path, model_dir: Path) -> dict:
    """Index ``root``; a file that crashes the run is reported and set aside, then the run goes on."""
    import torch

    from indexer.pipeline import index_archive

    # batches of 4 windows: 2 intra-op threads on a busy 2-core machine are ~80x slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    crashes: list[tuple[Path | None, str]] = []
    set_aside: list[tuple[Path, Path]] = []
    summary, t0 = None, time.perf_counter()
    log = logging.getLogger()
    level, log.level = log.level, logging.ERROR  # hundreds of expected warnings
    faulthandler.dump_traceback_later(RUN_TIMEOUT_S + 60)  # a hang inside C code: show where
    try:
        with watchdog(RUN_TIMEOUT_S, "index_archive (all attempts)"):
            for _ in range(MAX_CRASHES):
                try:
                    summary = index_archive(root, db, model_dir)
                    break
                except Exception as err:  # noqa: BLE001 -- the point is to see them all
                    culprit = _culprit(err, root, db)
                    crashes.append((culprit, one_line(err)))
                    if culprit is None:
                        break
                    aside = root / QUARANTINE / culprit.relative_to(root)
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(culprit, aside)
                    set_aside.append((culprit, aside))
    except Hang as err:
        crashes.append((_culprit(err, root, db), f"{err} (in {where(err, 4)})"))
    finally:
        faulthandler.cancel_dump_traceback_later()
        log.setLevel(level)
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    keys = {c.path: row_keys(c.path) for c in cases}  # as the tree was during the run
    for culprit, aside in reversed(set_aside):  # back in place for scan and inspect
        os.rename(aside, culprit)
    shutil.rmtree(root / QUARANTINE, ignore_errors=True)
    return {"db": db, "summary": summary, "crashes": crashes, "seconds": seconds, "keys": keys,
            "set_aside": {c for c, _ in set_aside}}


@pytest.fixture(scope="module")
def indexed(corpus, model_dir, tmp_path_factory) -> dict:
    root, cases = corpus
    return run_index(root, cases, tmp_path_factory.mktemp("fuzz-index") / "idx", model_dir)


@pytest.fixture(scope="module")
def tree_indexed(tree, model_dir, tmp_path_factory) -> dict:
    root, cases = tree
    return run_index(root, cases, tmp_path_factory.mktemp("fuzz-tree-index") / "idx", model_dir)


# ---- checks -----------------------------------------------------------------------------
class Problems:
    """Problems found, grouped by corpus group, reported all at once."""

    def __init__(self, title: str):
        self.title = title
        self.items: dict[str, list[str]] = defaultdict(list)

    def add(self, case: Case | None, what: str) -> None:
        key = group_of(case.kind) if case else "(run)"
        where = f"{case.kind} {case.path.name}: " if case else ""
        self.items[key].append(where + what)

    def report(self) -> str:
        n = sum(len(v) for v in self.items.values())
        lines = [f"{self.title}: {n} problem(s)"]
        for key in sorted(self.items):
            lines.append(f"[{key}] {len(self.items[key])}")
            lines += [f"    {x}" for x in self.items[key]]
        return "\n".join(lines)


def fail_on(*problems: Problems) -> None:
    bad = [p for p in problems if p.items]
    if bad:
        pytest.fail("\n".join(p.report() for p in bad), pytrace=False)


def check_reason(problems: Problems, case: Case, reason: str | None) -> None:
    """A refusal: non-empty, one line, no traceback; for refuse cases it names the problem."""
    if not reason or not reason.strip():
        problems.add(case, "refused without a reason")
        return
    if "\n" in reason.strip() or "\r" in reason:
        problems.add(case, f"reason is not one line: {reason[:200]!r}")
    if "Traceback" in reason:
        problems.add(case, f"reason carries a traceback: {reason[:200]!r}")
    if case.expect == "refuse":
        hint = REASON_HINTS.get(case.kind) or REASON_HINTS.get(group_of(case.kind))
        if hint and not re.search(hint, reason, re.IGNORECASE):
            problems.add(case, f"reason does not name the problem (want /{hint}/): {reason[:200]!r}")


def verdict_problem(case: Case, ok: bool, reason: str | None) -> str | None:
    if case.expect == "ok" and not ok:
        return f"expected indexed, refused: {reason}"
    if case.expect == "refuse" and ok:
        return "expected refused, accepted"
    return None


def present(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.path.exists() or c.path.is_symlink()]


def index_verdicts(indexed: dict) -> dict[str, bool]:
    """Row key -> indexed? (empty when the run never finished)."""
    if indexed["summary"] is None:
        return {}
    from sqlalchemy import select

    from db import Recording, Status
    from indexer.store import IndexStore

    with IndexStore.open(indexed["db"]).session() as s:
        return {r.path: r.status == Status.INDEXED for r in s.scalars(select(Recording))}


def verdict_of(rows: dict[str, bool], path: Path) -> bool | None:
    return next((rows[k] for k in row_keys(path) if k in rows), None)


def check_index(title: str, cases: list[Case], indexed: dict) -> Problems:
    from sqlalchemy import select

    from db import Recording, Status, Window, from_blob
    from indexer.store import IndexStore

    problems = Problems(f"{title}: index_archive over {len(cases)} files ({indexed['seconds']:.0f} s)")
    by_path = {c.path: c for c in cases}
    for culprit, what in indexed["crashes"]:
        case = by_path.get(culprit) if culprit else None
        problems.add(case, f"crashed the whole run: {what}" + ("" if case or not culprit else f" ({culprit})"))
    if indexed["summary"] is None:
        return problems
    found = [c for c in present(cases) if c.path not in indexed["set_aside"]]
    store = IndexStore.open(indexed["db"])
    with store.session() as s:
        rows = {r.path: r for r in s.scalars(select(Recording))}
        windows: dict[int, list[bytes]] = defaultdict(list)
        ends: dict[int, float] = defaultdict(float)
        for w in s.scalars(select(Window)):
            windows[w.recording_id].append(w.emb)
            ends[w.recording_id] = max(ends[w.recording_id], w.end_s)
    stored = b"".join(f.read_bytes() for f in indexed["db"].rglob("elmsearch.sqlite*"))
    if SECRET.encode() in stored:
        problems.add(None, "text of a file outside the archive is in the database")
    # a row is keyed by the archive path, or by the resolved path (then an alias shares it)
    by_row: dict[str, list[Case]] = defaultdict(list)
    skipped = skip_reasons(indexed["summary"].skipped_files)
    for c in found:
        key = next((k for k in indexed["keys"][c.path] if k in rows), None)
        if c.expect == "skip":
            if key is not None:
                problems.add(c, f"has a row ({rows[key].status}): it should have been skipped before reading")
            check_skipped(problems, c, skipped)
        elif key is None:
            problems.add(c, "no row")
        else:
            by_row[key].append(c)
    for key, group in by_row.items():
        rec, case = rows[key], group[0]
        ok = rec.status == Status.INDEXED
        if rec.status not in (Status.INDEXED, Status.FAILED):
            problems.add(case, f"unknown status {rec.status!r}")
        for c in group:
            if (msg := verdict_problem(c, ok, rec.error)) is not None:
                problems.add(c, msg)
        if not ok:
            check_reason(problems, case, rec.error)
            continue
        if rec.emb is None:
            problems.add(case, "indexed without a recording vector")
        elif not np.isfinite(from_blob(rec.emb)).all():
            problems.add(case, "non-finite recording vector (recordings.emb)")
        embs = windows.get(rec.id, [])
        if not embs or len(embs) != rec.n_windows:
            problems.add(case, f"{len(embs)} window rows for n_windows={rec.n_windows}")
        if ends.get(rec.id, 0.0) > rec.duration + 1e-6:
            problems.add(case, f"a window ends at {ends[rec.id]:.1f} s, past the recording's {rec.duration:.1f} s")
        if case.kind in NO_REPORT and rec.report_id is not None:
            problems.add(case, "its report was stored (a link out of the archive, or over the size limit)")
        if any(not np.isfinite(from_blob(e)).all() for e in embs):
            problems.add(case, "non-finite window vector (windows.emb)")
    for path in sorted(set(rows) - set(by_row)):
        problems.add(None, f"row for a file that is not in the archive: {path}")
    n_indexed = sum(r.status == Status.INDEXED for r in rows.values())
    n_failed = sum(r.status == Status.FAILED for r in rows.values())
    if n_indexed + n_failed != len(by_row):
        problems.add(None, f"counts do not add up: {n_indexed} indexed + {n_failed} failed != "
                           f"{len(by_row)} files found")
    summary = indexed["summary"]
    if not indexed["crashes"] and (summary.added, summary.failed) != (n_indexed, n_failed):
        problems.add(None, f"run summary says {summary.added} added, {summary.failed} failed; "
                           f"the database has {n_indexed} indexed, {n_failed} failed")
    n_win = sum(len(windows.get(r.id, [])) for r in rows.values() if r.status == Status.INDEXED)
    for name, want in (("eeg_recording", n_indexed), ("eeg_window", n_win)):
        try:
            index = store.load_index(name)
        except Exception as err:  # noqa: BLE001
            problems.add(None, f"FAISS {name} cannot be opened: {one_line(err)}")
            continue
        have = 0 if index is None else index.ntotal
        if have != want:
            problems.add(None, f"FAISS {name} holds {have} vectors, the database has {want}")
    expected = Counter(c.expect for c in found)
    print(f"{title}: {len(found)} files ({', '.join(f'{n} {e}' for e, n in sorted(expected.items()))}); "
          f"{len(indexed['summary'].skipped_files)} listed as skipped; ", end="")
    print(f"{title}: {n_indexed} indexed, {n_failed} failed, {len(indexed['crashes'])} crashes, "
          f"{indexed['seconds']:.1f} s")
    return problems


def check_scan(title: str, root: Path, cases: list[Case], indexed: dict) -> Problems:
    from elmsearch.archive.discovery import discover
    from indexer.scan import scan_archive

    problems = Problems(f"{title}: scan_archive over {len(cases)} files")
    found = present(cases)
    log = logging.getLogger()
    level, log.level = log.level, logging.ERROR
    items, raised, skipped = None, set(), {}
    try:
        try:
            with watchdog(RUN_TIMEOUT_S, "scan_archive"):
                summary = scan_archive(root)
                items, skipped = summary.items, skip_reasons(summary.skipped)
        except (Exception, Hang) as err:  # noqa: BLE001
            problems.add(None, f"scan_archive over the whole archive raised {one_line(err)} (at {where(err)}); "
                               "scanning file by file")
        if items is None:  # find every file that breaks it
            items = []
            by_key = {k: c for c in found for k in row_keys(c.path)}
            for entry in discover(root):
                try:
                    with watchdog(FILE_TIMEOUT_S, f"scan of {entry.path}"):
                        items += scan_archive(root, entries=[entry]).items
                except (Exception, Hang) as err:  # noqa: BLE001
                    case = next((by_key[k] for k in row_keys(entry.path) if k in by_key), None)
                    problems.add(case, f"scan_archive raised {one_line(err)} (at {where(err)})")
                    raised.update(row_keys(entry.path))
    finally:
        log.setLevel(level)
    from elmsearch.archive.discovery import display_path

    def shown(path: Path) -> tuple[str, str]:  # what a scan item's path may be: as found, or resolved
        return display_path(os.path.abspath(path)), display_path(realpath(path))

    seen = {k: item for item in items for k in (item.path, display_path(realpath(item.path)))}
    index_rows = index_verdicts(indexed)
    for case in found:
        item = next((seen[k] for k in shown(case.path) if k in seen), None)
        if case.expect == "skip":
            if item is not None:
                problems.add(case, "scanned: it should have been skipped before reading")
            elif skipped:  # (the file-by-file fallback has no walk)
                check_skipped(problems, case, skipped)
            continue
        if item is None:
            if not set(row_keys(case.path)) & raised:
                problems.add(case, "not scanned")
            continue
        if (msg := verdict_problem(case, item.ok, item.error)) is not None:
            problems.add(case, msg)
        if not item.ok:
            check_reason(problems, case, item.error)
        elif item.n_windows <= 0:
            problems.add(case, "scanned ok with no windows")
        indexed_ok = verdict_of(index_rows, case.path)
        if indexed_ok is not None and indexed_ok != item.ok:
            problems.add(case, f"scan says {'ok' if item.ok else 'refused'}, the index says "
                               f"{'indexed' if indexed_ok else 'failed'}")
    return problems


def check_inspect(title: str, cases: list[Case], indexed: dict) -> Problems:
    from typer.testing import CliRunner

    from cli.app import app

    problems = Problems(f"{title}: elmsearch inspect on {len(cases)} files")
    runner = CliRunner()
    index_rows = index_verdicts(indexed)
    root_log = logging.getLogger()
    handlers, level = root_log.handlers[:], root_log.level  # the CLI callback reconfigures logging
    try:
        for case in cases:
            try:
                with watchdog(FILE_TIMEOUT_S, f"inspect {case.path}"):
                    result = runner.invoke(app, ["--quiet", "inspect", str(case.path), "--json"])
            except Hang as err:
                problems.add(case, f"{err} (in {where(err, 4)})")
                continue
            exc = result.exception
            if exc is not None and not isinstance(exc, SystemExit):
                problems.add(case, f"inspect raised {one_line(exc)} (at {where(exc)})")
                continue
            if "Traceback" in result.output:
                problems.add(case, "a traceback in the output")
            if result.exit_code not in (0, 1):
                problems.add(case, f"exit code {result.exit_code}")
                continue
            ok, reason = result.exit_code == 0, None
            if ok:
                try:
                    if json.loads(result.stdout).get("windows_5s", 0) <= 0:
                        problems.add(case, "inspect ok with no 5 s windows")
                except ValueError:
                    problems.add(case, f"--json output is not JSON: {result.stdout[:120]!r}")
            else:
                errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
                if len(errors) != 1:
                    problems.add(case, f"refusal is not one 'error:' line: {result.stderr[:300]!r}")
                else:
                    reason = errors[0][len("error:"):].strip()
                    check_reason(problems, case, reason)
            if case.kind in SPECIAL and ok:
                problems.add(case, "inspect read a special file")
            if case.expect != "skip" and (msg := verdict_problem(case, ok, reason)) is not None:
                problems.add(case, msg)  # a link out is the user's to inspect by name
            indexed_ok = verdict_of(index_rows, case.path)
            if indexed_ok is not None and indexed_ok != ok and case.path.is_file():
                problems.add(case, f"inspect says {'ok' if ok else 'refused'}, the index says "
                                   f"{'indexed' if indexed_ok else 'failed'}")
    finally:
        root_log.handlers[:] = handlers
        root_log.setLevel(level)
    return problems


# ---- tests ------------------------------------------------------------------------------
def test_corpus_shape(tmp_path):
    cases = build_corpus(tmp_path / "a", seed=SEED, shared=None)
    again = build_corpus(tmp_path / "b", seed=SEED, shared=None)
    digest = [hashlib.sha256(c.path.read_bytes()).hexdigest() for c in cases]
    assert digest == [hashlib.sha256(c.path.read_bytes()).hexdigest() for c in again], "not reproducible"
    assert len(cases) >= 150
    assert sum(c.expect == "ok" for c in cases) >= 6
    assert {c.expect for c in cases} == {"ok", "refuse", "either"}
    assert len({c.path for c in cases}) == len(cases)


def test_corpus_real_bases():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data absent ({SHARED_DATA}): the fuzz corpus has synthetic bases only")
    from fuzz_corpus import eegmat_edf, layout

    raw = eegmat_edf(SHARED_DATA)
    if raw is None:
        pytest.skip(f"{SHARED_DATA / 'eegmat' / 'Subject00_1.edf'} absent: no real EDF base")
    lay = layout(raw)
    assert lay.n_records == 20 and len(raw) == lay.header_bytes + 20 * lay.record_bytes


def test_index_fuzz_corpus(corpus, indexed):
    _, cases = corpus
    fail_on(check_index("corpus", cases, indexed))


def test_scan_fuzz_corpus(corpus, indexed):
    root, cases = corpus
    fail_on(check_scan("corpus", root, cases, indexed))


def test_inspect_fuzz_corpus(corpus, indexed):
    _, cases = corpus
    fail_on(check_inspect("corpus", cases, indexed))


def test_tree_hazards(tree, tree_indexed):
    root, cases = tree
    fail_on(check_index("tree", cases, tree_indexed), check_scan("tree", root, cases, tree_indexed),
            check_inspect("tree", cases, tree_indexed))


def test_unreadable_tree(tmp_path, model_dir):
    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop reads (unreadable folder/file not testable)")
    root = tmp_path / "archive"
    (root / "locked").mkdir(parents=True)
    good = synthetic_edf(seed=SEED)
    cases = [Case(root / "good.edf", "tree/good", "ok"), Case(root / "no_read.edf", "tree/unreadable", "refuse")]
    for c in cases:
        c.path.write_bytes(good)
    (root / "locked" / "behind_a_locked_folder.edf").write_bytes(good)
    os.chmod(root / "no_read.edf", 0)
    os.chmod(root / "locked", 0)
    try:
        result = run_index(root, cases, tmp_path / "idx", model_dir)
        problems = check_index("unreadable", cases, result)
    finally:
        os.chmod(root / "locked", 0o755)
        os.chmod(root / "no_read.edf", 0o644)
    fail_on(problems)


if __name__ == "__main__":  # write the corpus to look at it: python tests/test_fuzz.py DIR
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    made = build_corpus(out / "corpus", seed=SEED) + build_tree(out / "tree")
    for kind, n in sorted(Counter(group_of(c.kind) for c in made).items()):
        print(f"{kind:20s} {n}")
