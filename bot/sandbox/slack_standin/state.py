"""The stand-in's state: its workspace plus the checked, fault-injected, logged Web API."""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from bot.sandbox.slack_standin import methods_chat, methods_directory, methods_views
from bot.sandbox.slack_standin.model import (
    RESPONSE_URL_MAX_USES,
    VIEW_STACK_LIMIT,
    ApiResult,
    Call,
    Channel,
    Ephemeral,
    Fault,
    Message,
    ResponseUrl,
    User,
    UserGroup,
    ViewRecord,
    Violation,
)
from bot.sandbox.slack_standin.rate_limits import RateLimiter, RateLimitTable, load_rate_limits
from bot.sandbox.slack_standin.spec import (
    WebApiSpec,
    as_blocks,
    check_call,
    check_message_payload,
    find_forbidden,
    load_web_api_spec,
)
from bot.sandbox.slack_standin.workspace import Handler, Workspace

# The model's names stay importable from here, where they lived before the split.
__all__ = [
    "IMPLEMENTED_METHODS",
    "RESPONSE_URL_MAX_USES",
    "VIEW_STACK_LIMIT",
    "ApiResult",
    "Call",
    "Channel",
    "Ephemeral",
    "Fault",
    "Message",
    "ResponseUrl",
    "StandinState",
    "User",
    "UserGroup",
    "ViewRecord",
    "Violation",
]

_HANDLERS: dict[str, Handler] = {
    **methods_directory.HANDLERS,
    **methods_chat.HANDLERS,
    **methods_views.HANDLERS,
}

IMPLEMENTED_METHODS = frozenset(_HANDLERS)


