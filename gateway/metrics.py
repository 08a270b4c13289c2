"""`GET /metrics`: Prometheus text, written with prometheus_client.

The gateway counts what it sees (requests, tokens, time to first token,
decode rate); loaded models and queue depth are read from the supervisor's
``ps`` at scrape time, so they are never stale.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "corral_http_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter("corral_generated_tokens", "Tokens generated for HTTP requests", registry=self.registry)
        self.ttft = Histogram(
            "corral_time_to_first_token_seconds",
            "From a generation request's arrival to its first token (model loads included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.decode_rate = Histogram(
            "corral_decode_tokens_per_second",
            "Decode rate of each finished generation",
            buckets=(1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 5000, 20000),
            registry=self.registry,
        )
        self.loaded = Gauge("corral_loaded_models", "Models with a worker process", registry=self.registry)
        self.queued = Gauge("corral_queue_depth", "Requests waiting for a worker, by model", ["model"], registry=self.registry)
        self.in_flight = Gauge("corral_http_in_flight", "Generations the gateway is streaming now", registry=self.registry)
        self._seen_models: set[str] = set()

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def generation_ended(self, ttft_s: float | None, completion_tokens: int, tokens_per_s: float) -> None:
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if completion_tokens:
            self.tokens.inc(completion_tokens)
        if tokens_per_s > 0:
            self.decode_rate.observe(tokens_per_s)

    def set_models(self, rows: list[dict]) -> None:
        """Loaded-model and queue gauges from ``ps`` rows."""
        self.loaded.set(len({r.get("replica_of") or r["model"] for r in rows if r.get("pid")}))
        queued: dict[str, int] = {}
        for r in rows:
            name = r.get("replica_of") or r["model"]
            queued[name] = max(queued.get(name, 0), int(r.get("queued") or 0))  # replicas share one queue
        for gone in self._seen_models - set(queued):
            self.queued.remove(gone)
        for name, depth in queued.items():
            self.queued.labels(name).set(depth)
        self._seen_models = set(queued)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
