"""Lane targets where people look: `rotabot catalog map`, `/rotate map`, the dry run and the
rotation message (written, being written, waiting for its turn)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

from fakes import FakeBackends, FakeDatabase

from bot.catalog import Catalog, parse_catalog
from bot.catalog.dependency_map import TargetView, dependency_map, hook_url, render_map
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.services.rotations import RotationService, lane_target_labels
from handlers import blocks

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SECRET = "model-api-key"

CATALOG = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      admins: [U0SECOPS]
      lanes: [dev, staging, prod]
    stores:
      vault: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
      aws: {kind: aws-secretsmanager, region: eu-west-1}
    secrets:
      model-api-key:
        description: Model provider key
        issuer: {kind: manual}
        store: {name: vault, path: ai/model-api-key}
        targets:
          dev:
            - {kind: vault-kv2, store: vault, path: dev/ai/model-api-key, mount: secret}
          staging:
            - {kind: env-file, file: /srv/jobs/.env, key: MODEL_API_KEY, field: api_key}
          prod:
            - kind: aws-secretsmanager
              store: aws
              secret_id: prod/ai/model-api-key
              reload:
                url: "https://deploy.example/hooks/restart?service=inference#now"
                method: PUT
                signing_key_env: HOOK_KEY
        consumers:
          notebook: {owner: U0DEV, lane: dev, reload: hot}
          ingest:
            owner: U0STAGE
            lane: staging
            reload: restart
            targets:
              - {kind: env-file, file: /srv/ingest/.env, key: MODEL_API_KEY, field: api_key}
          inference-api: {owner: S0PRODTEAM, lane: prod, reload: hot}
      plain-key:
        issuer: {kind: manual}
        store: {name: aws, path: ai/plain-key}
        consumers:
          web: {owner: U0WEB, lane: prod, reload: hot}
      mixed-key:
        issuer: {kind: manual}
        store: {name: vault, path: ai/mixed-key}
        targets:
          staging:
            - {kind: env-file, file: /srv/mixed/.env, key: MIXED_KEY}
        consumers:
          tool: {owner: U0DEV, lane: dev, reload: hot}
          batch: {owner: U0STAGE, lane: staging, reload: restart}
    """)

DEV_LABELS = ("vault-kv2 secret/dev/ai/model-api-key",)
STAGING_LABELS = (
    "env-file /srv/jobs/.env MODEL_API_KEY", "env-file /srv/ingest/.env MODEL_API_KEY")
PROD_LABELS = ("aws-secretsmanager prod/ai/model-api-key",)


def catalog() -> Catalog:
    return parse_catalog(CATALOG)


def mrkdwn(rendered: blocks.Rendered) -> list[str]:
    """Every mrkdwn text of a message's blocks, in order."""

    def walk(node: Any) -> list[str]:
        if isinstance(node, list):
            return [t for item in node for t in walk(item)]
        if not isinstance(node, dict):
            return []
        found = [str(node["text"])] if node.get("type") == "mrkdwn" and "text" in node else []
        return found + [t for value in node.values() for t in walk(value)]

    return walk([b.to_dict() for b in rendered[1]])


def lane_section(rendered: blocks.Rendered, lane: str) -> list[str]:
    """The lines of the rotation message's section for ``lane`` (heading first)."""
    (text,) = [t for t in mrkdwn(rendered) if t.startswith(f"*{lane}* · ")]
    return text.split("\n")


# --- rotabot catalog map ----------------------------------------------------------------


