"""Uploads streamed to a private file: the body is never held in memory, the size limit holds while reading.

``receive_upload`` parses a ``multipart/form-data`` request body as it arrives (python-multipart's
push parser, the one Starlette uses) and writes the ``file`` part to a fresh ``0600`` file in a
``0700`` folder of the server's own (``private_folder``). It stops reading, and the route answers
413, as soon as more than the limit has arrived; a ``Content-Length`` over the limit is refused
before a byte is read. The file is deleted when the request ends, whatever happens.

``UploadSlots`` bounds the uploads read and processed at once: a request waits for a slot up to
``wait_s`` seconds (its body stays in the kernel's socket buffer meanwhile: uvicorn stops reading a
connection whose body the application does not consume), then gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import anyio
import anyio.to_thread
from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

logger = logging.getLogger(__name__)

SUFFIXES = {".edf", ".bdf"}
FLUSH_BYTES = 1 << 20  # body bytes gathered before one write to the file (in a worker thread)
SLACK_BYTES = 64 << 10  # multipart framing allowed on top of the file in a Content-Length


class UploadRefused(HTTPException):
    """An upload answered before its end (size, type, shape of the body)."""


def private_folder() -> Path:
    """A new folder only this process's user can enter (0700) for upload files."""
    return Path(tempfile.mkdtemp(prefix="elmsearch-serve-"))  # mkdtemp makes it 0700


def remove_folder(folder: Path | None) -> None:
    """Delete an upload folder and anything left in it."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def client_name(raw: bytes | str | None) -> str:
    """The base name of a client's file name (no folders, printable, at most 200 characters)."""
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    name = PureWindowsPath(PurePosixPath(name).name).name  # "C:\\x\\a.edf" and "../a.edf" alike
    return "".join(c for c in name if c.isprintable())[:200]


class UploadSlots:
    """At most ``n`` uploads in flight; the others wait up to ``wait_s`` seconds, then 503.

    Parameters
    ----------
    n : int
        Uploads read and processed at once.
    wait_s : float
        How long a request waits for a slot.
    """

    def __init__(self, n: int = 2, wait_s: float = 60.0):
        self.n, self.wait_s = int(n), float(wait_s)
        self._sem: anyio.Semaphore | None = None  # made in the event loop, on first use

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` body (``UploadRefused`` 503 when none came in time)."""
        if self._sem is None:
            self._sem = anyio.Semaphore(max(self.n, 0)) if self.n > 0 else None
        got = False
        if self._sem is not None:
            with anyio.move_on_after(self.wait_s):
                await self._sem.acquire()
                got = True
        if not got:
            raise UploadRefused(503, f"upload: the server is busy with {self.n} uploads; retry later",
                                headers={"Retry-After": "10"})
        try:
            yield
        finally:
            self._sem.release()


class _Part:
    """What the multipart callbacks collect: the current part's headers and the file part's bytes."""

    def __init__(self):
        self.headers: dict[bytes, bytes] = {}
        self.field = self.value = b""
        self.is_file = False
        self.filename: str | None = None
        self.pending: list[bytes] = []
        self.n_pending = 0
        self.done_file = False
        self.error: str | None = None

    def callbacks(self) -> dict:
        def header_field(data: bytes, start: int, end: int) -> None:
            self.field += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self.value += data[start:end]

        def header_end() -> None:
            self.headers[self.field.lower()] = self.value
            self.field = self.value = b""

        def headers_finished() -> None:
            _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
            if params.get(b"name") == b"file" and not self.done_file and b"filename" in params:
                self.is_file, self.filename = True, client_name(params[b"filename"])
                if Path(self.filename).suffix.lower() not in SUFFIXES:
                    self.error = f"upload: expected an .edf or .bdf file, got {self.filename!r}"

        def part_data(data: bytes, start: int, end: int) -> None:
            if self.is_file:
                self.pending.append(bytes(data[start:end]))
                self.n_pending += end - start

        def part_begin() -> None:
            self.headers, self.is_file = {}, False

        def part_end() -> None:
            if self.is_file:
                self.done_file, self.is_file = True, False

        return {"on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
                "on_header_end": header_end, "on_headers_finished": headers_finished,
                "on_part_data": part_data, "on_part_end": part_end}


@contextlib.asynccontextmanager
async def receive_upload(request: Request, folder: Path, cap: int) -> AsyncIterator[tuple[Path, str]]:
    """Stream a multipart request's ``file`` part to a private file; yield ``(path, client file name)``.

    Parameters
    ----------
    request : Request
        A ``multipart/form-data`` request with a ``file`` part (an .edf or .bdf).
    folder : Path
        The server's private upload folder (``private_folder``).
    cap : int
        Largest file accepted, bytes.

    Raises
    ------
    UploadRefused
        413 over ``cap`` (as soon as it is passed), 400 for no file part, another suffix,
        an empty file or a body that is not multipart. The file is deleted on the way out.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadRefused(400, "upload: send multipart/form-data with a 'file' part (an .edf or .bdf)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap + SLACK_BYTES:
        raise UploadRefused(413, f"upload: over the {cap / 2**20:g} MiB limit")
    part = _Part()
    parser = MultipartParser(params[b"boundary"], part.callbacks())
    fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=folder)  # 0600
    path = Path(tmp)
    written = received = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                received += len(chunk)
                if received > cap + SLACK_BYTES:  # other parts count too
                    raise UploadRefused(413, f"upload: over the {cap / 2**20:g} MiB limit")
                try:
                    parser.write(chunk)
                except ValueError as err:  # python-multipart's MultipartParseError
                    raise UploadRefused(400, f"upload: not a valid multipart body ({err})") from None
                if part.error:
                    raise UploadRefused(400, part.error)
                if written + part.n_pending > cap:
                    raise UploadRefused(413, f"upload: over the {cap / 2**20:g} MiB limit")
                if part.n_pending >= FLUSH_BYTES:
                    written += await _flush(f, part)
            written += await _flush(f, part)
        if part.filename is None:
            raise UploadRefused(400, "upload: no 'file' part in the form")
        if written == 0:
            raise UploadRefused(400, "upload: the file is empty")
        named = path.with_suffix(Path(part.filename).suffix.lower())  # the readers go by the suffix
        path.rename(named)
        path = named
        logger.info("upload %r: %d bytes in %s", part.filename, written, path)
        yield path, part.filename
    finally:
        path.unlink(missing_ok=True)


async def _flush(f, part: _Part) -> int:
    if not part.pending:
        return 0
    data, n = b"".join(part.pending), part.n_pending
    part.pending, part.n_pending = [], 0
    await anyio.to_thread.run_sync(f.write, data)
    return n
