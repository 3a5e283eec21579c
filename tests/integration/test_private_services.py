"""The private servers of the fault tests really are separate from the shared ones, and their faults are real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import amqp
import kombu
import kombu.exceptions
import pytest
import redis

from tests.conftest import BACKEND_URL, BROKER_URL, REPO, services_up
from tests.private_services import (  # noqa: F401
    PrivateRabbitMQ,
    RedisFactory,
    accepts_tcp,
    private_broker_url,
    private_rabbitmq,
    private_redis,
    sweep_dead_sessions,
    wait_until,
)


def test_redis_outage_refuses_connections_keeps_data_and_spares_shared_redis(
        private_redis: RedisFactory) -> None:  # noqa: F811
    services_up()
    server = private_redis()
    server.client().set("kept", "yes")
    shared = redis.Redis.from_url(BACKEND_URL, socket_timeout=2)
    with server.outage():
        with pytest.raises(redis.ConnectionError):
            server.client(timeout=0.5).ping()
        assert shared.ping()
    assert server.client().get("kept") == b"yes"


@pytest.mark.parametrize("persistent", [True, False])
def test_kill_loses_data_unless_persistent_and_restart_empty_always_does(
        private_redis: RedisFactory, persistent: bool) -> None:  # noqa: F811
    server = private_redis(persistent=persistent)
    server.client().set("key", "value")
    first = server.pid
    server.kill()
    server.start()
    assert server.pid != first
    assert server.client().get("key") == (b"value" if persistent else None)
    server.client().set("key", "value")
    server.restart_empty()
    assert server.client().get("key") is None


def test_frozen_redis_times_out_until_thawed(private_redis: RedisFactory) -> None:  # noqa: F811
    server = private_redis()
    client = server.client(timeout=0.3)
    with server.frozen(), pytest.raises(redis.TimeoutError):
        client.ping()
    assert client.ping()


@pytest.mark.parametrize("ending", ["atexit", "sigkill"])
def test_no_redis_outlives_its_python_process(ending: str) -> None:
    """Finalizers aside: a session that exits without them (atexit) or is SIGKILLed leaves no server."""
    script = textwrap.dedent(f"""
        import os, signal
        from tests.private_services import PrivateRedis
        server = PrivateRedis()
        server.start()
        print(server.pid, server.port, server.folder, flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    # A child importing tests.conftest would otherwise make itself a RabbitMQ vhost.
    env = {**os.environ, "ATLASPIPE_TEST_BROKER_URL": BROKER_URL}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert child.stdout, child.stderr
    pid, port, folder = child.stdout.split()
    # The main thread turns zombie before the others have gone and closed the socket.
    wait_until(lambda: ended(int(pid)) and not accepts_tcp(int(port)), timeout=10, what=f"redis-server {pid} to end")
    if ending == "sigkill":
        assert Path(folder).exists()
        sweep_dead_sessions()
    assert not Path(folder).exists()


def ended(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it (which takes a second or two here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def shared_broker_connection() -> kombu.Connection:
    connection = kombu.Connection(BROKER_URL, connect_timeout=3)
    connection.ensure_connection(max_retries=1)
    return connection


def test_rabbitmq_app_stop_refuses_connections_and_spares_shared_node(
        private_rabbitmq: PrivateRabbitMQ, private_broker_url: str) -> None:  # noqa: F811
    services_up()
    with shared_broker_connection() as before:
        channel = before.channel()
        with private_rabbitmq.outage():
            with (pytest.raises(kombu.exceptions.OperationalError),
                  kombu.Connection(private_broker_url, connect_timeout=1) as refused):
                refused.ensure_connection(max_retries=1)
            # A connection opened before the stop still works, and new ones are accepted.
            channel.queue_declare(queue="", exclusive=True)
            with shared_broker_connection() as during:
                during.channel().queue_declare(queue="", exclusive=True)
    with kombu.Connection(private_broker_url, connect_timeout=3) as back:
        back.ensure_connection(max_retries=1)


def test_durable_message_survives_restart_of_the_private_node(
        private_rabbitmq: PrivateRabbitMQ, private_broker_url: str) -> None:  # noqa: F811
    durable = kombu.Queue("durable", kombu.Exchange("durable", type="direct", durable=True), "durable", durable=True)
    transient = kombu.Queue("transient", kombu.Exchange("transient", type="direct", durable=False), "transient",
                            durable=False)
    with kombu.Connection(private_broker_url, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        producer.publish({"n": 1}, exchange=durable.exchange, routing_key="durable", declare=[durable],
                         delivery_mode=2, retry=False)
        transient(connection.default_channel).declare()
    node_before = private_rabbitmq.pid
    private_rabbitmq.restart()
    assert private_rabbitmq.pid != node_before
    with kombu.Connection(private_broker_url) as connection:
        message = durable(connection.default_channel).get(no_ack=True)
        assert message is not None and message.payload == {"n": 1}
        with pytest.raises(amqp.exceptions.NotFound):
            connection.default_channel.queue_declare(queue="transient", passive=True)