def test_render_map_lists_each_lanes_targets_under_it() -> None:
    assert render_map(catalog(), SECRET) == textwrap.dedent("""\
        secret: model-api-key
        description: Model provider key
        issuer: manual (inline), keeps old and new valid together
        evidence of the old credential's use: none: rotabot cannot ask the provider
        store: vault (vault-kv2, http://127.0.0.1:8200, mount secret), path ai/model-api-key
        lanes, in validation order: dev -> staging -> prod

        [dev]
          targets (rotabot writes the new credential here when the lane opens):
            vault-kv2 secret/dev/ai/model-api-key (store vault)
          notebook: owner U0DEV, reload hot
            health check: no health check
            rollback: no rollback note
            evidence: optional (POST /evidence)

        [staging]
          targets (rotabot writes the new credential here when the lane opens):
            env-file /srv/jobs/.env MODEL_API_KEY (field api_key)
            env-file /srv/ingest/.env MODEL_API_KEY (field api_key)
          ingest: owner U0STAGE, reload restart
            health check: no health check
            rollback: no rollback note
            evidence: optional (POST /evidence)

        [prod]
          targets (rotabot writes the new credential here when the lane opens):
            aws-secretsmanager prod/ai/model-api-key (store aws)
              reload hook: PUT https://deploy.example/hooks/restart
          inference-api: owner S0PRODTEAM, reload hot
            health check: no health check
            rollback: no rollback note
            evidence: optional (POST /evidence)
        """)


def test_structured_map_carries_targets_and_hooks_without_query() -> None:
    m = dependency_map(catalog(), SECRET)

    by_lane = {lane.name: lane.targets for lane in m.lanes}
    assert by_lane["dev"] == (TargetView(
        label=DEV_LABELS[0], store="vault", field=None, reload=None),)
    assert [t.label for t in by_lane["staging"]] == list(STAGING_LABELS)
    assert by_lane["prod"] == (TargetView(
        label=PROD_LABELS[0], store="aws", field=None,
        reload="PUT https://deploy.example/hooks/restart"),)
    # The labels are the ones rotations record when a lane opens.
    assert {lane: tuple(t.label for t in ts) for lane, ts in by_lane.items()} == (
        lane_target_labels(catalog().secret(SECRET)))


def test_map_without_targets_is_unchanged_and_shows_an_aws_store() -> None:
    m = dependency_map(catalog(), "plain-key")
    assert all(lane.targets == () for lane in m.lanes)
    text = render_map(catalog(), "plain-key")
    assert "targets" not in text
    assert "store: aws (aws-secretsmanager, region eu-west-1), path ai/plain-key\n" in text


def test_hook_url_drops_query_fragment_and_user_info() -> None:
    assert hook_url("https://ops:pw@deploy.example:8443/hooks/r?token=x#y") == (
        "https://deploy.example:8443/hooks/r")


# --- /rotate map ------------------------------------------------------------------------


def test_map_message_shows_targets_per_lane() -> None:
    (text,) = mrkdwn(blocks.map_message(dependency_map(catalog(), SECRET)))
    lines = text.split("\n")

    dev, staging, prod = (lines.index(f"*{lane}*") for lane in ("dev", "staging", "prod"))
    assert lines[dev + 1] == "   targets (written when the lane opens):"
    assert lines[dev + 2] == (
        "   :inbox_tray: `vault-kv2 secret/dev/ai/model-api-key` · store `vault`")
    assert lines[staging + 2:staging + 4] == [
        "   :inbox_tray: `env-file /srv/jobs/.env MODEL_API_KEY` · field `api_key`",
        "   :inbox_tray: `env-file /srv/ingest/.env MODEL_API_KEY` · field `api_key`",
    ]
    assert lines[prod + 2] == (
        "   :inbox_tray: `aws-secretsmanager prod/ai/model-api-key` · store `aws` · "
        "reload hook PUT https://deploy.example/hooks/restart")
    assert "service=inference" not in text
    assert lines[prod + 3].startswith("   • `inference-api`")  # consumers follow the targets


def test_map_message_escapes_target_text() -> None:
    hostile = CATALOG.replace("/srv/jobs/.env", "/srv/<!here>&/.env")
    (text,) = mrkdwn(blocks.map_message(dependency_map(parse_catalog(hostile), SECRET)))
    assert "<!here>" not in text
    assert "`env-file /srv/&lt;!here&gt;&amp;/.env MODEL_API_KEY`" in text


