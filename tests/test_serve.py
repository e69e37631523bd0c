"""`elmsearch serve`: every API route through FastAPI's test client, JSON equal to the CLI's (issue 13)."""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.app import app as cli_app
from cli.web.app import create_app
from indexer.pipeline import index_archive
from indexer.service import SearchService

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(scope="module")
def served(demo_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    svc = SearchService.open(db).warm()
    with TestClient(create_app(svc, threads=8), base_url="http://127.0.0.1") as client:  # a loopback Host
        yield db, svc, client


def _cli(*args) -> dict:
    result = CliRunner().invoke(cli_app, ["-q", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _get(client, url, status=200):
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    return r


def test_search_json_equals_the_cli(served):
    db, _, client = served
    api = _get(client, "/api/search?q=focal%20slowing&k=4").json()
    assert api == _cli("search", "focal slowing", "--db", str(db), "-k", "4")
    assert len(api["hits"]) == 4 and api["query"] == "focal slowing"
    assert [h["rank"] for h in api["hits"]] == [1, 2, 3, 4]
    filt = _get(client, "/api/search?q=normal%20EEG&k=10&sex=F&age_min=20&level=window").json()
    assert filt == _cli("search", "normal EEG", "--db", str(db), "-k", "10", "--sex", "F", "--age-min", "20",
                        "--level", "window")
    assert all(h["sex"] == "F" and h["age"] >= 20 for h in filt["hits"])


def test_recording_similar_reports_equal_the_cli(served):
    db, _, client = served
    rid = _get(client, "/api/search?q=normal&k=1").json()["hits"][0]["recording_id"]
    assert _get(client, f"/api/recordings/{rid}").json() == _cli("show", str(rid), "--db", str(db))
    similar = _get(client, f"/api/recordings/{rid}/similar?k=3").json()
    assert similar == _cli("similar", "--recording", str(rid), "--db", str(db), "-k", "3")
    assert rid not in [h["recording_id"] for h in similar["hits"]]
    same = _get(client, f"/api/recordings/{rid}/similar?k=3&include_same_patient=true&after=2000-01-01").json()
    assert same == _cli("similar", "--recording", str(rid), "--db", str(db), "-k", "3", "--include-same-patient",
                        "--after", "2000-01-01")
    reports = _get(client, f"/api/recordings/{rid}/reports?k=2").json()
    assert reports == _cli("reports", "--recording", str(rid), "--db", str(db), "-k", "2")
    assert all(h["sentence"] for h in reports["hits"])
    match = _get(client, f"/api/recordings/{rid}?match=normal%20background").json()
    assert match == _cli("show", str(rid), "--db", str(db), "--match", "normal background")
    texts = [s["text"] for s in match["report"]["sections"]]
    assert match["match"]["text"] and any(match["match"]["text"] in t for t in texts)


def test_classify_and_stats(served, demo_archive):
    db, _, client = served
    prompts = ["normal EEG", "abnormal EEG with focal slowing"]
    r = client.post("/api/classify", json={"recording_id": 1, "prompts": prompts})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [s["prompt"] for s in doc["scores"]] == prompts
    assert sum(s["probability"] for s in doc["scores"]) == pytest.approx(1, abs=1e-5) and doc["windows"] == 100
    assert sum(s["minutes"] for s in doc["scores"]) == pytest.approx(1, abs=1e-5)  # two prompts: exclusive
    shown = _cli("show", "1", "--db", str(db))["windows"]  # the window behind a score is one of the recording's
    assert all([s["window"][0], s["window"][1]] in [[w["start_s"], w["end_s"]] for w in shown] for s in doc["scores"])
    three = [*prompts, "sleep with spindles"]  # from the minutes, any number of prompts
    win = client.post("/api/classify", json={"recording_id": 1, "prompts": three, "windows": 95}).json()
    assert win["windows"] == 95 and len(win["scores"]) == 3
    assert sum(s["probability"] for s in win["scores"]) == pytest.approx(1, abs=1e-5)
    assert all(0 <= s["minutes"] <= 1 for s in win["scores"])
    edf = sorted(demo_archive.root.rglob("*.edf"))[0]
    assert _cli("classify", str(edf), "-p", three[0], "-p", three[1], "-p", three[2], "--db", str(db),
                "--windows", "95")["windows"] == 95
    assert client.post("/api/classify", json={"recording_id": 1, "prompts": three, "windows": 150}).status_code == 422
    assert _get(client, "/api/stats").json() == _cli("stats", "--db", str(db))
    assert _get(client, "/healthz").json()["status"] == "ok"
    spec = _get(client, "/openapi.json").json()
    for path in ("/api/search", "/api/recordings/{recording_id}", "/api/recordings/{recording_id}/similar",
                 "/api/recordings/{recording_id}/reports", "/api/classify", "/api/upload",
                 "/api/recordings/{recording_id}/window.png", "/api/recordings/{recording_id}/spectrogram.png",
                 "/api/stats"):
        assert path in spec["paths"], path


def test_bad_parameters_are_one_line_errors(served):
    _, _, client = served
    for url, status, words in [
        ("/api/search?q=x&k=0", 422, "k"), ("/api/search?q=x&k=abc", 422, "k"), ("/api/search?k=3", 422, "q"),
        ("/api/search?q=x&sex=X", 422, "sex"), ("/api/search?q=x&after=2020-13-45", 422, "after"),
        ("/api/search?q=x&level=sentence", 422, "level"), ("/api/search?q=%20%20", 400, "q"),
        ("/api/recordings/999999", 404, "999999"), ("/api/recordings/999999/similar", 404, "999999"),
        ("/api/recordings/abc", 422, "recording_id"),
        ("/api/recordings/1/window.png?start=0&end=100", 400, "60 s"),
        ("/api/recordings/999999/window.png", 404, "999999"),
    ]:
        r = client.get(url)
        assert r.status_code == status, (url, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, (url, detail)
    r = client.post("/api/classify", json={"recording_id": 1, "prompts": ["only one"]})
    assert r.status_code == 422 and "prompts" in r.json()["detail"]


def test_pictures(served):
    _, _, client = served
    r = _get(client, "/api/recordings/1/window.png?start=2&end=8")
    assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG)
    from matplotlib.image import imread

    h, w = imread(io.BytesIO(r.content)).shape[:2]
    assert (w, h) == (1100, 520)
    s = _get(client, "/api/recordings/1/spectrogram.png?start=0&end=10")
    assert s.content.startswith(PNG) and s.content != r.content
    assert _get(client, "/api/recordings/1/window.png").content.startswith(PNG)  # default: the first 10 s


def test_upload_is_answered_and_never_indexed(served, demo_archive):
    db, svc, client = served
    before = _get(client, "/api/stats").json()["recordings"]
    edf = sorted(demo_archive.root.rglob("*.edf"))[3]
    leftovers = set(Path(tempfile.gettempdir()).glob("elmsearch-upload-*"))
    r = client.post("/api/upload", files={"file": ("new.edf", edf.read_bytes(), "application/octet-stream")},
                    params={"k": 3})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["filename"] == "new.edf" and doc["n_windows"] > 0
    assert doc["similar"]["hits"] and doc["reports"]["hits"]
    assert _get(client, "/api/stats").json()["recordings"] == before
    assert set(Path(tempfile.gettempdir()).glob("elmsearch-upload-*")) == leftovers  # the temp copy is gone
    bad = client.post("/api/upload", files={"file": ("x.edf", b"0       not an edf", "application/octet-stream")})
    assert bad.status_code == 400 and "\n" not in bad.json()["detail"]
    wrong = client.post("/api/upload", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert wrong.status_code == 400 and ".edf" in wrong.json()["detail"]
    limit, svc.max_upload_bytes = svc.max_upload_bytes, 1000
    try:
        big = client.post("/api/upload", files={"file": ("big.edf", edf.read_bytes(), "application/octet-stream")})
        assert big.status_code == 413 and "limit" in big.json()["detail"]
    finally:
        svc.max_upload_bytes = limit


def test_a_kept_upload_is_drawn_and_answered_again_until_it_expires(served, demo_archive):
    db, svc, client = served
    edf = sorted(demo_archive.root.rglob("*.edf"))[4]
    r = client.post("/api/upload", files={"file": ("kept.edf", edf.read_bytes(), "application/octet-stream")},
                    params={"k": 3, "keep": "true"})
    assert r.status_code == 200, r.text
    doc = r.json()
    token = doc["upload_id"]
    assert _get(client, f"/api/uploads/{token}").json() == doc  # the answers, as given
    sig = _get(client, f"/api/uploads/{token}/signal?start=2&end=7&format=json").json()
    assert sig["filename"] == "kept.edf" and sig["status"] == "upload" and sig["start_s"] == 2
    assert len(sig["data"]) == len(sig["ch_names"]) and len(sig["data"][0]) == sig["n_times"] > 0
    assert "kept.edf" not in _get(client, "/api/stats").text  # never indexed
    kept = svc.uploads.get(token).path
    assert kept.is_file() and oct(kept.stat().st_mode & 0o777) == "0o600"
    assert _get(client, f"/uploads/{token}").headers["content-type"].startswith("text/html")
    max_kept, svc.uploads.max_kept = svc.uploads.max_kept, 1
    try:  # a newer upload pushes the older one out: its file is deleted, its address says why
        r2 = client.post("/api/upload", files={"file": ("b.edf", edf.read_bytes(), "application/octet-stream")},
                         params={"k": 1, "keep": "true"})
        assert r2.status_code == 200
        gone = _get(client, f"/api/uploads/{token}", 404).json()["detail"]
        assert "upload the file again" in gone and not kept.exists()
        assert _get(client, f"/api/uploads/{r2.json()['upload_id']}").json()["filename"] == "b.edf"
    finally:
        svc.uploads.max_kept = max_kept
    assert _get(client, "/api/uploads/../etc", 404)  # only a token's characters name an upload
    assert client.get("/api/uploads/a.b").status_code in {404, 422}


def test_percentiles_against_the_archives_own_scores(served, monkeypatch):
    from indexer.calibration import FILE, ScoreReference
    from indexer.search import Index

    db, svc, client = served
    ids = [h["recording_id"] for h in svc.similar(recording_id=1, k=50)["hits"]] + [1]
    flagged = 0
    for rid in ids:
        doc = svc.similar(recording_id=rid, k=5)
        pcts = [h["percentile"] for h in doc["hits"]]
        assert all(0 <= p <= 100 for p in pcts) and pcts == sorted(pcts, reverse=True)  # scores fall, so do they
        near = doc["nearest"]
        assert near["score"] == doc["hits"][0]["score"]
        assert near["unlike_archive"] == (near["score"] < near["reference"])
        flagged += near["unlike_archive"]
    assert flagged <= max(1, 0.1 * len(ids))  # the archive's own recordings are mostly like it (5 % by design)
    assert "nearest" not in svc.similar(recording_id=1, k=5, include_same_patient=True)
    search = svc.search("focal slowing", k=5)
    assert all(h["percentile"] is not None for h in search["hits"])
    assert all(h["percentile"] is not None for h in svc.reports(recording_id=1, k=3)["hits"])
    ref = svc.index.reference
    top = float(ref.scores("nearest").max())
    assert ref.percentile("nearest", top) == 100.0 and ref.percentile("nearest", -2.0) == 0.0
    assert ref.nearest(-2.0)["unlike_archive"] and not ref.nearest(top)["unlike_archive"]
    # kept beside the index: a new process reads it instead of running the archive's queries again
    assert (db / "cache" / FILE).is_file()
    monkeypatch.setattr(ScoreReference, "_build", lambda *a: pytest.fail("rebuilt"))
    again = ScoreReference(Index.open(db))
    assert again.percentile("search/hybrid", search["hits"][0]["score"]) == search["hits"][0]["percentile"]


def test_the_page_is_served_without_external_assets(served):
    _, _, client = served
    for url in ("/", "/?q=spike", "/recordings/1", "/recordings/1/similar", "/recordings/1/reports"):
        r = _get(client, url)
        assert "text/html" in r.headers["content-type"] and 'id="search"' in r.text
    html = _get(client, "/").text
    assert not re.search(r'(src|href)="(https?:)?//', html)
    js = _get(client, "/static/app.js").text
    assert "/api/search" in js and "pushState" in js and "innerHTML" not in js
    assert _get(client, "/static/style.css").text
    _get(client, "/static/../app.py", 404)
    _get(client, "/recordings/..%2F..%2Fetc%2Fpasswd", 404)


def test_threads_share_one_service(served):
    from concurrent.futures import ThreadPoolExecutor

    _, svc, _ = served
    texts = [f"query {i % 7} focal slowing" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        docs = list(pool.map(lambda t: svc.search(t, k=3), texts))
    for t, d in zip(texts, docs, strict=True):
        assert d == svc.search(t, k=3)


def test_serve_defaults_to_loopback():
    import inspect

    from cli.app import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    result = CliRunner().invoke(cli_app, ["serve", "--db", "/nonexistent/index"])
    assert result.exit_code == 1 and "/nonexistent/index" in result.output


def test_service_documents_are_json_plain(served):
    _, svc, _ = served
    doc = svc.search("spike", k=2)
    assert json.loads(json.dumps(doc)) == doc
    assert not any(isinstance(v, np.generic) for h in doc["hits"] for v in h.values())


def test_responses_match_their_schemas(served, demo_archive):
    """Every JSON route's answer validates against the model its OpenAPI entry names (no undeclared key)."""
    from cli.web import schemas

    _, svc, client = served
    rid = svc.search("normal EEG", k=1)["hits"][0]["recording_id"]
    edf = sorted(demo_archive.root.rglob("*.edf"))[0]
    answers = {
        schemas.Stats: _get(client, "/api/stats").json(),
        schemas.HitsDocument: _get(client, "/api/search?q=spike%20and%20wave&k=3&sex=female").json(),
        schemas.Recording: _get(client, f"/api/recordings/{rid}?match=slowing").json(),
    }
    similar = _get(client, f"/api/recordings/{rid}/similar?k=3").json()
    reports = _get(client, f"/api/recordings/{rid}/reports?k=2").json()
    classify = client.post("/api/classify", json={"recording_id": rid, "prompts": ["normal EEG", "abnormal EEG"]})
    upload = client.post("/api/upload", files={"file": ("new.edf", edf.read_bytes(), "application/octet-stream")})
    assert classify.status_code == 200 and upload.status_code == 200, (classify.text, upload.text)
    for model, doc in [*answers.items(), (schemas.HitsDocument, similar), (schemas.HitsDocument, reports),
                       (schemas.ClassifyDocument, classify.json()), (schemas.UploadDocument, upload.json())]:
        model.model_validate(doc)
    assert answers[schemas.Recording]["report"] is not None and answers[schemas.Recording]["match"] is not None
    with pytest.raises(ValueError, match="Extra inputs"):  # the check can fail: an undeclared key is refused
        schemas.Recording.model_validate({**answers[schemas.Recording], "undeclared": 1})


def test_filters_are_declared_once(served):
    """The CLI's options and the API's query parameters are both the rows of indexer.filters.FILTERS."""
    import typer

    from cli.app import app as cli
    from indexer.filters import FILTERS

    commands = typer.main.get_command(cli).commands
    for name in ("search", "similar", "reports"):
        options = {p.name: p for p in commands[name].params}
        for f in FILTERS:
            assert options[f.name].opts == [f.option] and options[f.name].help == f.help, (name, f.name)
    spec = create_app.__globals__["_filters"]  # the dependency every filtered route shares
    import inspect

    assert list(inspect.signature(spec).parameters) == [f.name for f in FILTERS]
    openapi = _get(served[2], "/openapi.json").json()
    for route in ("/api/search", "/api/recordings/{recording_id}/similar", "/api/recordings/{recording_id}/reports"):
        params = {p["name"]: p for p in openapi["paths"][route]["get"]["parameters"]}
        for f in FILTERS:
            assert params[f.name]["description"] == f.help, (route, f.name)
