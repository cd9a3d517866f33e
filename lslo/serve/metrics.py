"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Queue depth, batch size, rows and tokens translated (rate() of the counters: per second), latency."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.queue_rows = Gauge("lslo_queue_rows", "Rows waiting for a batch", registry=r)
        self.batch_rows = Histogram("lslo_batch_rows", "Rows per generate call", buckets=_ROWS, registry=r)
        self.batch_seconds = Histogram("lslo_batch_seconds", "Seconds per generate call", buckets=_LATENCY, registry=r)
        self.rows = Counter("lslo_rows", "Rows translated", registry=r)
        self.tokens = Counter("lslo_source_tokens", "Source tokens translated", registry=r)
        self.rows_per_s = Gauge("lslo_rows_per_second", "Rows per second of recent batches (EWMA)", registry=r)
        self.tokens_per_s = Gauge("lslo_tokens_per_second", "Source tokens per second of recent batches (EWMA)", registry=r)
        self.latency = Histogram("lslo_request_seconds", "Latency of /translate requests", ["status"],
                                 buckets=_LATENCY, registry=r)  # fmt: skip
        self.rejected = Counter("lslo_rejected", "Requests refused or dropped", ["reason"], registry=r)
        self.ready = Gauge("lslo_ready", "1 once the model is loaded and warmed up", registry=r)

    def batch(self, rows: int, tokens: int, seconds: float, stats: Any) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)
        self.rows.inc(rows)
        self.tokens.inc(tokens)
        self.rows_per_s.set(stats.rows_per_s)
        self.tokens_per_s.set(stats.tokens_per_s)
