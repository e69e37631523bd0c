"""The full-text index of report sentences: follows every write, stems, ranks, never errors on user text."""

import json
import logging
import random
import shutil
import sqlite3

import pytest
from conftest import read_only_view
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from cli.app import app
from db import Report, Segment, make_engine
from db.engine import make_sessionmaker
from indexer.fulltext import FTS_TABLE, ensure_fulltext, fulltext_problems, match_segments
from indexer.store import IndexStore

runner = CliRunner()

SENTENCES = [
    "Focal sharp waves are seen over the left temporal region.",
    "Sharp transients occur during sleep.",
    "There is no evidence of focal slowing.",
    "The background is normal.",
    "A single sharp wave is noted.",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    """Sessions on a database with the full-text index and one report of ``SENTENCES`` (id 1)."""
    url = f"sqlite:///{tmp_path / 'fts.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    assert ensure_fulltext(engine) is True
    assert ensure_fulltext(engine) is False  # idempotent
    make = make_sessionmaker(engine)
    with make() as s, s.begin():
        _add_report(s, "r1", SENTENCES)
    yield make
    engine.dispose()


def _add_report(s, source, texts):
    r = Report(source=source, text_hash="h", text=" ".join(texts))
    r.segments = [Segment(ordinal=i, section="findings", start=0, end=len(t), text=t) for i, t in enumerate(texts)]
    s.add(r)
    s.flush()
    return r


def _texts(s, hits):
    return [s.get(Segment, h.segment_id).text for h in hits]


def test_stemming_ranking_and_matched(sessions):
    with sessions() as s:
        hits = match_segments(s, ["focal", "sharp", "wave"])
        texts = _texts(s, hits)
        assert texts[0] == SENTENCES[0]  # every term
        assert hits[0].matched == 3 and all(h.matched < 3 for h in hits[1:])
        assert set(texts) == {SENTENCES[i] for i in (0, 1, 2, 4)}  # "wave" finds "waves"; "sharp" "Sharp"
        assert all(h.score > 0 for h in hits)
        assert {h.report_id for h in hits} == {1}
        by_text = dict(zip(texts, hits, strict=True))
        assert by_text[SENTENCES[4]].matched == 2 and by_text[SENTENCES[2]].matched == 1
        assert match_segments(s, []) == [] and match_segments(s, ["", "  ", "*"]) == []
        assert len(match_segments(s, ["sharp"], limit=1)) == 1


def test_unranked_keeps_the_matches_and_their_order_by_terms_held(sessions):
    """``ranked=False`` (the hybrid search's bounded path): the same sentences, more terms first, newest first."""
    with sessions() as s:
        terms = ["focal", "sharp", "wave"]
        ranked, unranked = match_segments(s, terms), match_segments(s, terms, ranked=False)
        assert {h.segment_id for h in unranked} == {h.segment_id for h in ranked}
        assert [h.matched for h in unranked] == [3, 2, 1, 1]
        assert all(h.score == h.matched for h in unranked)
        ones = [h.segment_id for h in unranked if h.matched == 1]
        assert ones == sorted(ones, reverse=True)  # newest first within a count
        assert [h.matched for h in match_segments(s, terms, limit=2, ranked=False)] == [3, 2]
        r2 = _add_report(s, "r2", ["Focal sharp waves again, right side."])
        newest = match_segments(s, terms, limit=1, ranked=False)
        assert newest[0].report_id == r2.id and newest[0].matched == 3
        assert match_segments(s, ["sharp"], report_ids=[1], ranked=False)
        assert {h.report_id for h in match_segments(s, ["sharp"], report_ids=[r2.id], ranked=False)} == {r2.id}


def test_writes_follow_in_the_same_transaction(sessions):
    with sessions() as s:
        _add_report(s, "r2", ["Hypsarrhythmia is present."])
        assert len(match_segments(s, ["hypsarrhythmia"])) == 1  # visible inside the transaction
        s.rollback()
        assert match_segments(s, ["hypsarrhythmia"]) == []  # a rollback leaves no trace
        s.execute(update(Segment).where(Segment.text == SENTENCES[3]).values(text="Burst suppression pattern."))
        s.commit()
        assert match_segments(s, ["background"]) == []
        assert len(match_segments(s, ["burst suppression"])) == 1
        s.execute(delete(Segment).where(Segment.text.like("Burst%")))
        s.commit()
        assert match_segments(s, ["burst"]) == []
        s.delete(s.get(Report, 1))  # deleting a report deletes its sentences and their index entries
        s.commit()
        assert match_segments(s, ["sharp"]) == []


def test_report_ids_restrict(sessions):
    with sessions() as s:
        r2 = _add_report(s, "r2", ["Sharp waves again."])
        s.commit()
        assert {h.report_id for h in match_segments(s, ["sharp"])} == {1, r2.id}
        assert {h.report_id for h in match_segments(s, ["sharp"], report_ids=[r2.id])} == {r2.id}
        assert match_segments(s, ["sharp"], report_ids=[]) == []
        assert match_segments(s, ["sharp"], report_ids=[999]) == []


FUZZ_PIECES = ['"', "'", "*", "(", ")", "NEAR", "NEAR(", "AND", "OR", "NOT", ":", "-", "+", "^", "{", "}",
               "text:", "sharp", "wave", "\\", ";", "--", "%", "_", "é", "波", "😀", "\x00", "\ud800", "\u0300",
               "DROP TABLE segments;", "' OR 1=1 --", "col:", "rank", "MATCH", "", " ", "²", "[", "]", ",", "."]


def test_user_text_never_errors(sessions):
    rng = random.Random(0)
    with sessions() as s:
        for _ in range(200):
            terms = ["".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(0, 6)))
                     for _ in range(rng.randint(0, 5))]
            hits = match_segments(s, terms)
            assert all(h.score > 0 and h.matched >= 1 for h in hits)
        assert len(match_segments(s, ['"sharp"', "sharp*", "NEAR(sharp", "text:sharp", "-sharp"])) >= 3
        assert s.scalar(select(Segment.id).limit(1)) is not None  # nothing was dropped


