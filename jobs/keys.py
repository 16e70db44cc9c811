"""Every Redis key meshbot uses, under one prefix (``meshbot:`` by default)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "meshbot:"

    def rollout(self, service: str) -> str:
        return f"{self.prefix}rollout:{service}"

    @property
    def watched(self) -> str:
        """Sorted set: service → next_check_at, for the analysis tick."""
        return f"{self.prefix}watched"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}request:{request_id}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    def audit_for(self, target: str) -> str:
        return f"{self.prefix}audit:{target}"

    def live_subset(self, service: str) -> str:
        return f"{self.prefix}live:{service}"

    def lock(self, service: str) -> str:
        return f"{self.prefix}lock:{service}"

    @property
    def last_tick(self) -> str:
        return f"{self.prefix}last_tick"
