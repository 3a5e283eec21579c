"""The run store of distributed runs: the lifecycle's records in Redis, the Celery result backend.

Chunk histograms are kept here under the run and chunk id instead of travelling through the chord,
so no message or stored value grows with the number of chunks. Each step a worker takes is one Lua
script, so it is atomic and costs one round trip: starting a chunk (state check, delivery count,
duplicate check), storing its result (set-if-absent, counters, completeness, the status.json
throttle) and moving the run's state (compare-and-set against the allowed states).

Keys, all under ``atlaspipe:run:<id>:`` and expiring after ``RECORD_TTL_SECONDS``: ``meta`` (hash:
state, counters, request), ``plan`` (the plan without chunks), ``chunks`` (one field per chunk),
``results`` (one field per chunk, set-if-absent), ``deliveries:<generation>`` and ``inflight`` (per
chunk), ``claim:<step>:<generation>``, ``aggregate:<generation>``, ``status-due``, ``live`` (hash:
``<sample>:<bin>`` → the m4l sum of the chunks stored so far, for ``live.json``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from atlaspipe.config import redact_url
from atlaspipe.errors import AtlaspipeError, BackendUnavailable
from atlaspipe.model import (
    Aggregate,
    Chunk,
    ChunkResult,
    Failure,
    RunPlan,
    RunRequest,
    RunState,
    RunStatus,
    SampleLoss,
)
from atlaspipe.pipeline.lifecycle import (
    STATUS_INTERVAL_SECONDS,
    ChunkGate,
    ChunkStart,
    ChunkStored,
    LiveSums,
    StatusChange,
    live_bins,
    now_text,
)

log = logging.getLogger(__name__)

RECORD_TTL_SECONDS = 7 * 24 * 3600
CLAIM_TTL_SECONDS = 3600
"""How long a step's claim holds; a claimer that dies is replaced by ``resume`` after this."""
_PREFIX = "atlaspipe:run:"
RUN_INDEX = "atlaspipe:runs"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
"""Errors of a Redis that is away for a while (restarting, frozen, network), worth waiting out."""

_START_CHUNK = """
local state = redis.call('HGET', KEYS[1], 'state')
local run_dir = redis.call('HGET', KEYS[1], 'run_dir') or ''
if state ~= 'running' then return {'stopped', 0, run_dir} end
local n = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('EXPIRE', KEYS[3], ARGV[4])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'duplicate', n, run_dir} end
if n > tonumber(ARGV[2]) then return {'over-limit', n, run_dir} end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {'run', n, run_dir}
"""

_STORE_CHUNK = """
local stored = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
if stored == 1 then
  if ARGV[3] == '0' then
    redis.call('HINCRBY', KEYS[1], 'chunks_failed', 1)
  else
    redis.call('HINCRBY', KEYS[1], 'events_read', ARGV[4])
  end
  redis.call('HSET', KEYS[1], 'last_chunk_at', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'landed', 1)
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  for i = 9, #ARGV, 2 do
    redis.call('HINCRBYFLOAT', KEYS[5], ARGV[8] .. ':' .. ARGV[i], ARGV[i + 1])
  end
  if #ARGV > 8 then redis.call('EXPIRE', KEYS[5], ARGV[7]) end
end
local done = redis.call('HLEN', KEYS[2])
local total = tonumber(redis.call('HGET', KEYS[1], 'chunks_total') or '-1')
local due = redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[6])
return {stored, done, total, due and 1 or 0}
"""

_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
for i = 4, 3 + tonumber(ARGV[3]) do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated', ARGV[2])
    local first = 4 + tonumber(ARGV[3])
    for j = first, #ARGV, 2 do
      redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
    end
    redis.call('EXPIRE', KEYS[1], 604800)
    return state
  end
