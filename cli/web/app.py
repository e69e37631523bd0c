"""HTTP front end: FastAPI routes over ``indexer.service.SearchService``, and the search page.

Routes only parse parameters, call the service and return its documents unchanged (the
JSON ``elmsearch ... --json`` prints, same keys). Recordings are addressed by id only; no
request parameter becomes a filesystem path. The page (``static/``) is plain HTML, CSS and
JavaScript served from the package: no CDN, no build step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from cli.web import schemas
from elmsearch.errors import ElmsearchError
from indexer.search import QueryError
from indexer.service import MAX_K, SearchService, parse_filters

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


class ClassifyRequest(BaseModel):
    """Body of ``POST /api/classify``."""

    recording_id: int
    prompts: list[str] = Field(min_length=2, description="Class descriptions, two or more, in order.")


def _filters(sex: str | None, age_min: float | None, age_max: float | None, after: dt.date | None,
             before: dt.date | None, montage: str | None, min_duration: float | None):
    return parse_filters(sex, age_min, age_max, after, before, montage, min_duration)


K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of hits.")]
Sex = Annotated[Literal["F", "M", "f", "m"] | None, Query(description="F or M.")]
AgeMin = Annotated[float | None, Query(ge=0, description="Youngest age (years).")]
AgeMax = Annotated[float | None, Query(ge=0, description="Oldest age (years).")]
After = Annotated[dt.date | None, Query(description="Recorded on/after (YYYY-MM-DD).")]
Before = Annotated[dt.date | None, Query(description="Recorded before (YYYY-MM-DD).")]
Montage = Annotated[str | None, Query(max_length=64, description="Montage folder, e.g. 01_tcp_ar.")]
MinDuration = Annotated[float | None, Query(ge=0, description="Shortest recording (s).")]
Start = Annotated[float | None, Query(ge=0, description="Span start (s).")]
End = Annotated[float | None, Query(gt=0, description="Span end (s); at most 60 s after the start.")]


def create_app(service: SearchService, threads: int | None = None) -> FastAPI:
    """The ASGI application answering from ``service``.

    Parameters
    ----------
    service : SearchService
        An open index (loaded once; every request shares it).
    threads : int | None
        Requests answered at once (AnyIO's thread pool, which runs the routes); None: its default.
    """
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        if threads:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(title="elmsearch", version="0.1.0", lifespan=lifespan,
                  description="Search clinical EEG archives by report text and by EEG (read-only).")

    @app.exception_handler(QueryError)
    async def _not_found(_: Request, err: QueryError):
        status = 404 if "no such id" in str(err) or "not in the index" in str(err) else 400
        return JSONResponse({"detail": _line(err)}, status_code=status)

    @app.exception_handler(ElmsearchError)
    async def _bad_input(_: Request, err: ElmsearchError):
        return JSONResponse({"detail": _line(err)}, status_code=400)

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, err: ValueError):
        return JSONResponse({"detail": _line(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in {"query", "body", "path"})
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    # ---- API --------------------------------------------------------------------------------
    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict:
        """Liveness: the index answers."""
        return {"status": "ok", "recordings": service.index.manifest["counts"].get("eeg_recording", 0)}

    @app.get("/api/stats", tags=["meta"], responses={200: {"model": schemas.Stats}})
    def stats():
        """What ``elmsearch stats --json`` prints."""
        return JSONResponse(service.stats())

    @app.get("/api/search", tags=["queries"], responses={200: {"model": schemas.HitsDocument}})
    def search(q: Annotated[str, Query(min_length=1, max_length=2000, description="A description.")],
               k: K = 10, level: Literal["recording", "window"] = "recording", sex: Sex = None,
               age_min: AgeMin = None, age_max: AgeMax = None, after: After = None, before: Before = None,
               montage: Montage = None, min_duration: MinDuration = None):
        """Text → EEG: recordings (or windows) whose EEG matches a description."""
        f = _filters(sex, age_min, age_max, after, before, montage, min_duration)
        return JSONResponse(service.search(q, k, level, f))

    @app.get("/api/recordings/{recording_id}", tags=["recordings"], responses={200: {"model": schemas.Recording}})
    def show(recording_id: int, match: Annotated[str | None, Query(max_length=2000, description=(
            "A text query: adds the report sentence nearest to it."))] = None):
        """Everything stored about a recording (``elmsearch show --json``)."""
        return JSONResponse(service.show(recording_id, match))

    @app.get("/api/recordings/{recording_id}/similar", tags=["queries"],
             responses={200: {"model": schemas.HitsDocument}})
    def similar(recording_id: int, k: K = 10, include_same_patient: bool = False, all_per_patient: bool = False,
                sex: Sex = None, age_min: AgeMin = None, age_max: AgeMax = None, after: After = None,
                before: Before = None, montage: Montage = None, min_duration: MinDuration = None):
        """Prior cases: the most similar recordings (of other patients unless asked)."""
        f = _filters(sex, age_min, age_max, after, before, montage, min_duration)
        return JSONResponse(service.similar(recording_id=recording_id, k=k, include_same_patient=include_same_patient,
                                            one_per_patient=not all_per_patient, filters=f))

    @app.get("/api/recordings/{recording_id}/reports", tags=["queries"],
             responses={200: {"model": schemas.HitsDocument}})
    def reports(recording_id: int, k: K = 5, sex: Sex = None, age_min: AgeMin = None, age_max: AgeMax = None,
                after: After = None, before: Before = None, montage: Montage = None,
                min_duration: MinDuration = None):
        """EEG → report: the reports that best describe a recording, best sentence first."""
        f = _filters(sex, age_min, age_max, after, before, montage, min_duration)
        return JSONResponse(service.reports(recording_id=recording_id, k=k, filters=f))

    @app.post("/api/classify", tags=["queries"], responses={200: {"model": schemas.ClassifyDocument}})
    def classify(body: ClassifyRequest):
        """Zero-shot: the probability of each prompt for a recording, in prompt order."""
        return JSONResponse(service.classify(body.prompts, recording_id=body.recording_id))

    @app.post("/api/upload", tags=["queries"], responses={200: {"model": schemas.UploadDocument}})
    async def upload(file: Annotated[UploadFile, File(description="An EDF or BDF recording.")], k: K = 10):
        """Similar cases and reports for a new EDF; it is never added to the index."""
        cap = service.max_upload_bytes
        data = await file.read(cap + 1)
        if len(data) > cap:
            raise HTTPException(413, f"upload: over the {cap // 2**20} MiB limit")
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(service.upload, data, file.filename or "", k))

    @app.get("/api/recordings/{recording_id}/window.png", tags=["pictures"], response_class=Response)
    def window_png(recording_id: int, start: Start = None, end: End = None):
        """The 20-channel bipolar (TCP) waveform of a span, with labels, time axis and scale bar."""
        return _png(service.window_png(recording_id, start, end))

    @app.get("/api/recordings/{recording_id}/spectrogram.png", tags=["pictures"], response_class=Response)
    def spectrogram_png(recording_id: int, start: Start = None, end: End = None):
        """The spectrogram (0-50 Hz, median over channels) of a span."""
        return _png(service.spectrogram_png(recording_id, start, end))

    # ---- the page ---------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    @app.get("/recordings/{recording_id}", include_in_schema=False)
    @app.get("/recordings/{recording_id}/{view}", include_in_schema=False)
    def page(recording_id: int | None = None, view: Literal["similar", "reports"] | None = None):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