# --- /rotate start --dry-run ------------------------------------------------------------


def dry_run(cat: Catalog, secret: str) -> blocks.Rendered:
    service = RotationService(
        catalog=cat, uow_factory=FakeDatabase().uow,
        backends=FakeBackends(None, None),  # type: ignore[arg-type]  # not an admin: unasked
        clock=FixedClock(),
    )
    plan = service.plan(secret, viewer="U0EVE")
    assert plan.backend_checked is False
    return blocks.plan_message(plan)


def test_dry_run_lists_each_lanes_targets() -> None:
    lines = mrkdwn(dry_run(catalog(), SECRET))[0].split("\n")

    heading = "   targets (rotabot writes the new credential here before the owners are asked):"
    dev, staging, prod = (lines.index(f"*{i}. {lane}*")
                          for i, lane in enumerate(("dev", "staging", "prod"), start=1))
    assert lines[dev + 1:dev + 3] == [heading, f"   :inbox_tray: `{DEV_LABELS[0]}`"]
    assert lines[staging + 1:staging + 4] == [
        heading, *(f"   :inbox_tray: `{label}`" for label in STAGING_LABELS)]
    assert lines[prod + 1:prod + 3] == [heading, f"   :inbox_tray: `{PROD_LABELS[0]}`"]
    assert lines[prod + 3] == "   • `inference-api` · <!subteam^S0PRODTEAM> · hot"


def test_dry_run_lists_targets_only_for_lanes_that_have_them() -> None:
    lines = mrkdwn(dry_run(catalog(), "mixed-key"))[0].split("\n")

    dev, staging = lines.index("*1. dev*"), lines.index("*2. staging*")
    assert lines[dev + 1] == "   • `tool` · <@U0DEV> · hot"
    assert lines[staging + 2] == "   :inbox_tray: `env-file /srv/mixed/.env MIXED_KEY`"
    assert lines[staging + 3] == "   • `batch` · <@U0STAGE> · restart"


# --- the rotation message ---------------------------------------------------------------


def gated_rotation() -> Rotation:
    spec = catalog().secret(SECRET)
    r = Rotation.begin(
        secret=SECRET, lanes=["dev", "staging", "prod"],
        consumers=[ConsumerPlan(c.name, c.lane, c.owner, c.reload)
                   for c in spec.consumers.values()],
        overlap=timedelta(hours=24), observe=timedelta(hours=2), store_path="ai/model-api-key",
        actor="U0SECOPS", now=T0, gated_lanes=list(lane_target_labels(spec)),
    )
    r.id = 12
    return r


def prepared(r: Rotation) -> Rotation:
    r.prepared(old_version="3", new_version="staged-1", old_key_id=None, new_key_id=None,
               actor="U0SECOPS", now=T0)
    return r


def open_lane(r: Rotation, lane: str) -> None:
    labels = lane_target_labels(catalog().secret(SECRET))[lane]
    assert r.opened_lane(lane, labels, actor="rotabot", now=T0)


def validate(r: Rotation, consumer: str, owner: str) -> None:
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
        r.mark_step(consumer, step, actor=owner, now=T0)


WAITING = ":white_circle: targets: written when this lane's turn comes"


def test_before_the_new_credential_every_lane_waits_for_its_turn() -> None:
    r = gated_rotation()
    rendered = blocks.rotation_message(r)
    for lane in ("dev", "staging", "prod"):
        assert lane_section(rendered, lane)[1] == WAITING


def test_the_lane_whose_turn_it_is_is_being_written() -> None:
    rendered = blocks.rotation_message(prepared(gated_rotation()))

    assert lane_section(rendered, "dev")[1] == (
        ":hourglass: targets: being written now; its owners are asked once they "
        "hold the new credential")
    assert lane_section(rendered, "staging")[1] == WAITING