def _index(demo_archive, demo_model_dir, db):
    from indexer.pipeline import index_archive

    return index_archive(demo_archive.root, db, demo_model_dir, n_jobs=0)


@pytest.fixture(scope="module")
def built(demo_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("fts") / "idx"
    _index(demo_archive, demo_model_dir, db)
    return db


def _sentence(db):
    store = IndexStore.open(db)
    with store.session() as s:
        text = s.scalar(select(Segment.text).where(Segment.text != "").order_by(Segment.id).limit(1))
    store.engine.dispose()
    return text


def test_an_index_from_before_the_fulltext_index_gets_it_on_the_next_run(built, demo_archive, demo_model_dir,
                                                                           tmp_path, caplog):
    db = tmp_path / "idx"
    shutil.copytree(built, db)
    con = sqlite3.connect(db / "elmsearch.sqlite")
    for t in ("_ai", "_ad", "_au"):
        con.execute(f"DROP TRIGGER {FTS_TABLE}{t}")
    con.execute(f"DROP TABLE {FTS_TABLE}")
    con.commit()
    con.close()
    sentence = _sentence(db)
    word = max(sentence.split(), key=len).strip(".,;:")
    store = IndexStore.open(db)  # a reader: warns, answers nothing, writes nothing
    with caplog.at_level(logging.WARNING), store.session() as s:
        assert match_segments(s, [word]) == []
    assert "no full-text index" in caplog.text
    assert "missing" in store.check()
    store.engine.dispose()
    _index(demo_archive, demo_model_dir, db)  # the next writer builds it from the old rows
    store = IndexStore.open(db)
    with store.session() as s:
        assert sentence in _texts(s, match_segments(s, [word]))
    assert store.check() == "ok"


@pytest.fixture
def read_only(built, tmp_path):
    """A copy of the index, read-only (``conftest.read_only_view``)."""
    db = tmp_path / "idx"
    shutil.copytree(built, db)
    with read_only_view(db, tmp_path) as view:
        yield view


def test_a_read_only_copy_answers(read_only):
    word = max(_sentence(read_only).split(), key=len).strip(".,;:")
    store = IndexStore.open(read_only)
    assert store.read_only
    with store.session() as s:
        assert match_segments(s, [word])
    assert store.check() == "ok" and store.audit()["ok"]


def test_verify_catches_a_damaged_fulltext_index_and_rebuild_faiss_repairs_it(built, tmp_path):
    db = tmp_path / "idx"
    shutil.copytree(built, db)
    con = sqlite3.connect(db / "elmsearch.sqlite")
    sid = con.execute("SELECT id FROM segments WHERE text != '' LIMIT 1").fetchone()[0]
    # a sentence changed behind the index's back (the triggers bypassed)
    con.execute(f"DROP TRIGGER {FTS_TABLE}_au")
    con.execute("UPDATE segments SET text = 'zzz unrelated words' WHERE id = ?", (sid,))
    con.execute(f"DELETE FROM {FTS_TABLE}_docsize WHERE id = (SELECT max(id) FROM {FTS_TABLE}_docsize)")
    con.commit()
    con.close()
    res = runner.invoke(app, ["verify", "--db", str(db), "--json"])
    assert res.exit_code != 0
    problems = json.loads(res.stdout)["problems"]
    assert any("full-text index" in p and "--rebuild-faiss" in p for p in problems), problems
    assert "full-text index" in json.loads(runner.invoke(app, ["stats", "--db", str(db), "--json"]).stdout)[
        "consistency"]
    res = runner.invoke(app, ["index", "--rebuild-faiss", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["verify", "--db", str(db)]).exit_code == 0
    store = IndexStore.open(db)
    assert fulltext_problems(store.engine, full=True) == []
    with store.session() as s:
        assert [h.segment_id for h in match_segments(s, ["zzz"])] == [sid]
