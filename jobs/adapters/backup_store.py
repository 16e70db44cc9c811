"""Where backups live: Redis, which must persist (AOF) — one JSON document per backup, a
time-ordered index, and the backup a request took (so a retried job takes no second one).
What a backup holds and how it is compared is ``jobs.domain.backup_diff``.
"""

from __future__ import annotations

import redis

from jobs.adapters.keys import Keys
from jobs.domain.backup_diff import Backup

BACKUP_TTL_S = 90 * 24 * 3600  # kept a quarter; the index forgets what has expired

class BackupStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.prefix = (keys or Keys()).prefix + "backup:"

    def _key(self, backup_id: str) -> str:
        return f"{self.prefix}{backup_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}index"

    def _by_request(self, request_id: str) -> str:
        return f"{self.prefix}request:{request_id}"

    def save(self, backup: Backup) -> None:
        with self.client.pipeline() as pipe:
            pipe.set(self._key(backup.id), backup.model_dump_json(), ex=BACKUP_TTL_S)
            pipe.zadd(self._index, {backup.id: backup.created_at})
            # A retried job finds the backup it already took instead of taking another.
            pipe.set(self._by_request(backup.request_id), backup.id, ex=BACKUP_TTL_S)
            pipe.execute()

    def get(self, backup_id: str) -> Backup | None:
        raw = self.client.get(self._key(backup_id))
        return Backup.model_validate_json(raw) if raw else None

    def for_request(self, request_id: str) -> Backup | None:
        raw = self.client.get(self._by_request(request_id))
        if not raw:
            return None
        return self.get(raw.decode() if isinstance(raw, bytes) else str(raw))

    def latest(self, limit: int = 20) -> list[Backup]:
        """Newest first; ids whose backup has expired are dropped from the index."""
        found: list[Backup] = []
        for raw in self.client.zrevrange(self._index, 0, limit * 2):
            backup_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            backup = self.get(backup_id)
            if backup is None:
                self.client.zrem(self._index, backup_id)
                continue
            found.append(backup)
            if len(found) == limit:
                break
        return found