def test_written_lanes_name_their_targets_and_later_lanes_wait() -> None:
    r = prepared(gated_rotation())
    open_lane(r, "dev")
    validate(r, "notebook", "U0DEV")
    open_lane(r, "staging")

    rendered = blocks.rotation_message(r)

    assert lane_section(rendered, "dev")[1] == (
        ":inbox_tray: targets: written: `vault-kv2 secret/dev/ai/model-api-key`")
    assert lane_section(rendered, "staging")[1] == (
        ":inbox_tray: targets: written: `env-file /srv/jobs/.env MODEL_API_KEY`, "
        "`env-file /srv/ingest/.env MODEL_API_KEY`")
    assert lane_section(rendered, "staging")[2].startswith(":white_circle: `ingest`")
    assert lane_section(rendered, "prod")[1] == WAITING


def test_a_failed_lane_write_says_resume_writes_them_again() -> None:
    r = prepared(gated_rotation())
    r.fail(reason="opening the dev lane failed: vault-kv2 ...: StoreConflict", now=T0)

    rendered = blocks.rotation_message(r)

    assert lane_section(rendered, "dev")[1] == (
        ":warning: targets: not written yet; *Resume* writes them again")
    assert lane_section(rendered, "prod")[1] == WAITING


def test_rollback_tells_targets_got_the_previous_credential_back() -> None:
    r = prepared(gated_rotation())
    open_lane(r, "dev")
    r.rollback(actor="U0SECOPS", now=T0)

    rendered = blocks.rotation_message(r)

    assert lane_section(rendered, "dev")[1] == (
        ":leftwards_arrow_with_hook: targets: written, then given the previous credential back "
        "(the thread's receipt lists each): `vault-kv2 secret/dev/ai/model-api-key`")
    assert lane_section(rendered, "staging")[1] == (
        ":white_circle: targets: never written (the rotation ended before its turn)")


def test_compact_message_keeps_the_target_line() -> None:
    spec = catalog().secret(SECRET)
    many = [ConsumerPlan(f"job-{i:02d}", "dev", "U0DEV", "hot") for i in range(45)]
    r = Rotation.begin(
        secret=SECRET, lanes=["dev"], consumers=many, overlap=timedelta(hours=1),
        observe=timedelta(hours=1), store_path="ai/model-api-key", actor="U0SECOPS", now=T0,
        gated_lanes=["dev"],
    )
    r.id = 13
    prepared(r)
    assert r.opened_lane("dev", lane_target_labels(spec)["dev"], actor="rotabot", now=T0)

    lines = lane_section(blocks.rotation_message(r), "dev")

    assert lines[1] == ":inbox_tray: targets: written: `vault-kv2 secret/dev/ai/model-api-key`"
    assert lines[2].startswith("still to validate: ")


def test_long_target_lists_are_cut_with_a_count() -> None:
    r = prepared(gated_rotation())
    labels = [f"env-file /srv/app{i}/.env KEY" for i in range(14)]
    assert r.opened_lane("dev", labels, actor="rotabot", now=T0)

    line = lane_section(blocks.rotation_message(r), "dev")[1]

    assert "`env-file /srv/app9/.env KEY`" in line and "app10" not in line
    assert line.endswith(" and 4 more")


def test_only_lanes_with_targets_show_a_target_line() -> None:
    r = prepared(gated_rotation())
    r.gated_lanes = ("staging",)  # dev and prod without targets: open on their turn as before

    rendered = blocks.rotation_message(r)

    assert r.phase is Phase.DISTRIBUTING
    assert lane_section(rendered, "dev")[1].startswith(":white_circle: `notebook`")
    assert lane_section(rendered, "staging")[1] == WAITING
    assert lane_section(rendered, "prod")[1].startswith(":white_circle: `inference-api`")
