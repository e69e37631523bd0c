"""HTTP front end: FastAPI routes over ``indexer.service.SearchService``, and the search page.

Routes only parse parameters, call the service and return its documents unchanged (the
JSON ``elmsearch ... --json`` prints, same keys). Recordings are addressed by id only; no
request parameter becomes a filesystem path. The page (``static/``) is plain HTML, CSS and
JavaScript served from the package: no CDN, no build step.

Only loopback ``Host`` names (and ``allow_hosts``) are answered and unsafe methods refuse a
foreign ``Origin`` (``cli.web.guard``); uploads are streamed to a private file, at most two at
once (``cli.web.upload``); error messages never show a server path (``public_message``: the
full message goes to the server's log).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import anyio.to_thread
import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cli.web import schemas
from cli.web.guard import HostGuard, allowed_hosts
from cli.web.upload import UploadSlots, private_folder, receive_upload, remove_folder
from elmsearch.errors import ElmsearchError
from elmsearch.io.display import DISPLAY_RATE, MONTAGES
from indexer.filters import FILTERS, SOURCES, FilterError, FilterField, parse_filters
from indexer.search import Filters, NotFoundError, QueryError
from indexer.service import MAX_K, REPORT_PAGE_CHARS, SearchService

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


class ClassifyRequest(BaseModel):
    """Body of ``POST /api/classify``."""

    recording_id: int
    prompts: list[str] = Field(min_length=2, description="Class descriptions, two or more, in order.")
    windows: float | None = Field(None, ge=0, le=100, description=(
        "Each score's 'minutes': how much of the recording a finding must hold in, as a percentile of its "
        "windows (None: 100, one window; 50: half the recording). The first prompt is the background."))


UploadId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="An upload's upload_id.")]


class SignalParams:
    """The query parameters of a signal route (``SearchService.signal``)."""

    def __init__(
        self,
        start: Annotated[float, Query(ge=0, description="Span start (s).")] = 0.0,
        end: Annotated[float | None, Query(gt=0, description=(
            "Span end (s; default start + 10); an end past the recording stops at its end."))] = None,
        montage: Annotated[Literal[tuple(MONTAGES)], Query(description=(
            "bipolar (double banana), transverse, average, cz, ears, or recorded (every channel "
            "as recorded)."))] = "bipolar",
        lff: Annotated[str, Query(description="Low-frequency filter in Hz, or off.")] = "1",
        hff: Annotated[str, Query(description="High-frequency filter in Hz, or off.")] = "70",
        notch: Annotated[Literal["50", "60", "off"], Query(description="Notch filter.")] = "off",
        rate: Annotated[str, Query(description=(
            "Display rate at most, Hz, or native (the file's own rate)."))] = str(int(DISPLAY_RATE)),
        format: Annotated[Literal["binary", "json"], Query(description=(  # noqa: A002 -- the API's name
            "binary: a 4-byte little-endian header length, the JSON header, then float32 little-endian "
            "samples in µV, channel after channel; json: the header with the samples as arrays."))] = "binary",
    ):
        self.start, self.end, self.montage, self.format = start, end, montage, format
        self.lff, self.hff = _hz(lff, "lff"), _hz(hff, "hff")
        self.notch = None if notch == "off" else float(notch)
        self.rate = None if rate == "native" else _hz(rate, "rate")

    def args(self) -> tuple:
        """``(start_s, end_s, montage, lff, hff, notch, rate)`` for the service."""
        return self.start, self.end, self.montage, self.lff, self.hff, self.notch, self.rate


def _signal_response(header: dict, data: np.ndarray, format: str) -> Response:  # noqa: A002
    if format == "json":
        return JSONResponse({**header, "data": [[round(float(v), 3) for v in row] for row in data]})
    head = json.dumps(header).encode()
    body = len(head).to_bytes(4, "little") + head + np.ascontiguousarray(data, "<f4").tobytes()
    return Response(body, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=60"})


def _query_parameter(field: FilterField):
    bounds = {k: v for k, v in (("ge", field.ge), ("max_length", field.max_length)) if v is not None}
    return Annotated[field.kind | None, Query(description=field.help, **bounds)]


def _filters(**values) -> Filters:
    return parse_filters(**values)


# the query parameters of every filter, from the one table the CLI's options come from too
_filters.__signature__ = inspect.Signature([
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_query_parameter(f))
    for f in FILTERS])
QueryFilters = Annotated[Filters, Depends(_filters)]


K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of hits.")]
Start = Annotated[float | None, Query(ge=0, description="Span start (s).")]
End = Annotated[float | None, Query(gt=0, description="Span end (s); at most 60 s after the start.")]


def _hz(value: str, name: str) -> float | None:
    """A filter or rate parameter: a number of Hz, or off (None)."""
    if value.strip().lower() in ("off", "none", ""):
        return None
    try:
        hz = float(value)
    except ValueError:
        raise QueryError(f"{name}: expected a number of Hz or off, got {value!r}") from None
    if not (0 < hz < 1e5):
        raise QueryError(f"{name}: expected a positive number of Hz, got {value!r}")
    return hz


def create_app(service: SearchService, threads: int | None = None, host: str | None = "127.0.0.1",
               allow_hosts: Iterable[str] = (), upload_slots: int = 2, upload_wait_s: float = 60.0) -> FastAPI:
    """The ASGI application answering from ``service``.

    Parameters
    ----------
    service : SearchService
        An open index (loaded once; every request shares it).
    threads : int | None
        Requests answered at once (AnyIO's thread pool, which runs the routes); None: its default.
    host : str | None
        The address the server listens on: answered as a ``Host`` name besides the loopback
        names, unless it is an any-address (0.0.0.0, ::).
    allow_hosts : iterable of str
        More ``Host`` names to answer (``elmsearch serve --allow-host``).
    upload_slots : int
        Uploads read and processed at once; more wait ``upload_wait_s`` seconds for a slot,
        then get 503 with ``Retry-After``.
    """
    slots = UploadSlots(upload_slots, upload_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI):
        if threads:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        try:
            yield
        finally:
            service.uploads.close()
            remove_folder(app_.state.upload_dir)
            app_.state.upload_dir = None

    # /docs and /redoc from files shipped in the fastapi-offline package: no CDN, they work offline
    app = FastAPIOffline(title="elmsearch", version="0.1.0", lifespan=lifespan,
                         description="Search clinical EEG archives by report text and by EEG (read-only).")
    app.state.upload_dir = None  # a private 0700 folder, made on the first upload
    app.state.upload_slots = slots
    app.add_middleware(HostGuard, allowed=allowed_hosts(host, allow_hosts))
    private = [(str(service.folder.resolve()), "the index"), (str(service.folder), "the index"),
               (str(Path(tempfile.gettempdir()).resolve()), "(temporary folder)")]

    def error(status: int, err: Exception | str, replace: Iterable[tuple[str, str]] = (), headers=None):
        full = _line(err) if isinstance(err, Exception) else str(err)
        detail = public_message(full, [*replace, *private])
        if detail != full:
            logger.info("answered %d: %s (in full: %s)", status, detail, full)
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(NotFoundError)
    async def _no_such_id(_: Request, err: NotFoundError):
        return error(404, err)

    @app.exception_handler(QueryError)
    async def _bad_query(_: Request, err: QueryError):
        return error(400, err)

    @app.exception_handler(ElmsearchError)
    async def _bad_input(_: Request, err: ElmsearchError):
        return error(400, err)

    @app.exception_handler(FilterError)
    async def _bad_filter(_: Request, err: FilterError):
        return error(422, err)

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, err: ValueError):
        return error(400, err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException):
        return error(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        logger.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return JSONResponse({"detail": "internal error (the server's log has the details)"}, status_code=500)

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
               f: QueryFilters, k: K = 10, level: Literal["recording", "window"] = "recording",
               source: Annotated[Literal[SOURCES], Query(description=(
                   "hybrid: what the reports say (negation-aware) and the EEG, fused; reports; eeg."))
                                 ] = "hybrid"):
        """Text → EEG: recordings (or windows) whose reports and EEG match a description, each with why."""
        return JSONResponse(service.search(q, k, level, f, source))

    @app.get("/api/recordings/{recording_id}", tags=["recordings"], responses={200: {"model": schemas.Recording}})
    def show(recording_id: int, match: Annotated[str | None, Query(max_length=2000, description=(
            "A text query: adds the report sentence nearest to it."))] = None,
             offset: Annotated[int, Query(ge=0, description="First report character returned.")] = 0,
             limit: Annotated[int, Query(ge=1, le=10 * REPORT_PAGE_CHARS, description=(
                 "Report characters returned (the report's `next` is the offset of the next page)."))
                              ] = REPORT_PAGE_CHARS):
        """Everything stored about a recording (``elmsearch show --json``), its report paged."""
        return JSONResponse(service.show(recording_id, match, offset, limit))

    @app.get("/api/recordings/{recording_id}/events", tags=["recordings"],
             responses={200: {"model": schemas.EventsDocument}})
    def events(recording_id: int):
        """The events of a recording (annotations, markers, label files), by onset, and what could not be read."""
        return JSONResponse(service.events(recording_id))

    @app.get("/api/recordings/{recording_id}/similar", tags=["queries"],
             responses={200: {"model": schemas.HitsDocument}})
    def similar(recording_id: int, f: QueryFilters, k: K = 10, include_same_patient: bool = False,
                all_per_patient: bool = False):
        """Prior cases: the most similar recordings (of other patients unless asked)."""
        return JSONResponse(service.similar(recording_id=recording_id, k=k, include_same_patient=include_same_patient,
                                            one_per_patient=not all_per_patient, filters=f))

    @app.get("/api/recordings/{recording_id}/reports", tags=["queries"],
             responses={200: {"model": schemas.HitsDocument}})
    def reports(recording_id: int, f: QueryFilters, k: K = 5):
        """EEG → report: the reports that best describe a recording, best sentence first."""
        return JSONResponse(service.reports(recording_id=recording_id, k=k, filters=f))

    @app.post("/api/classify", tags=["queries"], responses={200: {"model": schemas.ClassifyDocument}})
    def classify(body: ClassifyRequest):
        """Zero-shot: the probability of each prompt for a recording, in prompt order."""
        return JSONResponse(service.classify(body.prompts, recording_id=body.recording_id, windows=body.windows))

    @app.post("/api/upload", tags=["queries"], responses={200: {"model": schemas.UploadDocument}},
              openapi_extra=UPLOAD_BODY)
    async def upload(request: Request, k: K = 10, keep: Annotated[bool, Query(description=(
            "Keep the file and its answers for this session (an hour after their last use): the answer's "
            "upload_id then names them (/api/uploads/{upload_id}, its /signal, and the page /uploads/{upload_id})."
            ))] = False):
        """Similar cases and reports for a new EDF; it is never added to the index.

        The body is streamed to a private file (never held in memory) and refused with 413 as
        soon as it passes ``--max-upload-mb``; at most ``upload_slots`` uploads are handled at
        once (the others wait, then get 503 with ``Retry-After``). The file is deleted when the
        answer is sent, unless ``keep``.
        """
        async with slots.slot():
            if app.state.upload_dir is None:
                app.state.upload_dir = private_folder()
            async with receive_upload(request, app.state.upload_dir, service.max_upload_bytes) as (path, name):
                try:
                    doc = await run_in_threadpool(service.upload_file, path, name, k, None, keep)
                except (ElmsearchError, ValueError) as err:
                    return error(400, err, [(str(path), name)])
        return JSONResponse(doc)

    @app.get("/api/recordings/{recording_id}/signal", tags=["recordings"], response_class=Response)
    def signal(recording_id: int, p: Annotated[SignalParams, Depends()]):
        """A span of the raw signal in a montage, filtered for display (the page draws it)."""
        return _signal_response(*service.signal(recording_id, *p.args()), p.format)

    @app.get("/api/uploads/{upload_id}", tags=["uploads"], responses={200: {"model": schemas.UploadDocument}})
    def upload_document(upload_id: UploadId):
        """The answers of an upload sent with ``keep=true``, as they were given (while it is kept)."""
        return JSONResponse(service.upload_document(upload_id))

    @app.get("/api/uploads/{upload_id}/signal", tags=["uploads"], response_class=Response)
    def upload_signal(upload_id: UploadId, p: Annotated[SignalParams, Depends()]):
        """The signal of an upload sent with ``keep=true`` (as ``/api/recordings/{id}/signal``)."""
        return _signal_response(*service.upload_signal(upload_id, *p.args()), p.format)

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
    @app.get("/uploads/{upload_id}", include_in_schema=False)
    def page(recording_id: int | None = None, view: Literal["similar", "reports"] | None = None,
             upload_id: UploadId | None = None):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "An EDF or BDF recording."}}}}}}}

# An absolute POSIX path: a "/" not preceded by a word character, a dot, "~", ":" or another "/"
# (so "F/M", "1/2", "http://" are left alone), up to a space, quote, bracket or separator.
_ABS_PATH = re.compile(r"(?<![\w.~:/-])/[^\s'\"()\[\]{},;]+")


def public_message(message: str, replace: Iterable[tuple[str, str]] = ()) -> str:
    """An error message fit for an HTTP client: no server path in it.

    Each ``(text, by)`` of ``replace`` is substituted first (the upload's temporary file by the
    client's file name, the index folder by "the index"); any absolute path left (an archive
    file in a failure reason) is cut to its last component.
    """
    for text, by in sorted(replace, key=lambda p: -len(p[0])):
        if text and text != "/":
            message = message.replace(text, by)
    return _ABS_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "…", message)


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
