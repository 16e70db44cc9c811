"""Where each namespace's migration workflow lives in Redis, and who may run its next step.

One JSON document per namespace (the newest workflow; a finished one is kept until another
starts), a set of the namespaces whose workflow is active, and a short lease per namespace:
a worker runs a step only while it holds the lease, and writes the result only if the document
is still at the version it read (compare-and-set), so two workers never both run a step.
"""

from __future__ import annotations

import redis

from jobs.adapters.keys import Keys
from jobs.domain.migration import Workflow

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class AlreadyRunning(Exception):
    def __init__(self, workflow: Workflow) -> None:
        super().__init__(workflow.namespace)
        self.workflow = workflow


class MigrationStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.prefix = (keys or Keys()).prefix
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _key(self, namespace: str) -> str:
        return f"{self.prefix}migration:{namespace}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}migrations:active"

    def _lease_key(self, namespace: str) -> str:
        return f"{self.prefix}migration-lease:{namespace}"

    def get(self, namespace: str) -> Workflow | None:
        raw = self.client.get(self._key(namespace))
        return Workflow.model_validate_json(raw) if raw else None

    def active(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else str(m)
                      for m in self.client.smembers(self._active))

    def create(self, workflow: Workflow) -> None:
        """Store a new workflow; ``AlreadyRunning`` when the namespace has an active one."""
        key = self._key(workflow.namespace)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw:
                        current = Workflow.model_validate_json(raw)
                        if current.status.active:
                            pipe.unwatch()
                            raise AlreadyRunning(current)
                    pipe.multi()
                    pipe.set(key, workflow.model_dump_json())
                    pipe.sadd(self._active, workflow.namespace)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def save(self, workflow: Workflow) -> Workflow | None:
        """Write ``workflow`` (read at ``workflow.version``) as the next version; None when
        someone wrote it meanwhile (nothing written)."""
        key = self._key(workflow.namespace)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                if not raw or Workflow.model_validate_json(raw).version != workflow.version:
                    pipe.unwatch()
                    return None
                saved = workflow.model_copy(update={"version": workflow.version + 1})
                pipe.multi()
                pipe.set(key, saved.model_dump_json())
                if saved.status.active:
                    pipe.sadd(self._active, saved.namespace)
                else:
                    pipe.srem(self._active, saved.namespace)
                pipe.execute()
                return saved
            except redis.WatchError:
                return None

    def lease(self, namespace: str, owner: str, ms: int) -> bool:
        key = self._lease_key(namespace)
        if self._renew(keys=[key], args=[owner, ms]):
            return True
        return bool(self.client.set(key, owner, nx=True, px=ms))

    def release(self, namespace: str, owner: str) -> None:
        self._release(keys=[self._lease_key(namespace)], args=[owner])
