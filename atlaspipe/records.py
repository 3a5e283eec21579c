"""Run records in Redis: the plan, per-chunk results stored by reference, progress and state.

Chunk histograms are kept here under the run and chunk id instead of travelling through the chord,
so no message or stored value grows with the number of chunks. A chunk result is written with
HSETNX: a chunk delivered twice is counted once.

Redis may lose everything (it keeps nothing on disk here), so the run folder holds a copy of the
request and the plan (``request.json``, ``plan.json``): ``atlaspipe-submit resume`` rebuilds the
records from them and reruns whatever chunks have no stored result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from atlaspipe.chunks import Chunk
from atlaspipe.errors import AtlaspipeError
from atlaspipe.planning import RunPlan

RECORD_TTL_SECONDS = 7 * 24 * 3600
_PREFIX = "atlaspipe:run:"
_RUN_INDEX = "atlaspipe:runs"
TERMINAL_STATES = frozenset({"succeeded", "failed", "partial"})
CLAIM_TTL_SECONDS = 3600
"""How long a completion claim holds; a claimer that dies is replaced by ``resume`` after this."""
REQUEST_COPY = "request.json"
PLAN_COPY = "plan.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunRecords:
    """Access to the records of every run, through one Redis connection pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        # redis-py's annotations mix bytes and str replies; replies here are always bytes.
        # Retries with backoff ride out a Redis restart of a few seconds without failing a task.
        self.redis: Any = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 8),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise AtlaspipeError(f"result backend {_safe(self.url)} unreachable: {exc}") from None

    def _key(self, run_id: str, part: str) -> str:
        return f"{_PREFIX}{run_id}:{part}"

    def _touch(self, pipe: Any, run_id: str, *parts: str) -> None:
        for part in parts:
            pipe.expire(self._key(run_id, part), RECORD_TTL_SECONDS)

    def create(self, run_id: str, request: dict[str, Any], state: str = "submitted") -> None:
        """Register a run before it is planned, so ``status`` and ``list`` see it at once."""
        pipe = self.redis.pipeline()
        pipe.hset(self._key(run_id, "meta"), mapping={
            "request": json.dumps(request), "state": state, "created": request.get("created") or _now(),
            "updated": _now(), "chunks_total": 0, "chunks_failed": 0, "events_read": 0, "message": "",
            "generation": 0,
        })
        pipe.zadd(_RUN_INDEX, {run_id: time.time()})
        self._touch(pipe, run_id, "meta")
        pipe.execute()

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(self._key(run_id, "meta")))

    def request(self, run_id: str) -> dict[str, Any]:
        raw = self.redis.hget(self._key(run_id, "meta"), "request")
        if raw is None:
            raise AtlaspipeError(f"unknown run id '{run_id}' (no record in {_safe(self.url)})")
        loaded: dict[str, Any] = json.loads(raw)
        return loaded

    def set_state(self, run_id: str, state: str, **fields: Any) -> None:
        mapping = {"state": state, "updated": _now(), **{k: _flat(v) for k, v in fields.items()}}
        pipe = self.redis.pipeline()
        pipe.hset(self._key(run_id, "meta"), mapping=mapping)
        self._touch(pipe, run_id, "meta")
        pipe.execute()

    def meta(self, run_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(self._key(run_id, "meta"))
        # Without a state the hash holds only counters bumped by chunks that finished after the
        # backend lost the run (a Redis restart): the run itself is unknown there.
        if not raw or b"state" not in raw:
            raise AtlaspipeError(f"unknown run id '{run_id}' (no record in {_safe(self.url)})")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def save_plan(self, plan: RunPlan) -> None:
        """The plan's description in one value and its chunks in a hash, one field per chunk."""
        pipe = self.redis.pipeline()
        pipe.set(self._key(plan.run_id, "plan"), json.dumps(plan.to_dict(with_chunks=False)))
        chunks_key = self._key(plan.run_id, "chunks")
        pipe.delete(chunks_key)
        for start in range(0, len(plan.chunks), 1000):
            batch = plan.chunks[start:start + 1000]
            pipe.hset(chunks_key, mapping={str(c.chunk_id): json.dumps(c.to_dict()) for c in batch})
        pipe.hset(self._key(plan.run_id, "meta"), mapping={"chunks_total": len(plan.chunks), "updated": _now()})
        self._touch(pipe, plan.run_id, "plan", "chunks", "meta")
        pipe.execute()

    def load_plan(self, run_id: str) -> RunPlan:
        raw = self.redis.get(self._key(run_id, "plan"))
        if raw is None:
            raise AtlaspipeError(f"run '{run_id}' has no plan (not planned yet, or its records expired)")
        chunks = [Chunk.from_dict(json.loads(v)) for v in self.redis.hvals(self._key(run_id, "chunks"))]
        chunks.sort(key=lambda c: c.chunk_id)
        return RunPlan.from_dict(json.loads(raw), chunks)

    def save_chunk_result(self, run_id: str, result: dict[str, Any]) -> bool:
        """Store a chunk's result unless one is stored already; True if this one counted."""
        key = self._key(run_id, "results")
        stored = bool(self.redis.hsetnx(key, str(result["chunk_id"]), json.dumps(result)))
        if stored:
            meta = self._key(run_id, "meta")
            pipe = self.redis.pipeline()
            if "error" in result:
                pipe.hincrby(meta, "chunks_failed", 1)
            else:
                pipe.hincrby(meta, "events_read", int(result["events_read"]))
            pipe.hset(meta, "last_chunk_at", time.time())
            self._touch(pipe, run_id, "results", "meta")
            pipe.execute()
        return stored

    def complete(self, run_id: str) -> bool:
        """Whether every planned chunk has a stored result (a success or an error)."""
        pipe = self.redis.pipeline()
        pipe.hget(self._key(run_id, "meta"), "chunks_total")
        pipe.hlen(self._key(run_id, "results"))
        pipe.exists(self._key(run_id, "plan"))
        total, done, planned = pipe.execute()
        if not planned or total is None:
            return False
        return int(done) >= int(total) and not self.missing_chunk_ids(run_id)

    def missing_chunk_ids(self, run_id: str) -> list[int]:
        """Planned chunks without a stored result, in chunk-id order."""
        planned = {int(c) for c in self.redis.hkeys(self._key(run_id, "chunks"))}
        stored = {int(c) for c in self.redis.hkeys(self._key(run_id, "results"))}
        return sorted(planned - stored)

    def generation(self, run_id: str) -> int:
        """How many times the run's chunks were (re)launched: 0 first, then one more per resume."""
        return int(self.redis.hget(self._key(run_id, "meta"), "generation") or 0)

    def next_generation(self, run_id: str) -> int:
        generation = int(self.redis.hincrby(self._key(run_id, "meta"), "generation", 1))
        return generation

    def claim_completion(self, run_id: str, generation: int, owner: str, step: str = "aggregate") -> bool:
        """Take the right to run ``step`` (aggregate or finalize) for this generation; one owner only.

        The chord callback, the chunk that stores the last result, and the submitter's watchdog may
        all ask; the claim makes each step run once per generation.
        """
        key = self._key(run_id, f"claim:{step}:{generation}")
        if self.redis.set(key, owner, nx=True, ex=CLAIM_TTL_SECONDS):
            return True
        # The holder itself, redelivered after its worker died, carries on.
        holder = self.redis.get(key)
        return holder is not None and holder.decode() == owner


    def recount(self, run_id: str) -> None:
        """Recompute the progress counters from the stored results, after a resume or a lost backend."""
        events = failed = 0
        for result in self.chunk_results(run_id).values():
            if "error" in result:
                failed += 1
            else:
                events += int(result["events_read"])
        pipe = self.redis.pipeline()
        pipe.hset(self._key(run_id, "meta"), mapping={"events_read": events, "chunks_failed": failed})
        pipe.execute()

    def chunk_status(self, run_id: str, chunk_id: int) -> tuple[bool, str | None]:
        """Whether a chunk has a stored result, and the run's state."""
        pipe = self.redis.pipeline()
        pipe.hexists(self._key(run_id, "results"), str(chunk_id))
        pipe.hget(self._key(run_id, "meta"), "state")
        stored, state = pipe.execute()
        return bool(stored), state.decode() if state is not None else None

    def planned_chunk(self, run_id: str, chunk_id: int) -> Chunk | None:
        raw = self.redis.hget(self._key(run_id, "chunks"), str(chunk_id))
        return Chunk.from_dict(json.loads(raw)) if raw is not None else None

    def has_plan(self, run_id: str) -> bool:
        return bool(self.redis.exists(self._key(run_id, "plan")))

    def has_chunk_result(self, run_id: str, chunk_id: int) -> bool:
        return bool(self.redis.hexists(self._key(run_id, "results"), str(chunk_id)))

    def chunk_results(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Every stored chunk result of a run, read in batches."""
        key = self._key(run_id, "results")
        out: dict[int, dict[str, Any]] = {}
        for field, value in self.redis.hscan_iter(key, count=1000):
            out[int(field)] = json.loads(value)
        return out

    def chunks_done(self, run_id: str) -> int:
        return int(self.redis.hlen(self._key(run_id, "results")))

    def forget_failed_chunks(self, run_id: str) -> list[int]:
        """Drop the failed chunks' results so a resume can run them again; their ids."""
        failed = [cid for cid, r in self.chunk_results(run_id).items() if "error" in r]
        if failed:
            pipe = self.redis.pipeline()
            pipe.hdel(self._key(run_id, "results"), *[str(c) for c in failed])
            pipe.hset(self._key(run_id, "meta"), "chunks_failed", 0)
            pipe.execute()
        return failed

    def save_aggregate(self, run_id: str, aggregated: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.set(self._key(run_id, "aggregate"), json.dumps(aggregated), ex=RECORD_TTL_SECONDS)
        pipe.execute()

    def load_aggregate(self, run_id: str) -> dict[str, Any]:
        raw = self.redis.get(self._key(run_id, "aggregate"))
        if raw is None:
            raise AtlaspipeError(f"run '{run_id}' has no aggregated histograms")
        loaded: dict[str, Any] = json.loads(raw)
        return loaded

    def release_bulk(self, run_id: str) -> None:
        """After a successful run only the small records stay: state, plan, summary.

        Celery's own per-task results of the run's chunks go too: their ids start with the run id
        (see ``atlaspipe.canvas.chunk_task_id``), so the backend returns to its size before the run.
        """
        self.redis.delete(self._key(run_id, "results"), self._key(run_id, "aggregate"),
                          self._key(run_id, "chunks"))
        batch: list[bytes] = []
        for key in self.redis.scan_iter(match=f"celery-task-meta-{run_id}.*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch.clear()
        if batch:
            self.redis.delete(*batch)

    def run_ids(self, limit: int = 50) -> list[str]:
        return [r.decode() for r in self.redis.zrevrange(_RUN_INDEX, 0, limit - 1)]

    def value_sizes(self, run_id: str) -> Iterator[tuple[str, int]]:
        """(key or key/field, bytes) of every value this run stores, to check the size limits."""
        for part in ("meta", "plan", "chunks", "results", "aggregate"):
            key = self._key(run_id, part)
            kind = self.redis.type(key).decode()
            if kind == "string":
                yield key, int(self.redis.strlen(key))
            elif kind == "hash":
                for field, value in self.redis.hscan_iter(key, count=1000):
                    yield f"{key}/{field.decode()}", len(value)


def write_run_copy(run_dir: Path, name: str, document: dict[str, Any]) -> bool:
    """Keep ``document`` in the run folder; False where this process cannot write there."""
    from atlaspipe.processing import write_json

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / name, document)
    except OSError:
        return False
    return True


def read_run_copy(run_dir: Path, name: str) -> dict[str, Any] | None:
    """A document kept in the run folder, or None."""
    try:
        loaded: dict[str, Any] = json.loads((run_dir / name).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return loaded


def _flat(value: Any) -> str | int | float:
    if isinstance(value, str | int | float):
        return value
    return json.dumps(value)


def _safe(url: str) -> str:
    from atlaspipe.config import redact_url

    return redact_url(url)

