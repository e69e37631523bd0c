"""Events through an index: stored with the recording, listed, exported, filtered and searched."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.app import app
from indexer.export import export_parquet
from indexer.pipeline import index_archive
from indexer.search import Filters
from indexer.service import SearchService
from indexer.store import IndexStore

runner = CliRunner()

CSV_BI = """# version = csv_v1.0.0
#
channel,start_time,stop_time,label,confidence
TERM,0.0000,10.0000,bckg,1.0000
TERM,10.0000,20.0000,seiz,1.0000
TERM,20.0000,30.0000,bckg,1.0000
"""


@pytest.fixture(scope="module")
def events_index(tmp_path_factory, demo_model_dir):
    """An index of four recordings: EDF+ annotations, a TUH label file, none, and a damaged annotation signal."""
    from conftest import TUH_LABELS, synthetic_uv
    from edfio import Edf, EdfAnnotation, EdfSignal
    from edfio import Recording as EdfRecording

    root = tmp_path_factory.mktemp("events") / "archive"
    root.mkdir()

    def write(name, annotations=None, seed=0):
        signals = synthetic_uv(len(TUH_LABELS), 250, 30, seed=seed)
        edf = Edf([EdfSignal(row, 250, label=lab, physical_dimension="uV", physical_range=(-3000, 3000))
                   for lab, row in zip(TUH_LABELS, signals, strict=True)],
                  recording=EdfRecording(), annotations=[EdfAnnotation(*a) for a in annotations or []] or None)
        edf.write(root / name)
        return root / name

    write("rec1.edf", [(2.0, 3.0, "seizure"), (21.0, None, "eyes closed")], seed=1)
    write("rec2.edf", seed=2)
    (root / "rec2.csv_bi").write_text(CSV_BI)
    write("rec3.edf", seed=3)
    bad = write("rec4.edf", [(1.0, None, "photic 10 Hz")], seed=4)
    data = bytearray(bad.read_bytes())
    at = data.index(b"photic")
    data[at - 6:at - 1] = b"+1x.\x15"  # the event's time stamp damaged
    bad.write_bytes(bytes(data))
    db = tmp_path_factory.mktemp("events-index") / "idx"
    summary = index_archive(root, db, demo_model_dir)
    assert summary.added == 4 and summary.failed == 0
    return root, db


def _ids(db) -> dict[str, int]:
    from sqlalchemy import select

    from db import Recording

    with IndexStore.open(db).session() as s:
        return {path.rsplit("/", 1)[-1]: rid for rid, path in s.execute(select(Recording.id, Recording.path))}


def test_events_are_stored_and_listed(events_index):
    _, db = events_index
    svc = SearchService.open(db)
    ids = _ids(db)
    one = svc.show(ids["rec1.edf"])
    assert [(e["label"], e["onset"], e["source"]) for e in one["events"]] == [("seizure", 2.0, "edf+"),
                                                                               ("eyes closed", 21.0, "edf+")]
    two = svc.show(ids["rec2.edf"])["events"]
    assert [(e["label"], e["meaning"], e["onset"], e["duration"], e["source"]) for e in two] == [
        ("seiz", "seizure", 10.0, 10.0, "tuh-csv_bi")]
    assert svc.show(ids["rec3.edf"])["events"] == []
    four = svc.show(ids["rec4.edf"])
    assert four["status"] == "indexed" and four["events"] == []
    assert len(four["warnings"]) == 1 and "annotation signal" in four["warnings"][0]
    assert svc.events(ids["rec2.edf"])["events"] == two


def test_cli_show_inspect_and_the_api_list_events(events_index):
    from fastapi.testclient import TestClient

    from cli.web.app import create_app

    root, db = events_index
    ids = _ids(db)
    res = runner.invoke(app, ["show", str(ids["rec1.edf"]), "--db", str(db)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "seizure" in res.output and "eyes closed" in res.output and "edf+" in res.output
    res = runner.invoke(app, ["inspect", str(root / "rec2.edf"), "--json"])
    assert res.exit_code == 0 and '"seiz"' in res.output and '"tuh-csv_bi"' in res.output
    res = runner.invoke(app, ["show", str(ids["rec4.edf"]), "--db", str(db)], env={"COLUMNS": "200"})
    assert "warning" in res.output and "annotation signal" in res.output
    with TestClient(create_app(SearchService.open(db)), base_url="http://127.0.0.1") as client:
        doc = client.get(f"/api/recordings/{ids['rec2.edf']}/events").json()
        assert doc["events"][0]["label"] == "seiz" and doc["warnings"] == []
        assert client.get("/api/recordings/999/events").status_code == 404
        assert client.get(f"/api/recordings/{ids['rec1.edf']}").json()["events"][1]["label"] == "eyes closed"
        hits = client.get("/api/search", params={"q": "seizure", "has_event": "seiz"}).json()["hits"]
        assert {h["recording_id"] for h in hits} == {ids["rec1.edf"], ids["rec2.edf"]}


def test_filter_by_event(events_index):
    _, db = events_index
    svc = SearchService.open(db)
    ids = _ids(db)
    hits = svc.search("normal EEG", k=10, filters=Filters(has_event="seiz"))["hits"]
    assert {h["recording_id"] for h in hits} == {ids["rec1.edf"], ids["rec2.edf"]}
    hits = svc.search("normal EEG", k=10, filters=Filters(has_event="eyes closed"))["hits"]
    assert {h["recording_id"] for h in hits} == {ids["rec1.edf"]}
    assert svc.search("normal EEG", k=10, filters=Filters(has_event="photic"))["hits"] == []
    res = runner.invoke(app, ["search", "x", "--db", str(db), "--has-event", "seizure", "--json"])
    assert res.exit_code == 0, res.output
    for level in ("recording", "window"):  # the table names the event as the reason
        res = runner.invoke(app, ["search", "seizure", "--db", str(db), "--level", level, "-k", "3"],
                            env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "why: event: seiz (seizure) at " in res.output or "why: event: seizure at " in res.output


def test_text_search_finds_the_marked_minutes(events_index):
    _, db = events_index
    svc = SearchService.open(db)
    ids = _ids(db)
    hits = svc.search("seizure", k=3)["hits"]
    assert {h["recording_id"] for h in hits[:2]} == {ids["rec1.edf"], ids["rec2.edf"]}
    by_id = {h["recording_id"]: h for h in hits}
    two = by_id[ids["rec2.edf"]]
    assert 10.0 <= two["start_s"] < 20.0  # its best window is inside the marked seizure
    assert any("event" in e and e["event"]["label"] == "seiz" for e in two["evidence"])
    # window level: the windows inside the events first, the event as the reason
    windows = svc.search("seizure", k=6, level="window")["hits"]
    inside = [w for w in windows if w["score"] > 0.5]
    assert {w["recording_id"] for w in inside} == {ids["rec1.edf"], ids["rec2.edf"]}
    assert all(w["evidence"][0]["event"]["label"] in ("seizure", "seiz") for w in inside)
    for w in inside:
        event = w["evidence"][0]["event"]
        assert w["start_s"] < event["onset"] + max(event["duration"], 1e-9) and w["end_s"] > event["onset"]
    assert windows[: len(inside)] == inside  # event windows rank first
    # a negated query matches no event; the EEG source ignores events
    assert all(w["score"] <= 0.5 for w in svc.search("no seizure", k=5, level="window")["hits"])
    assert all("event" not in (w.get("evidence") or [{}])[0]
               for w in svc.search("seizure", k=5, level="window", source="eeg")["hits"])


def test_events_exported_and_refreshed_with_their_label_files(events_index, demo_model_dir, tmp_path):
    root, db = events_index
    store = IndexStore.open(db)
    written = export_parquet(store, tmp_path / "pq")
    table = pq.read_table(tmp_path / "pq" / "events.parquet").to_pylist()
    assert written["events"] == len(table) == 3
    assert {r["label"] for r in table} == {"seizure", "eyes closed", "seiz"}
    # a label file added beside an indexed recording is read by the next run (the EDF is unchanged)
    (root / "rec3.tse").write_text("version = tse_v1.0.0\n\n5.0 8.0 spsw 1.0\n")
    try:
        summary = index_archive(root, db, demo_model_dir)
        assert summary.added == 0
        ids = _ids(db)
        events = SearchService.open(db).show(ids["rec3.edf"])["events"]
        assert [(e["label"], e["meaning"], e["source"]) for e in events] == [("spsw", "spike and/or sharp wave",
                                                                              "tuh-tse")]
    finally:
        (root / "rec3.tse").unlink()
        index_archive(root, db, demo_model_dir)