end
return false
"""

_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""


def _key(run_id: str, part: str) -> str:
    return f"{_PREFIX}{run_id}:{part}"


class RunRecords:
    """The ``RunStore`` of the Celery executor: every run's records, through one Redis connection pool."""

    def __init__(self, url: str, attempts: int = 8, status_interval: float = STATUS_INTERVAL_SECONDS,
                 client: Any = None) -> None:
        self.url = url
        self.status_interval = status_interval
        # redis-py's annotations mix bytes and str replies; replies here are always bytes. Its own
        # retries with backoff ride out a Redis restart of a few seconds without failing a task.
        self.redis: Any = client if client is not None else redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), attempts),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self._start_chunk = self.redis.register_script(_START_CHUNK)
        self._store_chunk = self.redis.register_script(_STORE_CHUNK)
        self._transition = self.redis.register_script(_TRANSITION)
        self._claim = self.redis.register_script(_CLAIM)

    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"result backend {redact_url(self.url)} unreachable: {exc}") from None

    def _unknown(self, run_id: str) -> AtlaspipeError:
        return AtlaspipeError(f"unknown run id '{run_id}' (no record in {redact_url(self.url)})")

    # --- the RunStore protocol -------------------------------------------------------------------

    def create(self, request: RunRequest, status: RunStatus) -> bool:
        meta = _key(request.run_id, "meta")
        if not self.redis.hsetnx(meta, "request", request.to_json()):
            return False
        pipe = self.redis.pipeline()
        pipe.hset(meta, mapping={
            "state": status.state.value, "executor": status.executor, "created": status.started,
            "updated": status.updated, "message": status.message, "run_dir": status.run_dir or "",
            "chunks_total": 0, "events_total": 0, "chunks_failed": 0, "events_read": 0, "generation": 0,
        })
        pipe.expire(meta, RECORD_TTL_SECONDS)
        pipe.zadd(RUN_INDEX, {request.run_id: time.time()})
        pipe.execute()
        return True

    def request(self, run_id: str) -> RunRequest:
        raw = self.redis.hget(_key(run_id, "meta"), "request")
        if raw is None:
            raise self._unknown(run_id)
        return RunRequest.from_json(raw, f"run {run_id} request")

    def status(self, run_id: str) -> RunStatus:
        pipe = self.redis.pipeline()
        pipe.hgetall(_key(run_id, "meta"))
        pipe.hlen(_key(run_id, "results"))
        raw, done = pipe.execute()
        # Without a state the hash holds only counters of chunks that finished after the backend
        # lost the run (a Redis restart): the run itself is unknown here.
        if not raw or b"state" not in raw:
            raise self._unknown(run_id)
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        total = int(meta.get("chunks_total", 0))
        return RunStatus(
            run_id=run_id, state=RunState(meta["state"]),
            executor="in-process" if meta.get("executor") == "in-process" else "celery",
            generation=int(meta.get("generation", 0)), chunks_total=total,
            chunks_done=total if meta.get("released") else int(done),
            chunks_failed=int(meta.get("chunks_failed", 0)), events_read=int(meta.get("events_read", 0)),
            events_total=int(meta.get("events_total", 0)), started=meta.get("created", ""),
            updated=meta.get("updated", ""), message=meta.get("message", ""),
            failures=tuple(Failure.model_validate(f) for f in json.loads(meta.get("failures") or "[]")),
            missing={k: SampleLoss.model_validate(v) for k, v in json.loads(meta.get("missing") or "{}").items()},
            notes=tuple(json.loads(meta.get("notes") or "[]")), run_dir=meta.get("run_dir") or None,
        )

    def transition(self, run_id: str, target: RunState, allowed: Collection[RunState],
                   change: StatusChange) -> RunState | None:
        fields: list[str | int] = []
        if change.message is not None:
            fields += ["message", change.message]
        if change.chunks_total is not None:
            fields += ["chunks_total", change.chunks_total]
        if change.events_total is not None:
            fields += ["events_total", change.events_total]
        if change.notes is not None:
            fields += ["notes", json.dumps(list(change.notes))]
        if change.failures is not None:
            fields += ["failures", json.dumps([f.to_jsonable() for f in change.failures])]
        if change.missing is not None:
            fields += ["missing", json.dumps({k: v.to_jsonable() for k, v in change.missing.items()})]
        if target is RunState.RUNNING:
            # Entering ``running`` (first launch or ``resume``) restarts the clock of the live ETA.
            fields += ["running_since", f"{time.time():.6f}", "landed", 0]
        states = sorted(s.value for s in allowed)
        previous = self._transition(keys=[_key(run_id, "meta")],
                                    args=[target.value, now_text(), len(states), *states, *fields])
        return RunState(previous.decode()) if previous else None

    def save_plan(self, plan: RunPlan) -> None:
        """The plan's description in one value and its chunks in a hash, one field per chunk."""
        pipe = self.redis.pipeline()
        pipe.set(_key(plan.run_id, "plan"), plan.without_chunks().to_json(), ex=RECORD_TTL_SECONDS)
        chunks_key = _key(plan.run_id, "chunks")
        pipe.delete(chunks_key)
        for start in range(0, len(plan.chunks), 1000):
            batch = plan.chunks[start:start + 1000]
            pipe.hset(chunks_key, mapping={str(c.chunk_id): c.to_json() for c in batch})
        pipe.expire(chunks_key, RECORD_TTL_SECONDS)
        pipe.hset(_key(plan.run_id, "meta"), mapping={"chunks_total": len(plan.chunks),
                                                      "events_total": plan.total_entries})
        pipe.execute()

    def plan(self, run_id: str, with_chunks: bool = True) -> RunPlan | None:
        raw = self.redis.get(_key(run_id, "plan"))
        if raw is None:
            return None
        described = RunPlan.from_json(raw, f"run {run_id} plan")
        if not with_chunks:
            return described
        chunks = sorted((Chunk.from_json(v) for v in self.redis.hvals(_key(run_id, "chunks"))),
                        key=lambda c: c.chunk_id)
        return described.model_copy(update={"chunks": tuple(chunks)})

    def start_chunk(self, run_id: str, chunk_id: int, generation: int, max_deliveries: int) -> ChunkStart:
        gate, deliveries, run_dir = self._start_chunk(
            keys=[_key(run_id, "meta"), _key(run_id, "results"), _key(run_id, f"deliveries:{generation}"),
                  _key(run_id, "inflight")],
            args=[chunk_id, max_deliveries, f"{time.time():.3f}", RECORD_TTL_SECONDS],
        )
        return ChunkStart(ChunkGate(gate.decode()), int(deliveries), run_dir.decode() or None)

    def store_chunk(self, run_id: str, result: ChunkResult) -> ChunkStored:
        live = [part for index, value in live_bins(result).items() for part in (index, repr(value))]
        stored, done, total, due = self._store_chunk(
            keys=[_key(run_id, "meta"), _key(run_id, "results"), _key(run_id, "inflight"),
                  _key(run_id, "status-due"), _key(run_id, "live")],
            args=[result.chunk_id, result.to_json(), int(result.ok), result.events_read, f"{time.time():.6f}",
                  max(1, int(self.status_interval * 1000)), RECORD_TTL_SECONDS, result.sample, *live],
        )
        return ChunkStored(counted=bool(stored), complete=int(total) >= 0 and int(done) >= int(total),
                           status_due=bool(due))

    def finish_chunk(self, run_id: str, chunk_id: int) -> None:
        self.redis.hdel(_key(run_id, "inflight"), str(chunk_id))

    def chunk_results(self, run_id: str) -> dict[int, ChunkResult]:
        """Every stored chunk result of a run, read in batches."""
        return {int(field): ChunkResult.from_json(value)
                for field, value in self.redis.hscan_iter(_key(run_id, "results"), count=1000)}

    def live_sums(self, run_id: str) -> LiveSums:
        pipe = self.redis.pipeline()
        pipe.hgetall(_key(run_id, "live"))
        pipe.hmget(_key(run_id, "meta"), "landed", "running_since", "last_chunk_at")
        raw, (landed, since, last) = pipe.execute()
        bins: dict[str, dict[int, float]] = {}
        for field, value in raw.items():
            sample, _, index = field.decode().rpartition(":")
            bins.setdefault(sample, {})[int(index)] = float(value)
        return LiveSums(bins=bins, landed=int(landed or 0), running_since=float(since) if since else None,
                        last_landed=float(last) if last else None)

    def complete(self, run_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.exists(_key(run_id, "plan"))
        pipe.hget(_key(run_id, "meta"), "chunks_total")
        pipe.hlen(_key(run_id, "results"))
        planned, total, done = pipe.execute()
        return bool(planned) and total is not None and int(done) >= int(total)

    def missing_chunk_ids(self, run_id: str) -> list[int]:
        chunks = {int(c) for c in self.redis.hkeys(_key(run_id, "chunks"))}
        return sorted(chunks - {int(c) for c in self.redis.hkeys(_key(run_id, "results"))})

    def claim(self, run_id: str, step: str, generation: int, owner: str) -> bool:
        return bool(self._claim(keys=[_key(run_id, f"claim:{step}:{generation}")], args=[owner, CLAIM_TTL_SECONDS]))

    def generation(self, run_id: str) -> int:
        return int(self.redis.hget(_key(run_id, "meta"), "generation") or 0)

    def next_generation(self, run_id: str) -> int:
        generation = int(self.redis.hincrby(_key(run_id, "meta"), "generation", 1))
        results = self.chunk_results(run_id)
        failed = [cid for cid, r in results.items() if not r.ok]
        pipe = self.redis.pipeline()
        if failed:
            pipe.hdel(_key(run_id, "results"), *[str(c) for c in failed])
        pipe.hset(_key(run_id, "meta"), mapping={
            "chunks_failed": 0, "events_read": sum(r.events_read for r in results.values() if r.ok)})
        pipe.hdel(_key(run_id, "meta"), "released")
        pipe.delete(_key(run_id, "inflight"))
        pipe.execute()
        return generation

    def save_aggregate(self, run_id: str, generation: int, aggregate: Aggregate) -> None:
        self.redis.set(_key(run_id, f"aggregate:{generation}"), aggregate.to_json(), ex=RECORD_TTL_SECONDS)

    def aggregate(self, run_id: str, generation: int) -> Aggregate | None:
        raw = self.redis.get(_key(run_id, f"aggregate:{generation}"))
        return None if raw is None else Aggregate.from_json(raw, f"run {run_id} aggregate")

    def release_bulk(self, run_id: str) -> None:
        """After a successful run only the small records stay: status, request, plan."""
        bulk = [key for key in self.redis.scan_iter(match=f"{_PREFIX}{run_id}:*", count=1000)
                if not key.decode().endswith((":meta", ":plan"))]
        pipe = self.redis.pipeline()
        if bulk:
            pipe.delete(*bulk)
        pipe.hset(_key(run_id, "meta"), "released", 1)
        pipe.execute()
        log.debug("run %s: %d bulk record(s) released", run_id, len(bulk))

    def forget(self, run_id: str) -> None:
        keys = list(self.redis.scan_iter(match=f"{_PREFIX}{run_id}:*", count=1000))
        pipe = self.redis.pipeline()
        if keys:
            pipe.delete(*keys)
        pipe.zrem(RUN_INDEX, run_id)
        pipe.execute()
        log.debug("run %s: %d record(s) removed", run_id, len(keys))

    def run_ids(self, limit: int = 50) -> list[str]:
        return [r.decode() for r in self.redis.zrevrange(RUN_INDEX, 0, limit - 1)]

    # --- what the client reads besides the status -------------------------------------------------

    def last_chunk_at(self, run_id: str) -> float:
        return float(self.redis.hget(_key(run_id, "meta"), "last_chunk_at") or 0.0)

    def in_flight(self, run_id: str) -> int:
        """Chunks a worker has started and not yet stored or skipped."""
        return int(self.redis.hlen(_key(run_id, "inflight")))

    def value_sizes(self, run_id: str) -> Iterator[tuple[str, int]]:
        """(key or key/field, bytes) of every value this run stores, to check the size limits."""
        for key in self.redis.scan_iter(match=f"{_PREFIX}{run_id}:*", count=1000):
            kind = self.redis.type(key).decode()
            name = key.decode()
            if kind == "string":
                yield name, int(self.redis.strlen(key))
            elif kind == "hash":
                for field, value in self.redis.hscan_iter(key, count=1000):
                    yield f"{name}/{field.decode()}", len(value)
