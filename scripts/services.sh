#!/usr/bin/env bash
# Makes sure the local RabbitMQ and Redis that the integration tests talk to are running.
set -euo pipefail

usage() {
  echo "usage: scripts/services.sh   (starts RabbitMQ and Redis on 127.0.0.1 if they are down)"
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi

if ! rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
  # A node whose app was stopped (by an interrupted broker-restart test) needs only start_app.
  echo "starting RabbitMQ" >&2
  rabbitmqctl start_app >/dev/null 2>&1 || rabbitmq-server -detached
  rabbitmqctl await_startup --timeout 120 >/dev/null
fi
