"""Owner user-group membership from Slack, cached briefly."""

from __future__ import annotations

import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError


class SlackOwnerDirectory:
    """``usergroups.users.list`` with a short cache: group changes show up within a minute."""

    def __init__(self, client: WebClient, ttl_seconds: float = 60.0) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group_id: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(group_id)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]
        try:
            resp = self._client.usergroups_users_list(usergroup=group_id)
            raw: list[object] = list(resp.get("users", []))
            users = frozenset(str(u) for u in raw)
        except SlackApiError:
            users = frozenset()  # unknown group: nobody is a member, so nobody is let through
        with self._lock:
            self._cache[group_id] = (now, users)
        return users
