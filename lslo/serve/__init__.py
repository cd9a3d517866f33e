"""`lslo serve`: every direction of a model from one process, behind the LibreTranslate API.

Three parts, each testable alone: `api` (the wire format), `scheduler` (the batching policy) and `engine`
(the model: one routed generate for rows of any directions). `serve()` puts them together under uvicorn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServeSettings:
    """Everything `lslo serve` can set (the CLI's flags)."""

    model: str
    base: str | None = None
    tokenizer: str | None = None
    compute_type: str = "default"
    host: str = "127.0.0.1"
    port: int = 5000
    beams: int = 5
    max_new_tokens: int = 256
    max_source_tokens: int = 256
    precision: str = "fp32"
    max_batch_tokens: int = 4096
    max_batch_rows: int = 64
    max_wait_ms: float = 10.0
    max_queue_rows: int = 512
    timeout_s: float = 60.0
    char_limit: int = 5000
    batch_limit: int = 128
    max_alternatives: int = 3
    api_keys: list[str] = field(default_factory=list)
    threads: int | None = None
    languages: list[str] | None = None  # serve only these codes (default: every language the model holds)
    batching: str = "mixed"  # mixed | direction (one direction per batch, LoRAs merged) | single (one text per batch)
    log_level: str = "warning"


def build_app(settings: ServeSettings, engine_loader: Any = None, metrics: Any = None) -> Any:
    """The FastAPI app for `settings`: the model loads (and warms up) in the app's lifespan, in the background."""
    from lslo.serve.api import Limits, Service, create_app
    from lslo.serve.langid import LanguageDetector
    from lslo.serve.metrics import Metrics
    from lslo.serve.scheduler import Scheduler

    metrics = metrics or Metrics()
    if settings.batching not in ("mixed", "direction", "single"):
        raise ValueError(f"batching: {settings.batching!r}; choose mixed, direction or single")
    by_direction = settings.batching == "direction"

    def load() -> tuple[Any, Any]:
        from lslo.serve.engine import load_engine

        engine = (engine_loader or load_engine)(
            settings.model, base=settings.base, tokenizer=settings.tokenizer, compute_type=settings.compute_type,
            num_beams=settings.beams, max_new_tokens=settings.max_new_tokens,
            max_source_tokens=settings.max_source_tokens, precision=settings.precision, merge=by_direction,
            languages=settings.languages,
        )  # fmt: skip
        scheduler = Scheduler(
            engine.translate, max_batch_tokens=settings.max_batch_tokens, max_batch_rows=settings.max_batch_rows,
            max_wait_s=settings.max_wait_ms / 1000, max_queue_rows=settings.max_queue_rows,
            timeout_s=settings.timeout_s, metrics=metrics,
            group=(lambda r: (r.src, r.tgt, r.alternatives)) if by_direction else None,
        )  # fmt: skip
        if settings.batching == "single":
            scheduler.max_batch_rows = 1
        return engine, scheduler

    limits = Limits(char_limit=settings.char_limit, batch_limit=settings.batch_limit,
                    max_alternatives=settings.max_alternatives, timeout_s=settings.timeout_s,
                    api_keys=frozenset(settings.api_keys))  # fmt: skip
    return create_app(Service(load, limits, detector=lambda e: LanguageDetector(e.languages), metrics=metrics))


def serve(settings: ServeSettings) -> None:
    """Run the server until SIGTERM/SIGINT; then finish the requests in flight and exit."""
    import uvicorn

    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    from lslo.serve.engine import load_engine

    # Load before listening: a bad model path is a one-line error, not a server that never gets ready.
    engine = load_engine(settings.model, base=settings.base, tokenizer=settings.tokenizer,
                         compute_type=settings.compute_type, num_beams=settings.beams,
                         max_new_tokens=settings.max_new_tokens, max_source_tokens=settings.max_source_tokens,
                         precision=settings.precision, merge=settings.batching == "direction",
                         languages=settings.languages)  # fmt: skip
    app = build_app(settings, engine_loader=lambda *a, **k: engine)
    print(f"lslo serve: {settings.model} on http://{settings.host}:{settings.port} (GET /health says when it is ready)",
          flush=True)  # fmt: skip
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=int(settings.timeout_s) + 5)  # fmt: skip