class StandinState(Workspace):
    """Thread-safe model of one Slack workspace as seen by one bot, plus the call log.

    Every Web API call and response_url post goes through `handle_api`/`handle_response_url`:
    checked against the vendored spec, failed on demand (`fail_next`), held to Slack's rate
    limits (HTTP 429 with Retry-After, counted per method in `rate_limited`), answered by the
    method family's handler, and recorded with any violation.

    `clock` (seconds, monotonic) drives the rate limits, so a test can step it instead of
    sleeping; `rate_limits=False` turns them off (a test of something else that floods).
    """

    def __init__(
        self,
        *,
        team_id: str = "T0ROTABOT",
        team_name: str = "rotabot-sandbox",
        bot_user_id: str = "U0ROTABOT",
        bot_id: str = "B0ROTABOT",
        bot_name: str = "rotabot",
        tokens: Iterable[str] | None = None,
        spec: WebApiSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
        rate_limits: bool = True,
        rate_limit_table: RateLimitTable | None = None,
    ) -> None:
        # None accepts any bot token (xoxb-…); a set pins the exact tokens.
        self.tokens = set(tokens) if tokens is not None else None
        self.spec = spec or load_web_api_spec()
        self._calls: list[Call] = []
        self._violations: list[Violation] = []
        self._faults: list[Fault] = []
        self._forbidden: set[str] = set()
        self.limiter = RateLimiter(
            rate_limit_table or load_rate_limits(), clock, enabled=rate_limits
        )
        self._rate_limited: Counter[str] = Counter()
        super().__init__(
            team_id=team_id,
            team_name=team_name,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            bot_name=bot_name,
        )

    # ------------------------------------------------------------------ checks and faults

    def forbid(self, value: str) -> None:
        """Register a secret value: any call or response_url post containing it is a violation."""
        with self._lock:
            self._forbidden.add(value)

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: int = 1,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` ("*" for any) fail.

        Default is HTTP 429 with Retry-After; `error=` answers HTTP 200 `ok:false`; `status=503`
        (or any 5xx) answers a server error.
        """
        if status is None:
            status = 200 if error is not None else 429
        with self._lock:
            self._faults.append(Fault(method, status, error, retry_after, times))

    # ------------------------------------------------------------------ call log

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    @property
    def rate_limited(self) -> dict[str, int]:
        """HTTP 429 answers by method: the enforced limits' and `fail_next`'s."""
        with self._lock:
            return dict(self._rate_limited)

    def rate_limit_report(self) -> dict[str, Any]:
        """What `GET /standin/rate_limits` serves: whether limits are on, the 429s and the
        calls by method."""
        with self._lock:
            return {
                "enforced": self.limiter.enabled,
                "rate_limited": dict(self._rate_limited),
                "calls": dict(Counter(c.method for c in self._calls)),
            }

    def set_rate_limits(self, enabled: bool) -> None:
        """Turn enforcement on or off; either way the buckets start full again."""
        with self._lock:
            self.limiter.enabled = enabled
            self.limiter.reset()

    def clear_log(self) -> None:
        """Forget recorded calls, violations and 429 counts (the workspace stays)."""
        with self._lock:
            self._calls.clear()
            self._violations.clear()
            self._rate_limited.clear()

    # ------------------------------------------------------------------ Web API entry point

    def handle_api(
        self,
        method: str,
        args: dict[str, Any],
        *,
        token: str | None,
        http_method: str = "POST",
        as_json: bool = False,
        parse_errors: Iterable[str] = (),
    ) -> ApiResult:
        """Check, fault-inject, execute and record one Web API call."""
        with self._lock:
            call = Call(
                seq=len(self._calls) + 1,
                method=method,
                args=copy.deepcopy(args),
                time=time.time(),
                http_method=http_method,
                json_body=as_json,
            )
            result = self._answer(call, args, token, as_json, list(parse_errors))
            call.status = result.status
            call.response = copy.deepcopy(result.body)
            if result.status == 429:
                self._rate_limited[method] += 1
            if call.violations:
                self._violations.append(
                    Violation(call.seq, method, list(call.violations), call.args)
                )
            self._calls.append(call)
            self._change("call", method=method, call_seq=call.seq, ok=call.ok)
            return result

    def _answer(
        self,
        call: Call,
        args: dict[str, Any],
        token: str | None,
        as_json: bool,
        parse_errors: list[str],
    ) -> ApiResult:
        method = call.method
        if method not in self.spec:
            call.violations.append(f"unknown Web API method: {method}")
            return ApiResult(200, {"ok": False, "error": "unknown_method"})
        if not token:
            call.violations.append("no token: send Authorization: Bearer xoxb-…")
            return ApiResult(200, {"ok": False, "error": "not_authed"})
        if not self._token_ok(token):
            call.violations.append("token rejected (expected a bot token xoxb-…)")
            return ApiResult(200, {"ok": False, "error": "invalid_auth"})
        problems = parse_errors + check_call(self.spec, method, args, as_json=as_json)
        call.unknown_args = self.spec.unknown_arguments(method, args)
        if problems:
            call.violations.extend(problems)
            return ApiResult(
                200,
                {
                    "ok": False,
                    "error": "invalid_arguments",
                    "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
                },
            )
        if self._forbidden and find_forbidden(self._forbidden, args):
            # Slack would accept it; that is the point: the secret would now be in Slack.
            call.violations.append("a registered secret value appears in the call's arguments")
        fault = self._take_fault(method)
        if fault is not None:
            call.fault = fault.error or f"http {fault.status}"
            return self._fault_result(fault)
        retry_after = self.limiter.retry_after(method, args)
        if retry_after is not None:
            return ApiResult(429, {"ok": False, "error": "ratelimited"},
                             {"Retry-After": str(retry_after)})
        handler = _HANDLERS.get(method)
        body = handler(self, args) if handler else {"ok": True}
        return ApiResult(200, body)

    def _token_ok(self, token: str) -> bool:
        if self.tokens is not None:
            return token in self.tokens
        return token.startswith("xoxb-")

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in (method, "*"):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_result(fault: Fault) -> ApiResult:
        if fault.status == 429:
            return ApiResult(
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(fault.retry_after)},
            )
        if fault.status >= 500:
            return ApiResult(fault.status, {"ok": False, "error": "service_unavailable"})
        return ApiResult(fault.status, {"ok": False, "error": fault.error or "fatal_error"})

    # ------------------------------------------------------------------ response_url

    def handle_response_url(
        self, rid: str, payload: Any, parse_errors: Iterable[str] = ()
    ) -> ApiResult:
        """A post to a response_url: ephemeral reply, in-channel post, replace or delete."""
        with self._lock:
            call = Call(
                seq=len(self._calls) + 1,
                method="response_url",
                args=copy.deepcopy(payload) if isinstance(payload, dict) else {"raw": payload},
                time=time.time(),
                http_method="POST",
                json_body=True,
            )
            result = self._answer_response_url(call, rid, payload, list(parse_errors))
            call.status = result.status
            call.response = result.body
            if call.violations:
                self._violations.append(
                    Violation(call.seq, call.method, list(call.violations), call.args)
                )
            self._calls.append(call)
            self._change("call", method="response_url", call_seq=call.seq, ok=result.status == 200)
            return result

    def _answer_response_url(
        self, call: Call, rid: str, payload: Any, parse_errors: list[str]
    ) -> ApiResult:
        target = self.response_urls.get(rid)
        if target is None:
            return ApiResult(404, "no_service")
        if target.uses >= RESPONSE_URL_MAX_USES:
            call.violations.append(f"response_url used more than {RESPONSE_URL_MAX_USES} times")
            return ApiResult(404, "used_url")
        if parse_errors or not isinstance(payload, dict):
            call.violations.extend(parse_errors or ["response_url payload must be a JSON object"])
            return ApiResult(400, "invalid_payload")
        delete = bool(payload.get("delete_original"))
        problems = [] if delete else check_message_payload(payload)
        if problems:
            call.violations.extend(problems)
            return ApiResult(400, "invalid_blocks")
        if self._forbidden and find_forbidden(self._forbidden, payload):
            call.violations.append("a registered secret value appears in the response_url post")
        target.uses += 1
        blocks = as_blocks(payload.get("blocks"))
        text = str(payload.get("text", ""))
        if delete or payload.get("replace_original"):
            if target.message_ts is None:
                # From a slash command there is no original; Slack posts a new message.
                if delete:
                    return ApiResult(404, "message_not_found")
            else:
                message = self.find_message(target.channel, target.message_ts)
                if message is None:
                    return ApiResult(404, "message_not_found")
                if delete:
                    self._delete_message(message)
                else:
                    self._edit_message(message, text, blocks)
                return ApiResult(200, "ok")
        thread_ts = payload.get("thread_ts") or target.thread_ts
        if payload.get("response_type") == "in_channel":
            # Slash-command responses may post in channel without the bot being a member.
            self._store_message(target.channel, self.bot_user_id, text, blocks, thread_ts, bot=True)
        else:
            self._add_ephemeral(
                target.channel, target.user, text, blocks, thread_ts, "response_url"
            )
        return ApiResult(200, "ok")
