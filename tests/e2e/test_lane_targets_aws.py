"""The lanes flow with AWS Secrets Manager as the primary store and as a lane target, on moto's
server (a real process on loopback), through `rotabot serve` and signed Slack requests; the
issuer is a real Redis ACL user. Prod's target is a dotenv file.

Each read below names ``VersionStage=AWSCURRENT``, which is what a plain GetSecretValue means on
AWS. moto's server answers a plain read from the last PutSecretValue instead, whatever its
stage (tests/integration/test_aws_secretsmanager.py keeps that as a strict xfail).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import BotConfig
from e2e_helpers import click_parent, click_step, has_button, parent_message, wait_parent
from harness.backends import redis_acl_user, redis_auth_ok
from harness.messages import asks
from harness.serve import catalog_head

from adapters.env_file import EnvFileTarget
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

pytestmark = [pytest.mark.aws, pytest.mark.redis]

Bot = Any
REGION = "us-east-1"

CATALOG = catalog_head(observe="1h", lanes=("dev", "prod")) + """\
stores:
  aws:
    kind: aws-secretsmanager
    region: {region}
    endpoint_url: "{endpoint}"
    access_key_id_env: AWS_ACCESS_KEY_ID
    secret_access_key_env: AWS_SECRET_ACCESS_KEY
issuers:
  cache: {{kind: redis-acl, url_env: REDIS_ADMIN_URL}}
secrets:
  cache-password:
    issuer: {{name: cache, user: {user}}}
    store: {{name: aws, path: {secret_id}}}
    targets:
      dev: [{{kind: aws-secretsmanager, store: aws, secret_id: {dev_id}}}]
      prod: [{{kind: env-file, file: "{prod_env}", key: CACHE_PASSWORD, field: password}}]
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: restart}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: restart}}
"""


@dataclass
class AwsLanes:
    sm: Any  # the test's own boto3 client
    user: str
    initial: str
    secret_id: str
    dev_id: str
    prod_env: Path
    redis_host: str
    redis_port: int

    def current(self, secret_id: str) -> str:
        value = self.sm.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        return str(json.loads(value["SecretString"])["password"])

    def staged(self, stage: str) -> str:
        value = self.sm.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        return str(json.loads(value["SecretString"])["password"])

    def prod(self) -> str:
        material = EnvFileTarget(self.prod_env, "CACHE_PASSWORD").read()
        assert material is not None
        return material.reveal()["CACHE_PASSWORD"]

    def auth_ok(self, password: str) -> bool:
        return redis_auth_ok(self.redis_host, self.redis_port, self.user, password)


@pytest.fixture
def aws_lanes(tmp_path: Path, aws_env: dict[str, str], redis_url: str,
              redis_server: Any) -> AwsLanes:
    sm = boto3.client(
        "secretsmanager", region_name=REGION, endpoint_url=aws_env["ENDPOINT"],
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"])
    tag = uuid.uuid4().hex[:10]
    user = f"cache_{tag[:6]}"
    initial = "initial-" + uuid.uuid4().hex
    redis_acl_user(redis_url, user, initial)
    current = json.dumps({"username": user, "password": initial})
    world = AwsLanes(sm, user, initial, f"e2e/{tag}/cache", f"dev/{tag}/cache",
                     tmp_path / "prod.env", redis_server.host, redis_server.port)
    # As things were before rotabot: every lane reads the current password.
    sm.create_secret(Name=world.secret_id, SecretString=current)
    sm.create_secret(Name=world.dev_id, SecretString=current)
    world.prod_env.write_text(f"# prod\nLOG_LEVEL=info\nCACHE_PASSWORD={initial}\n")
    return world


@pytest.fixture
def bot_config(aws_lanes: AwsLanes, aws_env: dict[str, str], redis_url: str) -> BotConfig:
    w = aws_lanes
    return BotConfig(
        catalog=CATALOG.format(region=REGION, endpoint=aws_env["ENDPOINT"], user=w.user,
                               secret_id=w.secret_id, dev_id=w.dev_id, prod_env=w.prod_env),
        env={"AWS_ACCESS_KEY_ID": aws_env["AWS_ACCESS_KEY_ID"],
             "AWS_SECRET_ACCESS_KEY": aws_env["AWS_SECRET_ACCESS_KEY"],
             "REDIS_ADMIN_URL": redis_url},
        forbid=(w.initial, aws_env["AWS_SECRET_ACCESS_KEY"]),
    )


def receipt(bot: Bot, needle: str) -> Message:
    return bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts) if needle in m.text), None), 15)


def test_aws_primary_and_target_lane_by_lane_then_rollback(bot: Bot, aws_lanes: AwsLanes) -> None:
    w = aws_lanes
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    receipt(bot, "wrote the new credential where the dev lane's consumers read it")
    new = w.staged("AWSPENDING")  # native staging label: the new version waits as AWSPENDING
    bot.state.forbid(new)
    assert new != w.initial and w.auth_ok(new) and w.auth_ok(w.initial)

    # Dev's turn: dev's secret has the new password; the primary's AWSCURRENT and prod's file
    # still the old one.
    assert w.current(w.dev_id) == new
    assert w.current(w.secret_id) == w.initial
    assert w.prod() == w.initial
    assert not any(asks(m, "inference-api", "Distributed")
                   for m in bot.state.thread("C0ROTATE", parent_message(bot).ts))

    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")
    receipt(bot, "wrote the new credential where the prod lane's consumers read it")
    assert w.prod() == new
    assert "LOG_LEVEL=info" in w.prod_env.read_text()  # the file's other lines are kept
    assert w.current(w.secret_id) == w.initial

    click_step(bot, "U0ALICE", "inference-api", "Distributed")
    click_step(bot, "U0ALICE", "inference-api", "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    wait_parent(bot, "observing")
    # The switch moved AWSCURRENT; AWS keeps the old version as AWSPREVIOUS for rollback.
    assert w.current(w.secret_id) == new
    assert w.staged("AWSPREVIOUS") == w.initial

    click_parent(bot, Action.ROLLBACK)
    modal = bot.state.wait_for(lambda s: next(iter(s.open_views("U0ADMIN")), None), 10)
    bot.slack.submit_view("U0ADMIN", modal.id,
                          {"new_credential": "revoke", "reason": "dev jobs fail"})
    told = receipt(bot, "rolled back R-1")
    assert f"`aws-secretsmanager {w.dev_id}`" in told.text
    assert f"`env-file {w.prod_env} CACHE_PASSWORD`: written" in told.text
    assert w.current(w.secret_id) == w.initial
    assert w.current(w.dev_id) == w.initial
    assert w.prod() == w.initial
    assert w.auth_ok(w.initial) and not w.auth_ok(new)

    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    log = bot.log_text()
    for value in (w.initial, new):
        assert value not in dump and value not in log
