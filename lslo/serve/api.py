"""The API: LibreTranslate's wire format over a scheduler and an engine (FastAPI).

Routes as LibreTranslate has them: `POST /translate`, `GET /languages`, `POST /detect`,
`GET /frontend/settings`, plus `GET /health` (200 once the model is loaded and warmed up, 503 before and
while draining) and `GET /metrics` (Prometheus). Requests are JSON or form data; errors are
`{"error": "..."}` with LibreTranslate's status codes and wording (400 bad request, 403 bad key, 429 queue
full with `Retry-After`, 503 loading / shutting down / deadline passed). Nothing a client sends reaches a
traceback: every failure is one JSON error and the server goes on.

An extension beyond LibreTranslate: `source` and `target` may be lists, one code per item of `q`.

This module knows nothing of models or batching: it needs an engine that offers `languages`, `pairs()`,
`code()`, `public_code()`, `encode()` and a scheduler that offers `start()`, `submit()`, `close()` (tests
pass fakes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lslo.languages import lookup
from lslo.serve.markup import HtmlError, join_html, split_html
from lslo.serve.metrics import Metrics
from lslo.serve.scheduler import Closed, DeadlineExceeded, Overloaded


@dataclass
class Limits:
    """What one request may ask for."""

    char_limit: int = 5000  # characters of all of q (LibreTranslate's --char-limit)
    batch_limit: int = 128  # items of q (--batch-limit)
    max_alternatives: int = 3
    timeout_s: float = 60.0  # how long a request may wait for its translation
    api_keys: frozenset[str] = field(default_factory=frozenset)  # empty: no key needed

    @property
    def body_limit(self) -> int:
        """Bytes a request body may have: q at its limit, every character escaped (\\uXXXX), and room for the rest."""
        return 12 * self.char_limit + 6 * self.batch_limit + 65536


class ApiError(Exception):
    """An error answered as `{"error": message}` with `status` (and `headers`)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# -- request parsing -----------------------------------------------------------------------------------


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (400) past `limit` bytes without reading further."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"Invalid request: request body ({declared} bytes) exceeds the limit ({limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(400, f"Invalid request: request body exceeds the limit ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _params(request: Request, limit: int) -> dict[str, Any]:
    """The request's fields, from a JSON object or form data (a repeated form field is a list)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":  # browsers' FormData; python-multipart bounds each part
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(400, f"Invalid request: request body ({declared} bytes) exceeds the limit ({limit} bytes)")
        try:
            form = await request.form()
        except Exception as err:  # noqa: BLE001 - any unreadable body is the client's error
            raise ApiError(400, f"Invalid request: unreadable form data ({err})") from None
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    else:
        body = await _body(request, limit)
        if ctype == "application/json":
            try:
                data = json.loads(body or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ApiError(400, f"Invalid request: malformed JSON ({err})") from None
            if not isinstance(data, dict):
                raise ApiError(400, "Invalid JSON format")
            return data
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as err:
            raise ApiError(400, f"Invalid request: unreadable form data ({err})") from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        out[key] = [*out[key], value] if isinstance(out.get(key), list) else [out[key], value] if key in out else value
    return out


def _check_key(params: dict[str, Any], limits: Limits) -> None:
    if not limits.api_keys:
        return
    key = params.get("api_key")
    if not key:
        raise ApiError(403, "Please contact the server operator to get an API key")
    if not isinstance(key, str) or key not in limits.api_keys:
        raise ApiError(403, "Invalid API key")


def _texts(params: dict[str, Any]) -> tuple[list[str], bool]:
    """(the texts of q, whether q was a list)."""
    q = params.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "Invalid request: missing q parameter")
    if isinstance(q, str):
        return [q], False
    if isinstance(q, list) and all(isinstance(t, str) for t in q):
        return list(q), True
    raise ApiError(400, "Invalid request: q must be a string or a list of strings")


def _codes(params: dict[str, Any], name: str, n: int) -> list[str]:
    """`source`/`target`: one code for every item, or (an extension) a list with one code per item."""
    value = params.get(name)
    if value is None or value == "" or value == []:
        raise ApiError(400, f"Invalid request: missing {name} parameter")
    if isinstance(value, str):
        return [value] * n
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        if len(value) != n:
            raise ApiError(400, f"Invalid request: {name} has {len(value)} codes for {n} texts; give one code or one per text")
        return list(value)
    raise ApiError(400, f"Invalid request: {name} must be a language code or a list of codes")


def _alternatives(params: dict[str, Any], limits: Limits) -> int:
    value = params.get("alternatives", 0)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "Invalid request: alternatives must be an integer")
    if not 0 <= value <= limits.max_alternatives:
        raise ApiError(400, f"Invalid request: alternatives must be between 0 and {limits.max_alternatives}")
    return value


# -- the service --------------------------------------------------------------------------------------


class Service:
    """What the routes share: engine, scheduler, detector, limits, metrics and the readiness state."""

    def __init__(self, load: Callable[[], tuple[Any, Any]], limits: Limits, detector: Callable[[Any], Any] | None = None,
                 metrics: Metrics | None = None, warmup: bool = True) -> None:  # fmt: skip
        self.load, self.limits, self.make_detector, self.warmup = load, limits, detector, warmup
        self.metrics = metrics or Metrics()
        self.engine: Any = None
        self.scheduler: Any = None
        self.detector: Any = None
        self.state = "loading"  # loading -> ready -> draining; "failed" when loading failed
        self.failure: str | None = None

    async def start(self) -> None:
        try:
            self.engine, self.scheduler = await asyncio.to_thread(self.load)
            if self.make_detector is not None:
                self.detector = await asyncio.to_thread(self.make_detector, self.engine)
            self.scheduler.start()
            if self.warmup and self.engine.languages:
                src = self.engine.languages[0]
                tgt = next((t for t in self.engine.pairs().get(src, [])), None)
                if tgt is not None:
                    await self.scheduler.submit(self.engine.encode(["warm up"], [src], [tgt]))
        except Exception as err:  # noqa: BLE001 - /health says why; the process stays up to say it
            self.state, self.failure = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return
        self.state = "ready"
        self.metrics.ready.set(1)

    async def stop(self) -> None:
        self.state = "draining"
        self.metrics.ready.set(0)
        if self.scheduler is not None:
            await self.scheduler.close()

    def require_ready(self) -> None:
        if self.state == "loading":
            raise ApiError(503, "The model is loading; retry later", {"Retry-After": "5"})
        if self.state == "failed":
            raise ApiError(503, f"The model failed to load ({self.failure})")
        if self.state == "draining":
            raise ApiError(503, "The server is shutting down")

    # -- languages ---------------------------------------------------------------------------------
    def language(self, asked: str, detected: bool = False) -> str:
        code = self.engine.code(asked)
        if code is None:
            raise ApiError(400, f"{asked} is not supported")
        return code

    def name(self, code: str) -> str:
        lang = lookup(code)
        return lang.name if lang is not None else code

    def check_pair(self, src: str, tgt: str) -> None:
        if tgt not in self.engine.pairs().get(src, []):
            pub = self.engine.public_code
            raise ApiError(400, f"{self.name(tgt)} ({pub(tgt)}) is not available as a target language from "
                                f"{self.name(src)} ({pub(src)})")  # fmt: skip

    def detect(self, text: str) -> list[dict[str, Any]]:
        if self.detector is None or not self.detector.available:
            raise ApiError(400, "Invalid request: this server cannot detect languages; give source")
        pub = self.engine.public_code
        return [{"confidence": round(100 * p, 2), "language": pub(c)} for c, p in self.detector.rank(text)]


# -- routes (each finds the service on the app) -------------------------------------------------------


def _service(request: Request) -> Service:
    return request.app.state.service


async def health(request: Request) -> JSONResponse:
    service = _service(request)
    body = {"status": "ok" if service.state == "ready" else service.state}
    if service.failure:
        body["error"] = service.failure
    return JSONResponse(body, status_code=200 if service.state == "ready" else 503)


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(_service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def languages(request: Request) -> JSONResponse:
    service = _service(request)
    service.require_ready()
    pub = service.engine.public_code
    pairs = service.engine.pairs()
    return JSONResponse([{"code": pub(s), "name": service.name(s), "targets": [pub(t) for t in ts]} for s, ts in pairs.items()])


async def frontend_settings(request: Request) -> JSONResponse:
    service = _service(request)
    service.require_ready()
    pub = service.engine.public_code
    langs = service.engine.languages
    target = langs[1] if len(langs) > 1 else langs[0] if langs else None
    lim = service.limits
    return JSONResponse({
        "charLimit": lim.char_limit, "frontendTimeout": int(lim.timeout_s * 1000), "apiKeys": bool(lim.api_keys),
        "keyRequired": bool(lim.api_keys), "suggestions": False, "filesTranslation": False, "supportedFilesFormat": [],
        "language": {"source": {"code": "auto", "name": "Auto Detect"},
                     "target": {"code": pub(target), "name": service.name(target)} if target else None},
    })  # fmt: skip


async def detect(request: Request) -> JSONResponse:
    service = _service(request)
    service.require_ready()
    params = await _params(request, service.limits.body_limit)
    _check_key(params, service.limits)
    q = params.get("q")
    if not q or not isinstance(q, str):
        raise ApiError(400, "Invalid request: missing q parameter")
    if len(q) > service.limits.char_limit:
        raise ApiError(400, f"Invalid request: request ({len(q)}) exceeds text limit ({service.limits.char_limit})")
    return JSONResponse(service.detect(q))


async def translate(request: Request) -> JSONResponse:
    service = _service(request)
    start = time.perf_counter()
    status = "error"
    try:
        service.require_ready()
        params = await _params(request, service.limits.body_limit)
        _check_key(params, service.limits)
        job = _Job.parse(service, params)
        results = await _submit(service, request, job.rows, job.alternatives) if job.rows[0] else []
        status = "200"
        return JSONResponse(job.answer(results))
    except ApiError as err:
        status = str(err.status)
        raise
    finally:
        service.metrics.latency.labels(status).observe(time.perf_counter() - start)


@dataclass
class _Job:
    """One /translate request, checked: its texts, languages, format, and the rows it becomes."""

    texts: list[str]
    batch: bool  # q was a list
    srcs: list[str]  # model codes
    tgts: list[str]
    detected: list[dict[str, Any] | None]  # per text, for source "auto"
    layouts: list[list[tuple[bool, str]] | None]  # html parts per text (None: plain text)
    alternatives: int
    rows: tuple[list[str], list[str], list[str]] = ([], [], [])  # texts, sources, targets: one per text or text node

    @classmethod
    def parse(cls, service: Service, params: dict[str, Any]) -> _Job:
        lim = service.limits
        texts, batch = _texts(params)
        if len(texts) > lim.batch_limit:
            raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit ({lim.batch_limit})")
        chars = sum(len(t) for t in texts)
        if chars > lim.char_limit:
            raise ApiError(400, f"Invalid request: request ({chars}) exceeds text limit ({lim.char_limit})")
        sources = _codes(params, "source", len(texts))
        tgts = [service.language(t) for t in _codes(params, "target", len(texts))]
        fmt = params.get("format") or "text"
        if fmt not in ("text", "html"):
            raise ApiError(400, f"{fmt} format is not supported")
        alternatives = _alternatives(params, lim)
        detected: list[dict[str, Any] | None] = [None] * len(texts)
        srcs = []
        for k, (asked, text) in enumerate(zip(sources, texts, strict=True)):
            if asked == "auto":
                ranked = service.detect(text)
                if not ranked:
                    raise ApiError(400, "Invalid request: cannot detect the language of the text; give source")
                detected[k] = ranked[0]
                asked = ranked[0]["language"]
            srcs.append(service.language(asked))
        for src, tgt in zip(srcs, tgts, strict=True):
            service.check_pair(src, tgt)
        try:
            layouts = [split_html(text) if fmt == "html" else None for text in texts]
        except HtmlError as err:
            raise ApiError(400, str(err)) from None
        job = cls(texts, batch, srcs, tgts, detected, layouts, alternatives)
        job.rows = job._rows()
        return job

    def _rows(self) -> tuple[list[str], list[str], list[str]]:
        out: tuple[list[str], list[str], list[str]] = ([], [], [])
        for text, src, tgt, parts in zip(self.texts, self.srcs, self.tgts, self.layouts, strict=True):
            pieces = [c.strip() for is_text, c in parts if is_text] if parts is not None else [text]
            out[0].extend(pieces)
            out[1].extend([src] * len(pieces))
            out[2].extend([tgt] * len(pieces))
        return out

    def answer(self, results: list[list[str]]) -> dict[str, Any]:
        """The LibreTranslate answer: translatedText (+ detectedLanguage, alternatives), rows put back in place."""
        out, alts, k = [], [], 0
        for parts in self.layouts:
            n = sum(1 for is_text, _ in parts if is_text) if parts is not None else 1
            mine = results[k : k + n]
            k += n
            if parts is None:
                out.append(mine[0][0])
                alts.append(mine[0][1:])
            else:
                out.append(join_html(parts, [r[0] for r in mine]))
                alts.append([join_html(parts, [r[min(a, len(r) - 1)] for r in mine]) for a in range(1, self.alternatives + 1)])
        body: dict[str, Any] = {"translatedText": out if self.batch else out[0]}
        if any(d is not None for d in self.detected):
            body["detectedLanguage"] = self.detected if self.batch else self.detected[0]
        if self.alternatives:
            body["alternatives"] = alts if self.batch else alts[0]
        return body


async def _submit(service: Service, request: Request, rows: tuple[list[str], list[str], list[str]],
                  alternatives: int) -> list[list[str]]:  # fmt: skip
    """The rows' translations; a client that disconnects meanwhile has its rows dropped from the queue."""
    encoded = await asyncio.to_thread(service.engine.encode, *rows, alternatives)
    task = asyncio.ensure_future(service.scheduler.submit(encoded, timeout_s=service.limits.timeout_s))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            if await request.is_disconnected():
                service.metrics.rejected.labels("disconnected").inc()
                raise ApiError(499, "Client closed the request")
    except Overloaded as err:
        raise ApiError(429, f"Slowdown: {err}", {"Retry-After": str(err.retry_after)}) from None
    except DeadlineExceeded as err:
        raise ApiError(503, f"Timeout: {err}", {"Retry-After": "1"}) from None
    except Closed:
        raise ApiError(503, "The server is shutting down") from None
    finally:
        if not task.done():
            task.cancel()


# -- the app ------------------------------------------------------------------------------------------


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of `service` (its lifespan loads the model, warms it up and drains on shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        starting = asyncio.create_task(service.start())
        try:
            yield
        finally:
            await starting
            await service.stop()

    app = FastAPI(title="lslo serve (LibreTranslate API)", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def any_error(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"Cannot translate text: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    @app.middleware("http")
    async def cors(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    for path, route, methods in (("/health", health, ["GET"]), ("/metrics", metrics, ["GET"]),
                                 ("/languages", languages, ["GET"]), ("/frontend/settings", frontend_settings, ["GET"]),
                                 ("/detect", detect, ["POST"]), ("/translate", translate, ["POST"])):  # fmt: skip
        app.add_api_route(path, route, methods=methods)
    return app
