"""The Slack stand-in, driven over HTTP by a real slack_sdk WebClient."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View
from slack_sdk.webhook import WebhookClient

from bot.sandbox.slack_standin import StandinServer, StandinState

TOKEN = "xoxb-test"


@pytest.fixture
def state() -> StandinState:
    s = StandinState()
    s.add_user("U0ALICE", "alice", is_admin=True)
    s.add_user("U0BOB", "bob")
    s.add_user("U0OUT", "outsider")
    s.add_channel("C0ROTATE", "rotations", members=["U0ALICE", "U0BOB"])
    s.add_channel("C0QUIET", "quiet", members=["U0ALICE"], bot_is_member=False)
    s.add_usergroup("S0DATAENG", "data-eng", ["U0BOB", "U0ALICE"])
    return s


@pytest.fixture
def server(state: StandinState) -> Iterator[StandinServer]:
    with StandinServer(state) as srv:
        yield srv


@pytest.fixture
def client(server: StandinServer) -> WebClient:
    # No retry handlers by default: each fault must surface once, visibly.
    return WebClient(base_url=server.base_url, token=TOKEN, retry_handlers=[])


def rotation_blocks(n_sections: int = 1) -> list[Any]:
    blocks: list[Any] = [HeaderBlock(text="R-42 model-api-key"), DividerBlock()]
    blocks += [
        SectionBlock(text=f"*consumer {i}*", fields=["prod", "hot"]) for i in range(n_sections)
    ]
    blocks.append(
        ActionsBlock(
            elements=[
                ButtonElement(
                    text="Sign off",
                    action_id="signoff",
                    value="R-42:inference-api",
                    style="primary",
                    confirm=ConfirmObject(
                        title="Sure?", text="Revoke OK?", confirm="Yes", deny="No"
                    ),
                )
            ]
        )
    )
    blocks.append(ContextBlock(elements=[{"type": "mrkdwn", "text": "overlap ends in 24h"}]))
    return blocks


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return json.loads(response.read())


def test_server_reports_real_port_and_api_base_url(server: StandinServer) -> None:
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/api/"
    assert server.state.base_url == server.base_url


def test_post_update_and_thread_reply_are_modelled_and_recorded(
    client: WebClient, state: StandinState
) -> None:
    posted = client.chat_postMessage(
        channel="C0ROTATE", text="R-42 started", blocks=rotation_blocks()
    )
    ts = posted["ts"]
    assert posted["channel"] == "C0ROTATE"
    assert posted["message"]["bot_id"] == state.bot_id
    assert posted["message"]["blocks"][0]["type"] == "header"

    updated = client.chat_update(channel="C0ROTATE", ts=ts, text="R-42 distributing")
    assert updated["ts"] == ts
    reply = client.chat_postMessage(channel="C0ROTATE", thread_ts=ts, text="<@U0BOB> your turn")

    parent = state.find_message("C0ROTATE", ts)
    assert parent is not None
    assert parent.text == "R-42 distributing"
    assert parent.edited_ts is not None
    assert parent.blocks[0]["type"] == "header"  # chat.update without blocks keeps them
    assert parent.reply_count == 1
    assert [m.ts for m in state.thread("C0ROTATE", ts)] == [reply["ts"]]
    assert reply["message"]["thread_ts"] == ts
    # Only top-level posts and the reply exist: the update did not add a message.
    assert len(state.channel_messages("C0ROTATE")) == 2

    methods = [c.method for c in state.calls]
    assert methods == ["chat.postMessage", "chat.update", "chat.postMessage"]
    assert all(c.ok and c.json_body for c in state.calls)
    assert "token" not in state.calls[0].args
    assert state.violations == []


def test_missing_required_argument_is_rejected_and_recorded(
    client: WebClient, state: StandinState
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.postMessage", json={"text": "no channel"})
    assert caught.value.response["error"] == "invalid_arguments"
    messages = caught.value.response["response_metadata"]["messages"]
    assert any("channel" in m for m in messages)
    assert [v.method for v in state.violations] == ["chat.postMessage"]
    assert state.channel_messages("C0ROTATE") == []


def test_fifty_blocks_pass_and_fifty_one_are_rejected(
    client: WebClient, state: StandinState
) -> None:
    fifty = [DividerBlock() for _ in range(50)]
    client.chat_postMessage(channel="C0ROTATE", text="fits", blocks=fifty)
    assert state.violations == []

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0ROTATE", text="too big", blocks=[*fifty, DividerBlock()])
    assert caught.value.response["error"] == "invalid_arguments"
    assert "51 blocks" in state.violations[0].messages[0]
    assert len(state.channel_messages("C0ROTATE")) == 1


@pytest.mark.parametrize(
    ("block", "why"),
    [
        ({"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}, "3000"),
        ({"type": "sektion", "text": {"type": "mrkdwn", "text": "typo"}}, "unknown block type"),
        ({"type": "section", "text": {"type": "mrkdwn", "text": "a"}, "accesory": {}}, "accesory"),
        ({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}, "150"),
        (
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "a" * 256,
                        "text": {"type": "plain_text", "text": "b"},
                    }
                ],
            },
            "255",
        ),
    ],
)
def test_invalid_block_is_rejected(
    client: WebClient, state: StandinState, block: dict[str, Any], why: str
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0ROTATE", text="fallback", blocks=[block])
    assert caught.value.response["error"] == "invalid_arguments"
    assert len(state.violations) == 1
    assert why in " ".join(state.violations[0].messages)


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_message_without_text_fallback_is_rejected(client: WebClient, state: StandinState) -> None:
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C0ROTATE", blocks=rotation_blocks())
    with pytest.raises(SlackApiError):
        client.chat_postEphemeral(
            channel="C0ROTATE", user="U0BOB", text="  ", blocks=rotation_blocks()
        )
    assert [v.method for v in state.violations] == ["chat.postMessage", "chat.postEphemeral"]
    assert all("text fallback" in v.messages[0] for v in state.violations)


def test_form_encoded_call_with_blocks_as_json_string_is_accepted(
    client: WebClient, state: StandinState
) -> None:
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "*form*"}}])
    response = client.api_call(
        "chat.postMessage", params={"channel": "C0ROTATE", "text": "form", "blocks": blocks}
    )
    assert response["ok"]
    assert state.calls[-1].json_body is False
    assert state.channel_messages("C0ROTATE")[0].blocks[0]["type"] == "section"
    assert state.violations == []


def test_json_body_to_a_form_only_method_is_a_violation(
    client: WebClient, state: StandinState
) -> None:
    with pytest.raises(SlackApiError):
        client.api_call("users.info", json={"user": "U0BOB"})
    assert "does not accept JSON" in state.violations[0].messages[0]
    # slack_sdk's own users_info sends form arguments and passes.
    assert client.users_info(user="U0BOB")["user"]["name"] == "bob"


def test_rate_limit_answers_429_with_retry_after_once(
    client: WebClient, state: StandinState
) -> None:
    ts = client.chat_postMessage(channel="C0ROTATE", text="v1")["ts"]
    state.fail_next("chat.update", retry_after=3)
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0ROTATE", ts=ts, text="v2")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] in ("3", ["3"])
    assert caught.value.response["error"] == "ratelimited"
    # Consumed once: the next call goes through.
    client.chat_update(channel="C0ROTATE", ts=ts, text="v2")
    assert state.find_message("C0ROTATE", ts).text == "v2"  # type: ignore[union-attr]


def test_client_with_rate_limit_handler_retries_after_retry_after(
    server: StandinServer, state: StandinState
) -> None:
    client = WebClient(
        base_url=server.base_url,
        token=TOKEN,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    ts = client.chat_postMessage(channel="C0ROTATE", text="v1")["ts"]
    state.fail_next("chat.update", retry_after=1)

    response = client.chat_update(channel="C0ROTATE", ts=ts, text="v2")

    assert response["ok"]
    updates = state.calls_to("chat.update")
    assert [c.status for c in updates] == [429, 200]
    assert updates[0].fault == "http 429"
    assert state.find_message("C0ROTATE", ts).text == "v2"  # type: ignore[union-attr]
    assert state.violations == []


def test_fault_can_fire_several_times_and_server_errors(
    client: WebClient, state: StandinState
) -> None:
    state.fail_next("users.info", status=503, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as caught:
            client.users_info(user="U0BOB")
        assert caught.value.response.status_code == 503
    assert client.users_info(user="U0BOB")["ok"]


def test_not_in_channel_from_membership_and_from_injection(
    client: WebClient, state: StandinState
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0QUIET", text="hello")
    assert caught.value.response["error"] == "not_in_channel"

    state.set_bot_membership("C0QUIET", True)
    assert client.chat_postMessage(channel="C0QUIET", text="hello")["ok"]

    state.fail_next("chat.postMessage", error="not_in_channel")
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0ROTATE", text="hello")
    assert caught.value.response["error"] == "not_in_channel"
    # A runtime error Slack really returns is not a contract violation.
    assert state.violations == []


def test_views_open_update_push_and_publish(client: WebClient, state: StandinState) -> None:
    trigger = state.new_trigger_id("U0ALICE")
    modal = View(
        type="modal",
        callback_id="start_rotation",
        title="Start a rotation",
        submit="Start",
        close="Cancel",
        blocks=[
            InputBlock(
                block_id="secret",
                label="Secret",
                element=PlainTextInputElement(action_id="value"),
            )
        ],
    )
    opened = client.views_open(trigger_id=trigger, view=modal)
    view_id = opened["view"]["id"]
    call = state.calls_to("views.open")[0]
    assert call.json_body and call.http_method == "POST"
    assert [v.id for v in state.open_views("U0ALICE")] == [view_id]

    with pytest.raises(SlackApiError) as caught:
        client.views_open(trigger_id=trigger, view=modal)
    assert caught.value.response["error"] == "exchanged_trigger_id"

    with pytest.raises(SlackApiError) as caught:
        client.views_update(view_id=view_id, hash="stale", view=modal)
    assert caught.value.response["error"] == "hash_conflict"
    updated = client.views_update(view_id=view_id, hash=opened["view"]["hash"], view=modal)
    assert updated["view"]["hash"] != opened["view"]["hash"]

    pushed = client.views_push(trigger_id=state.new_trigger_id("U0ALICE"), view=modal)
    assert pushed["view"]["root_view_id"] == view_id
    assert len(state.open_views("U0ALICE")) == 2
    state.close_view(view_id)
    assert state.open_views("U0ALICE") == []

    home = View(type="home", blocks=[SectionBlock(text="Active rotations: none")])
    client.views_publish(user_id="U0BOB", view=home)
    record = state.home_view("U0BOB")
    assert record is not None and record.view["blocks"][0]["type"] == "section"
    assert state.violations == []


def test_modal_limits_and_home_in_views_open_are_rejected(
    client: WebClient, state: StandinState
) -> None:
    too_many = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Big"},
        "blocks": [{"type": "divider"}] * 101,
    }
    with pytest.raises(SlackApiError):
        client.views_open(trigger_id=state.new_trigger_id("U0BOB"), view=too_many)
    home = {"type": "home", "blocks": [{"type": "divider"}]}
    with pytest.raises(SlackApiError):
        client.views_open(trigger_id=state.new_trigger_id("U0BOB"), view=home)
    assert len(state.violations) == 2
    assert "101 blocks" in state.violations[0].messages[0]
    assert "modal" in state.violations[1].messages[0]


def test_response_url_payloads_are_recorded(server: StandinServer, state: StandinState) -> None:
    url = state.new_response_url("C0ROTATE", "U0OUT")
    assert url.startswith(server.root_url + "response/")
    reply = WebhookClient(url).send(text="This step is <@U0BOB>'s", response_type="ephemeral")
    assert reply.status_code == 200
    [ephemeral] = state.ephemerals_for("U0OUT")
    assert ephemeral.text == "This step is <@U0BOB>'s"
    assert ephemeral.source == "response_url"
    assert state.calls[-1].method == "response_url"

    WebhookClient(state.new_response_url("C0ROTATE", "U0ALICE")).send(
        text="Rotation R-42 started", response_type="in_channel"
    )
    assert [m.text for m in state.channel_messages("C0ROTATE")] == ["Rotation R-42 started"]

    original = state.channel_messages("C0ROTATE")[0]
    WebhookClient(state.new_response_url("C0ROTATE", "U0BOB", message_ts=original.ts)).send(
        text="Signed off", replace_original=True
    )
    assert state.find_message("C0ROTATE", original.ts).text == "Signed off"  # type: ignore[union-attr]

    bad = WebhookClient(state.new_response_url("C0ROTATE", "U0BOB")).send(blocks=rotation_blocks())
    assert bad.status_code == 400
    assert state.violations[-1].method == "response_url"


def test_auth_and_unknown_methods(
    server: StandinServer, client: WebClient, state: StandinState
) -> None:
    anonymous = WebClient(base_url=server.base_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        anonymous.auth_test()
    assert caught.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.postMessageTypo", json={"channel": "C0ROTATE", "text": "x"})
    assert caught.value.response["error"] == "unknown_method"
    assert [v.method for v in state.violations] == ["auth.test", "chat.postMessageTypo"]

    # A real method the stand-in does not model answers ok and is recorded.
    assert client.api_call("team.info")["ok"]
    assert state.calls[-1].method == "team.info"
    assert client.auth_test()["user_id"] == state.bot_user_id


def test_directory_lookups_dms_and_permalinks(client: WebClient, state: StandinState) -> None:
    assert client.usergroups_users_list(usergroup="S0DATAENG")["users"] == ["U0BOB", "U0ALICE"]
    with pytest.raises(SlackApiError) as caught:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert caught.value.response["error"] == "no_such_subteam"
    assert client.users_info(user="U0ALICE")["user"]["is_admin"] is True

    dm = client.conversations_open(users="U0BOB")["channel"]["id"]
    assert dm.startswith("D")
    assert client.conversations_open(users=["U0BOB"])["channel"]["id"] == dm
    client.chat_postMessage(channel=dm, text="Reminder: R-42 waits for you")
    assert state.channel_messages(dm)[0].text.startswith("Reminder")

    info = client.conversations_info(channel="C0QUIET")["channel"]
    assert info["is_member"] is False and info["name"] == "quiet"
    assert sorted(client.conversations_members(channel="C0ROTATE")["members"]) == sorted(
        ["U0ALICE", "U0BOB", state.bot_user_id]
    )

    ts = client.chat_postMessage(channel="C0ROTATE", text="parent")["ts"]
    link = client.chat_getPermalink(channel="C0ROTATE", message_ts=ts)["permalink"]
    assert link.endswith("/archives/C0ROTATE/p" + ts.replace(".", ""))
    client.reactions_add(channel="C0ROTATE", timestamp=ts, name="white_check_mark")
    assert state.find_message("C0ROTATE", ts).reactions == {  # type: ignore[union-attr]
        "white_check_mark": [state.bot_user_id]
    }
    assert state.violations == []


def test_forbidden_secret_value_in_a_call_is_a_violation(
    client: WebClient, state: StandinState
) -> None:
    state.forbid("s3cr3t-value-123")
    client.chat_postMessage(channel="C0ROTATE", text="new key is s3cr3t-value-123")
    assert "secret value" in state.violations[0].messages[0]


def test_state_snapshot_and_long_poll_feed(
    server: StandinServer, client: WebClient, state: StandinState
) -> None:
    client.chat_postEphemeral(channel="C0ROTATE", user="U0BOB", text="only bob sees this")
    bob = get_json(server.root_url + "standin/state?user=U0BOB")
    alice = get_json(server.root_url + "standin/state?user=U0ALICE")
    assert [e["text"] for e in bob["ephemerals"]] == ["only bob sees this"]
    assert alice["ephemerals"] == []
    assert {c["id"] for c in bob["channels"]} >= {"C0ROTATE", "C0QUIET"}

    since = bob["seq"]
    idle = get_json(server.root_url + f"standin/changes?since={since}&timeout=0")
    assert idle["changes"] == []

    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            get_json(server.root_url + f"standin/changes?since={since}&timeout=20")
        )
    )
    waiter.start()
    client.chat_postMessage(channel="C0ROTATE", text="wake up")
    waiter.join(timeout=30)
    kinds = [c["kind"] for c in result["changes"]]
    assert "message" in kinds
    assert result["seq"] > since

    found = state.wait_for(lambda s: s.channel_messages("C0ROTATE"), timeout=5)
    assert found[0].text == "wake up"
