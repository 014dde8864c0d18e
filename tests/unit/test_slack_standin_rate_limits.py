"""The Slack stand-in enforces Slack's published rate limits per method, on its own clock."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.token_bucket import Bucket, Rate, drain, take
from bot.sandbox.slack_standin import StandinServer, StandinState, load_web_api_spec
from bot.sandbox.slack_standin.rate_limits import load_rate_limits

TOKEN = "xoxb-test"


class StepClock:
    """The stand-in's clock, stepped by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def state(clock: StepClock) -> StandinState:
    s = StandinState(clock=clock)
    s.add_user("U0ALICE", "alice")
    s.add_channel("C0ROTATE", "rotations", members=["U0ALICE"])
    s.add_channel("C0INCIDENT", "incidents", members=["U0ALICE"])
    return s


@pytest.fixture
def server(state: StandinState) -> Iterator[StandinServer]:
    with StandinServer(state) as srv:
        yield srv


@pytest.fixture
def client(server: StandinServer) -> WebClient:
    # No retry handler: every 429 must surface to the test.
    return WebClient(base_url=server.base_url, token=TOKEN, retry_handlers=[])


def test_table_gives_the_documented_tier_of_each_method_the_bot_uses() -> None:
    table = load_rate_limits()
    assert table.tier_of("chat.update").rate.per_minute == 50  # Tier 3
    assert table.tier_of("conversations.open").rate.per_minute == 50  # Tier 3
    assert table.tier_of("conversations.create").rate.per_minute == 20  # Tier 2
    assert table.tier_of("usergroups.users.list").rate.per_minute == 20  # Tier 2
    for tier4 in ("chat.postEphemeral", "views.open", "views.publish", "users.info"):
        assert table.tier_of(tier4).rate.per_minute == 100
    assert table.tier_of("rtm.connect").rate.per_minute == 1  # Tier 1
    post = table.tier_of("chat.postMessage")
    assert post.per_channel and post.rate.per_minute == 60
    # Every method of the vendored Web API spec has a tier of its own.
    assert set(table.by_method) == set(load_web_api_spec().methods)


def test_tier3_allows_a_minute_of_calls_then_answers_429_with_retry_after(
    client: WebClient, state: StandinState, clock: StepClock
) -> None:
    ts = str(client.chat_postMessage(channel="C0ROTATE", text="R-1")["ts"])
    for i in range(50):
        client.chat_update(channel="C0ROTATE", ts=ts, text=f"R-1 v{i}")
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0ROTATE", ts=ts, text="one too many")
    response = caught.value.response
    assert response.status_code == 429
    assert response.data == {"ok": False, "error": "ratelimited"}
    # One token comes back every 60/50 s: Slack's Retry-After is whole seconds.
    assert response.headers["retry-after"] == "2"
    message = state.find_message("C0ROTATE", ts)
    assert message is not None and message.text == "R-1 v49"  # the 429 changed nothing
    clock.now += 1.2
    client.chat_update(channel="C0ROTATE", ts=ts, text="after the wait")
    assert message.text == "after the wait"
    assert state.rate_limited == {"chat.update": 1}


def test_post_message_is_limited_per_channel_with_a_short_burst(
    client: WebClient, state: StandinState, clock: StepClock
) -> None:
    burst = int(load_rate_limits().tier_of("chat.postMessage").rate.burst)
    for i in range(burst):
        client.chat_postMessage(channel="C0ROTATE", text=f"m{i}")
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0ROTATE", text="flood")
    assert caught.value.response.headers["retry-after"] == "1"
    client.chat_postMessage(channel="C0INCIDENT", text="another channel has its own budget")
    clock.now += 1.0  # one message a second per channel
    client.chat_postMessage(channel="C0ROTATE", text="a second later")
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C0ROTATE", text="too soon again")
    assert state.rate_limited == {"chat.postMessage": 2}


def test_flood_is_counted_per_method_in_the_inspection_api(
    server: StandinServer, client: WebClient, state: StandinState
) -> None:
    limited = 0
    for _ in range(25):  # conversations.create is Tier 2: 20 a minute
        try:
            client.conversations_create(name="flood")
        except SlackApiError as exc:
            assert exc.response.status_code == 429
            limited += 1
    assert limited == 5
    with urllib.request.urlopen(f"{server.root_url}standin/rate_limits") as resp:
        report = json.loads(resp.read())
    assert report == {
        "enforced": True,
        "rate_limited": {"conversations.create": 5},
        "calls": {"conversations.create": 25},
    }
    state.clear_log()
    assert state.rate_limited == {}


def test_limits_can_be_turned_off_for_a_test_of_something_else(
    client: WebClient, state: StandinState
) -> None:
    state.set_rate_limits(False)
    for _ in range(25):
        client.conversations_create(name="flood")
    assert state.rate_limited == {}
    state.set_rate_limits(True)  # full buckets again
    for _ in range(20):
        client.conversations_create(name="again")
    assert state.rate_limited == {}


def test_injected_429s_are_counted_too(client: WebClient, state: StandinState) -> None:
    state.fail_next("users.info", retry_after=4)
    with pytest.raises(SlackApiError) as caught:
        client.users_info(user="U0ALICE")
    assert caught.value.response.headers["retry-after"] == "4"
    assert state.rate_limited == {"users.info": 1}


def test_token_bucket_refills_steadily_up_to_its_burst() -> None:
    rate = Rate(per_minute=60, burst=2)
    bucket, wait = take(None, rate, 0.0)
    bucket, wait = take(bucket, rate, 0.0)
    assert wait == 0.0 and bucket.tokens == 0.0
    bucket, wait = take(bucket, rate, 0.25)
    assert wait == pytest.approx(0.75)
    bucket, wait = take(bucket, rate, 100.0)  # an idle hour refills the burst, no more
    assert wait == 0.0 and bucket.tokens == pytest.approx(1.0)
    # Slack's Retry-After overrides our count: the next token in exactly that long.
    drained = drain(bucket, rate, 100.0, 5.0)
    assert take(drained, rate, 100.0)[1] == pytest.approx(5.0)
    assert take(drained, rate, 105.0)[1] == 0.0
    # A clock stepping back (another replica's) refills nothing.
    assert take(Bucket(0.0, 50.0), rate, 40.0)[1] == pytest.approx(1.0)
