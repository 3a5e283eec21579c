#!/usr/bin/env bash
# The Compose deployment end to end on a real Docker engine: a private dockerd, offline stand-in
# images, scripts/docker-run.sh --scale 2, then health, exact results, auth, Prometheus targets,
# a killed worker and a restarted broker mid-run, the CPU comparison, and a full clean-up.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-o DIR] [--scale N] [--keep-stack] [--keep-daemon] [--skip-faults]
                      [--skip-cpu] [--fresh-images] [-h]

Needs root on a Debian/Ubuntu machine (it installs docker.io, docker-compose and mmdebstrap with
apt-get when missing). Everything runs on a private Docker daemon:

  data-root  \$ATLASPIPE_DOCKER_DATA_ROOT (default /var/lib/atlaspipe-docker): kept between runs, so
             the stand-in images and the build cache make later runs fast
  socket     \$ATLASPIPE_DOCKER_SOCKET (default /run/atlaspipe-docker.sock), never the default one

Steps: start the daemon (unless it already answers on that socket); build the base image from
Debian packages with mmdebstrap when the pinned python image cannot be pulled, and stand-ins for
RabbitMQ, Redis and Prometheus (tagged atlaspipe-standin/*, used only through
compose/standins.yaml); run scripts/docker-run.sh --scale N; check that every service is healthy,
that the run's histograms are bit-identical to 'atlaspipe run' on the same input, that the report
and Flower answer 401 without credentials, that every Prometheus target is up, that a run survives
'docker kill' of a process worker and 'docker restart' of RabbitMQ with the exact result; run
scripts/cpu-compare.sh (docker-compose against local, from cgroup figures); record each container's
peak memory. At the end it removes every container, network and volume it created (the images
and the build cache stay in the data-root: they make the next run fast), and, if it started the
daemon, stops it and puts back the docker0 bridge, ip_forward and the iptables rules as they were:
a root daemon with NAT rules is not left running on a shared machine.

  -o DIR          where to write the report (compose-e2e.json, memory.txt, cpu/) (default: a temp dir)
  --scale N       process workers (default 2)
  --keep-stack    leave the stack and the daemon running (for debugging; clean up with
                  COMPOSE_PROJECT_NAME=... docker-compose down -v)
  --keep-daemon   leave the daemon running (the stack is still removed)
  --skip-faults   skip the docker kill / docker restart runs
  --skip-cpu      skip scripts/cpu-compare.sh
  --fresh-images  rebuild the stand-in and base images and drop the build cache (a cold run)
  -h, --help      this help

Exit status: 0 all checks passed, 1 a check failed, 77 this machine cannot run Docker (not root,
no apt-get, or dockerd does not start).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
SCALE=2
KEEP_STACK=0
KEEP_DAEMON=0
FAULTS=1
CPU=1
FRESH=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o|--output) OUT="${2:?-o needs a directory}"; shift ;;
    --scale) SCALE="${2:?--scale needs a number}"; shift ;;
    --keep-stack) KEEP_STACK=1; KEEP_DAEMON=1 ;;
    --keep-daemon) KEEP_DAEMON=1 ;;
    --skip-faults) FAULTS=0 ;;
    --skip-cpu) CPU=0 ;;
    --fresh-images) FRESH=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "--scale needs a positive integer" >&2; exit 2; }

DATA_ROOT="${ATLASPIPE_DOCKER_DATA_ROOT:-/var/lib/atlaspipe-docker}"
SOCKET="${ATLASPIPE_DOCKER_SOCKET:-/run/atlaspipe-docker.sock}"
EXEC_ROOT="${SOCKET%.sock}"
PIDFILE="$EXEC_ROOT.pid"
LOCKFILE="$EXEC_ROOT.lock"
INPUT_CACHE="${ATLASPIPE_E2E_INPUTS:-/var/cache/atlaspipe-e2e}"
# Inputs of the fault runs: ~600k generated events in chunks of 20k, ~40 chunks of a fraction of a
# second each, long enough to act mid-run on two cores.
FAULT_EVENTS=600000
FAULT_CHUNK=20000
STARTED=$SECONDS

cannot_run() { echo "compose-e2e: cannot run here: $*" >&2; exit 77; }
say() { printf '\n== [%4ds] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
fail() { echo "compose-e2e: FAILED: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || cannot_run "needs root (it starts a private dockerd)"
[[ "$(uname -s)" == Linux ]] || cannot_run "needs Linux"

if [[ -z "$OUT" ]]; then OUT="$(mktemp -d /tmp/compose-e2e.XXXXXX)"; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/compose-e2e-work.XXXXXX)"
chmod 0700 "$WORK"

# One run at a time per daemon: concurrent CI jobs on one machine queue here.
exec 9>"$LOCKFILE"
if ! flock -w 1200 9; then fail "another compose-e2e holds $LOCKFILE"; fi

# The Debian docker CLI matches the Debian daemon (and builds with BuildKit without buildx); the
# repository's venv provides atlaspipe for the local reference runs.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
if ! command -v atlaspipe >/dev/null && [[ -x "$ROOT/.venv/bin/atlaspipe" ]]; then
  export PATH="$PATH:$ROOT/.venv/bin"
fi
command -v atlaspipe >/dev/null || cannot_run "atlaspipe is not installed (pip install -e .)"
PYTHON="$(dirname "$(command -v atlaspipe)")/python"
[[ -x "$PYTHON" ]] || PYTHON=python3

# ---------------------------------------------------------------------------------- packages
say "packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || cannot_run "missing ${missing[*]} and no apt-get"
  echo "installing ${missing[*]}" >&2
  # No service may start from the package scripts: the default daemon and socket stay untouched.
  policy_created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || cannot_run "apt-get install ${missing[*]} failed"
  [[ "$policy_created" == 0 ]] || rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------------------------- daemon
export DOCKER_HOST="unix://$SOCKET"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
DAEMON_STARTED=0
BRIDGE_EXISTED=0
ip link show docker0 >/dev/null 2>&1 && BRIDGE_EXISTED=1
IP_FORWARD="$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo 1)"
say "docker daemon on $SOCKET (data-root $DATA_ROOT)"
if ! docker version >/dev/null 2>&1; then
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  # dockerd adds its NAT and FORWARD rules (and a DROP policy) and leaves them when it stops.
  iptables-save >"$WORK/iptables.before" 2>/dev/null || true
  if [[ ! -s "$WORK/iptables.before" ]]; then  # no rules loaded yet: the empty tables
    printf '%s\n' '*filter' ':INPUT ACCEPT' ':FORWARD ACCEPT' ':OUTPUT ACCEPT' COMMIT \
      '*nat' ':PREROUTING ACCEPT' ':INPUT ACCEPT' ':OUTPUT ACCEPT' ':POSTROUTING ACCEPT' COMMIT >"$WORK/iptables.before"
  fi
  # The daemon must not inherit the run lock (fd 9), or it would hold it after this run ends.
  setsid dockerd --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
    --host "unix://$SOCKET" >"$OUT/dockerd.log" 2>&1 < /dev/null 9>&- &
  DAEMON_STARTED=1
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { tail -20 "$OUT/dockerd.log" >&2; cannot_run "dockerd did not start"; }
fi
docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}' >&2
CGROUP_DRIVER="$(docker info --format '{{.CgroupDriver}} cgroup v{{.CgroupVersion}}')"
echo "cgroups: $CGROUP_DRIVER" >&2

PROJECT="atlaspipe-e2e-$$"
export COMPOSE_PROJECT_NAME="$PROJECT"
export COMPOSE_FILE="$ROOT/compose/compose.yaml:$ROOT/compose/standins.yaml"
SAMPLER_PID=""
CREATED_FILES=()

compose() { docker-compose "$@"; }
cleanup() {
  local status=$?
  set +e
  [[ -z "$SAMPLER_PID" ]] || { kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; }
  if [[ "$KEEP_STACK" == 0 ]]; then
    say "clean-up: containers, networks and volumes of $PROJECT"
    compose down --volumes --remove-orphans --timeout 30 >"$OUT/down.log" 2>&1
    local left
    left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
            docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; \
            docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
    [[ -z "$left" ]] || { echo "left behind: $left" >&2; status=1; }
    rm -f ${CREATED_FILES[@]+"${CREATED_FILES[@]}"}
    # The cache stays bounded: superseded atlaspipe images and old build cache go.
    docker image prune -f >/dev/null 2>&1
    docker builder prune -f --keep-storage 4GB >/dev/null 2>&1
    [[ ! -d "$ROOT/compose/secrets" ]] || rmdir --ignore-fail-on-non-empty "$ROOT/compose/secrets" 2>/dev/null
  fi
  if [[ "$DAEMON_STARTED" == 1 && "$KEEP_DAEMON" == 0 ]]; then
    say "stopping the private dockerd"
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null)"
    if [[ -n "$pid" ]]; then
      kill "$pid" 2>/dev/null
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    [[ "$BRIDGE_EXISTED" == 1 ]] || ip link delete docker0 2>/dev/null
    echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
    [[ ! -s "$WORK/iptables.before" ]] || iptables-restore <"$WORK/iptables.before"
  fi
  rm -rf "$WORK"
  say "wall time $((SECONDS - STARTED)) s (report in $OUT)"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TIMINGS=()
mark() { TIMINGS+=("$1=$((SECONDS - STARTED))"); }
mark daemon

# ---------------------------------------------------------------------------------- images
# Recipes of the offline images. Changing one changes its label, and the image is rebuilt.
SUITE=bookworm
PYTHON_PACKAGES="python3,python3-venv,ca-certificates"
SERVICE_PACKAGES="rabbitmq-server,redis-server,prometheus,wget,ca-certificates"
BASE_IMAGE="atlaspipe-standin/python:3.11-$SUITE"
DPKG_OPTS=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
           --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
# The official images' users, so compose's numeric `user:` works with either: rabbitmq 999:999,
# redis 999:1000 (alpine image), prometheus nobody. The hooks are run by mmdebstrap with $1 = the root.
# shellcheck disable=SC2016
RABBITMQ_USER_HOOK='echo "rabbitmq:x:999:999:RabbitMQ:/var/lib/rabbitmq:/usr/sbin/nologin" >>"$1/etc/passwd"; echo "rabbitmq:x:999:" >>"$1/etc/group"; echo "rabbitmq:*:19000:0:99999:7:::" >>"$1/etc/shadow"'
# shellcheck disable=SC2016
SERVICES_HOOK='rm -rf "$1"/usr/share/javascript "$1"/usr/share/nodejs "$1"/usr/bin/promtool "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*;
mkdir -p "$1"/data "$1"/prometheus "$1"/etc/rabbitmq/conf.d "$1"/var/log/rabbitmq "$1"/var/lib/rabbitmq;
chown 999:1000 "$1"/data; chown 65534:65534 "$1"/prometheus;
chown -R 999:999 "$1"/var/lib/rabbitmq "$1"/var/log/rabbitmq "$1"/etc/rabbitmq;
printf "log.console = true\nlog.file = false\n" >"$1"/etc/rabbitmq/conf.d/10-standin.conf'
# shellcheck disable=SC2016
PYTHON_HOOK='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
recipe_hash() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
PYTHON_RECIPE="$(recipe_hash "$SUITE" "$PYTHON_PACKAGES" "${DPKG_OPTS[*]}" "$PYTHON_HOOK")"
SERVICES_RECIPE="$(recipe_hash "$SUITE" "$SERVICE_PACKAGES" "${DPKG_OPTS[*]}" "$RABBITMQ_USER_HOOK" "$SERVICES_HOOK")"
STANDIN_TAGS=(
  "atlaspipe-standin/rabbitmq:3.10-$SUITE"
  "atlaspipe-standin/redis:7.0-$SUITE"
  "atlaspipe-standin/prometheus:2.42-$SUITE"
)
for tag in "${STANDIN_TAGS[@]}"; do
  grep -q "image: $tag\$" "$ROOT/compose/standins.yaml" || fail "compose/standins.yaml does not use $tag"
done

has_image() {  # has_image TAG RECIPE
  [[ "$FRESH" == 0 ]] && [[ "$(docker image inspect -f '{{index .Config.Labels "atlaspipe.standin.recipe"}}' "$1" 2>/dev/null)" == "$2" ]]
}
rootfs() {  # rootfs TAR PACKAGES [HOOK ARGS...]
  local tar="$1" packages="$2"; shift 2
  mmdebstrap --quiet --variant=minbase --include="$packages" --aptopt='Apt::Install-Recommends "false"' \
    "${DPKG_OPTS[@]}" "$@" "$SUITE" "$tar"
}

if [[ "$FRESH" == 1 ]]; then
  say "--fresh-images: dropping the stand-in images and the build cache"
  docker image rm -f "$BASE_IMAGE" "${STANDIN_TAGS[@]}" "atlaspipe:$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n1)" >/dev/null 2>&1 || true
  docker builder prune -af >/dev/null
fi

say "base image"
PINNED="$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$ROOT/Dockerfile")"
if docker image inspect "$PINNED" >/dev/null 2>&1 || timeout 60 docker pull -q "$PINNED" >/dev/null 2>&1; then
  BASE_IMAGE="$PINNED"
  echo "using the pinned $PINNED" >&2
elif has_image "$BASE_IMAGE" "$PYTHON_RECIPE"; then
  echo "$PINNED cannot be pulled; reusing $BASE_IMAGE" >&2
else
  echo "$PINNED cannot be pulled; building $BASE_IMAGE from Debian $SUITE packages" >&2
  rootfs "$WORK/python.tar" "$PYTHON_PACKAGES" --customize-hook="$PYTHON_HOOK"
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change "LABEL atlaspipe.standin.recipe=$PYTHON_RECIPE" "$WORK/python.tar" "$BASE_IMAGE" >/dev/null
  rm -f "$WORK/python.tar"
fi

say "stand-in images for RabbitMQ, Redis and Prometheus"
need_services=0
for tag in "${STANDIN_TAGS[@]}"; do has_image "$tag" "$SERVICES_RECIPE" || need_services=1; done
if [[ "$need_services" == 1 ]]; then
  rootfs "$WORK/services.tar" "$SERVICE_PACKAGES" --essential-hook="$RABBITMQ_USER_HOOK" \
    --customize-hook="$SERVICES_HOOK"
  label=(--change "LABEL atlaspipe.standin.recipe=$SERVICES_RECIPE")
  # One root filesystem, imported three times: the layer is stored once.
  docker import "${label[@]}" --change 'ENV RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d' \
    --change 'ENV HOME=/var/lib/rabbitmq' --change 'USER 999:999' --change 'WORKDIR /var/lib/rabbitmq' \
    --change 'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]' "$WORK/services.tar" "${STANDIN_TAGS[0]}" >/dev/null
  docker import "${label[@]}" --change 'USER 999:1000' --change 'WORKDIR /data' \
    --change 'CMD ["redis-server"]' "$WORK/services.tar" "${STANDIN_TAGS[1]}" >/dev/null
  docker import "${label[@]}" --change 'USER 65534:65534' --change 'WORKDIR /prometheus' \
    --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    "$WORK/services.tar" "${STANDIN_TAGS[2]}" >/dev/null
  rm -f "$WORK/services.tar"
else
  echo "reusing ${STANDIN_TAGS[*]}" >&2
fi
mark images

# ---------------------------------------------------------------------------------- the stack
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Published ports: free ones, so a stack or service already on the defaults is never disturbed.
# (The environment wins over compose/.env.)
export ATLASPIPE_BIND_ADDRESS=127.0.0.1
WEB_PORT="$(free_port)"; FLOWER_PORT="$(free_port)"; PROMETHEUS_PORT="$(free_port)"
RABBITMQ_MANAGEMENT_PORT="$(free_port)"
export WEB_PORT FLOWER_PORT PROMETHEUS_PORT RABBITMQ_MANAGEMENT_PORT
[[ -f "$ROOT/compose/.env" ]] || CREATED_FILES+=("$ROOT/compose/.env")
for name in broker_url result_backend rabbitmq_default_user.conf redis_password flower_basic_auth web_auth; do
  [[ -f "$ROOT/compose/secrets/$name" ]] || CREATED_FILES+=("$ROOT/compose/secrets/$name")
done

say "scripts/docker-run.sh --scale $SCALE (project $PROJECT)"
if ! "$ROOT/scripts/docker-run.sh" --scale "$SCALE" --base "$BASE_IMAGE" --timeout 180 2>&1 | tee "$OUT/docker-run.log"; then
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
    docker logs --tail 30 "$id" >"$OUT/log-$(docker inspect -f '{{.Name}}' "$id" | tr -d /).txt" 2>&1
  done
  # The workers' health is the probe-file contract of atlaspipe's worker: say so when it is missing.
  worker="$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
            --filter "label=com.docker.compose.service=load" | head -n1)"
  if [[ -n "$worker" ]] && ! docker exec "$worker" sh -c 'test -f "$ATLASPIPE_PROBE_DIR/heartbeat"'; then
    fail "the workers write no \$ATLASPIPE_PROBE_DIR/heartbeat: the worker's probe-file contract is not implemented"
  fi
  fail "scripts/docker-run.sh failed (container logs in $OUT)"
fi
mark stack-and-first-run
IMAGE="atlaspipe:$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n1)"
IMAGE_BYTES="$(docker image inspect -f '{{.Size}}' "$IMAGE")"

ids_of() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"; }
volume_dir() { docker volume inspect -f '{{.Mountpoint}}' "${PROJECT}_$1"; }
OUTPUTS="$(volume_dir outputs)"
CACHE="$(volume_dir cache)"

# Peak working set (usage minus inactive page cache, what the OOM killer and Kubernetes see) of
# every container, sampled each second from its memory cgroup (v1 or v2) until the end.
cat >"$WORK/memory.py" <<'PY'
import json, os, signal, subprocess, sys, time
from pathlib import Path

out, project, socket = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
env = dict(os.environ, DOCKER_HOST=f"unix://{socket}")
peaks: dict[str, int] = {}
stop = False

def finish(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, finish)

def memory_dir(pid: str) -> tuple[Path, bool] | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/"), True
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/"), False
    return None

def working_set(folder: Path, v1: bool) -> int:
    stat = dict(l.split() for l in (folder / "memory.stat").read_text().splitlines())
    if v1:
        return int((folder / "memory.usage_in_bytes").read_text()) - int(stat.get("total_inactive_file", 0))
    return int((folder / "memory.current").read_text()) - int(stat.get("inactive_file", 0))

def containers() -> dict[str, tuple[Path, bool]]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, env=env).stdout.split()
    if not ids:
        return {}
    found = {}
    lines = subprocess.run(["docker", "inspect", "-f", "{{.Name}} {{.State.Pid}}", *ids],
                           capture_output=True, text=True, env=env).stdout.splitlines()
    for line in lines:
        name, pid = line.split()
        try:
            where = memory_dir(pid) if pid != "0" else None
        except OSError:
            where = None
        if where:
            found[name.lstrip("/")] = where
    return found

# The container list every 10 s (docker calls cost CPU), the cgroup files every second.
listed, known = 0.0, {}
while not stop:
    if time.monotonic() - listed > 10:
        known, listed = containers(), time.monotonic()
    for name, where in known.items():
        try:
            peaks[name] = max(peaks.get(name, 0), working_set(*where))
        except (OSError, ValueError):
            pass
    time.sleep(1.0)
out.write_text(json.dumps(peaks, indent=1, sort_keys=True))
PY
"$PYTHON" "$WORK/memory.py" "$OUT/memory.json" "$PROJECT" "$SOCKET" &
SAMPLER_PID=$!

# ---------------------------------------------------------------------------------- checks
say "check: every service is running and healthy"
# rabbitmq, redis, prometheus, web, flower, exporter, load, aggregate, plot, and SCALE process workers
expected=$((9 + SCALE))
healthy="$(docker ps --filter "label=com.docker.compose.project=$PROJECT" --filter health=healthy -q | wc -l)"
total="$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" -q | wc -l)"
docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}\t{{.Status}}' >&2
[[ "$healthy" == "$expected" && "$total" == "$expected" ]] \
  || fail "$healthy of $total containers healthy, expected $expected"

cat >"$WORK/compare.py" <<'PY'
import json, sys

def histograms(path):
    r = json.load(open(path))
    out = {"data": (r["data"]["m4l"], r["data"]["channels"], r["data"]["events_read"])}
    for name, s in r["samples"].items():
        out[name] = (s["m4l"], s["channels"], s["events_selected"], s["events_read"])
    return r, out

got, got_h = histograms(sys.argv[1])
ref, ref_h = histograms(sys.argv[2])
assert got["status"] == "complete" and not got["chunks"]["failed"], got["chunks"]
assert got["chunks"]["total"] == ref["chunks"]["total"], (got["chunks"]["total"], ref["chunks"]["total"])
diff = sorted(k for k in set(got_h) | set(ref_h) if got_h.get(k) != ref_h.get(k))
if diff:
    sys.exit(f"histograms differ from the local run for: {', '.join(diff)}")
print(f"bit-identical to the local run: {len(got_h)} histogram sets, {got['chunks']['total']} chunks")
PY

run_id_in() { sed -n 's/^run \([0-9A-Za-z_-]*\) submitted.*/\1/p' "$1" | head -n1; }
local_reference() {  # local_reference NAME [atlaspipe run args...] -> results.json path
  local name="$1"; shift
  ATLASPIPE_OUTPUT_DIR="$WORK/local-$name" atlaspipe run --output "$WORK/local-$name" "$@" >"$OUT/local-$name.log" 2>&1 \
    || { tail -20 "$OUT/local-$name.log" >&2; fail "atlaspipe run ($name) failed"; }
  find "$WORK/local-$name" -name results.json | head -n1
}

say "check: the run equals 'atlaspipe run' on the same input (the embedded sample)"
RUN_ID="$(run_id_in "$OUT/docker-run.log")"
[[ -n "$RUN_ID" ]] || fail "no run id in the output of docker-run.sh"
"$PYTHON" "$WORK/compare.py" "$OUTPUTS/$RUN_ID/results.json" "$(local_reference embedded)" >&2 \
  || fail "compose run $RUN_ID differs from the local run"

say "check: authentication"
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
WEB="http://127.0.0.1:$WEB_PORT"
FLOWER="http://127.0.0.1:$FLOWER_PORT"
[[ "$(status_of "$WEB/")" == 401 ]] || fail "the report answered without credentials"
[[ "$(status_of "$WEB/healthz")" == 200 ]] || fail "the report's /healthz is not 200"
[[ "$(status_of -u "$(cat "$ROOT/compose/secrets/web_auth")" "$WEB/runs/$RUN_ID/")" == 200 ]] \
  || fail "the report refused its own credentials"
[[ "$(status_of "$FLOWER/")" == 401 ]] || fail "Flower answered without credentials"
[[ "$(status_of -u "$(cat "$ROOT/compose/secrets/flower_basic_auth")" "$FLOWER/")" == 200 ]] \
  || fail "Flower refused its own credentials"
[[ "$(status_of "http://127.0.0.1:$RABBITMQ_MANAGEMENT_PORT/api/overview")" == 401 ]] \
  || fail "RabbitMQ's management API answered without credentials"
echo "report, Flower and RabbitMQ management: 401 without credentials, 200 with them" >&2

say "check: every Prometheus target is up"
cat >"$WORK/targets.py" <<'PY'
import json, sys, time, urllib.request
url, expected = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 90
while True:
    targets = json.load(urllib.request.urlopen(url + "/api/v1/targets?state=active", timeout=5))["data"]["activeTargets"]
    down = [f"{t['labels'].get('job')} {t['scrapeUrl']} {t['health']} {t.get('lastError', '')}" for t in targets
            if t["health"] != "up"]
    if len(targets) == expected and not down:
        print(f"{len(targets)} targets up: " + ", ".join(sorted({t['labels']['job'] for t in targets})))
        break
    if time.monotonic() > deadline:
        sys.exit(f"{len(targets)} targets (expected {expected}), not up: {down}")
    time.sleep(2)
PY
# prometheus itself, one per worker container, the exporter, Flower, RabbitMQ
"$PYTHON" "$WORK/targets.py" "http://127.0.0.1:$PROMETHEUS_PORT" "$((1 + 3 + SCALE + 3))" >&2 \
  || fail "Prometheus targets"
mark checks

submit_background() {  # submit_background LOG ARGS... (sets SUBMIT_PID)
  local log="$1"; shift
  compose run --rm -T submit "$@" >"$log" 2>&1 &
  SUBMIT_PID=$!
}
wait_run_id() {  # wait_run_id LOG
  local id=""
  for _ in $(seq 1 600); do
    id="$(run_id_in "$1")"; [[ -z "$id" ]] || { echo "$id"; return 0; }
    kill -0 "$SUBMIT_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$1" >&2; fail "no run submitted"
}
wait_mid_run() {  # wait_mid_run RUN_ID: until at least 3 chunks are done and some are left
  "$PYTHON" - "$OUTPUTS/$1/status.json" <<'PY' || fail "the run never reached mid-run"
import json, sys, time
path, deadline = sys.argv[1], time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        status = json.load(open(path))
    except (OSError, ValueError):
        status = {}
    done, total = status.get("chunks_done", 0), status.get("chunks_total", 0)
    if total and 3 <= done < total - 5:
        print(f"mid-run: {done} of {total} chunks done", file=sys.stderr)
        sys.exit(0)
    if total and done >= total - 5:
        sys.exit(f"missed the window: {done} of {total} chunks already done")
    time.sleep(0.05)
sys.exit("timed out")
PY
}
finish_run() {  # finish_run LOG RUN_ID REFERENCE
  wait "$SUBMIT_PID" || { tail -30 "$1" >&2; fail "atlaspipe-submit failed ($1)"; }
  "$PYTHON" "$WORK/compare.py" "$OUTPUTS/$2/results.json" "$3" >&2 || fail "run $2 differs from the local run"
}
wait_all_healthy() {
  local deadline=$((SECONDS + 180)) n
  while ((SECONDS < deadline)); do
    n="$(docker ps --filter "label=com.docker.compose.project=$PROJECT" --filter health=healthy -q | wc -l)"
    [[ "$n" != "$expected" ]] || return 0
    sleep 2
  done
  docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}\t{{.Status}}' >&2
  fail "not every service is healthy again"
}

if [[ "$FAULTS" == 1 || "$CPU" == 1 ]]; then
  say "inputs: $FAULT_EVENTS generated events (cached in $INPUT_CACHE)"
  INPUTS="$INPUT_CACHE/generated-$FAULT_EVENTS"
  if [[ ! -f "$INPUTS/.complete" ]]; then
    rm -rf "$INPUTS"
    atlaspipe generate --release 2020 --output "$INPUTS" --events "$FAULT_EVENTS" --seed 7 >"$OUT/generate.log" 2>&1 \
      || fail "atlaspipe generate failed"
    touch "$INPUTS/.complete"
  fi
  mkdir -p "$CACHE/e2e-inputs"
  cp -r "$INPUTS/." "$CACHE/e2e-inputs/"
  chmod -R a+rX "$CACHE/e2e-inputs"
fi

if [[ "$FAULTS" == 1 ]]; then
  REFERENCE="$(local_reference generated --input "$INPUTS" --chunk-size "$FAULT_CHUNK")"

  say "fault: docker kill of a process worker mid-run"
  submit_background "$OUT/kill-worker.log" --input /data/cache/e2e-inputs --chunk-size "$FAULT_CHUNK"
  run_id="$(wait_run_id "$OUT/kill-worker.log")"
  wait_mid_run "$run_id"
  victim="$(ids_of process | head -n1)"
  docker kill "$victim" >/dev/null
  echo "killed $(docker inspect -f '{{.Name}}' "$victim")" >&2
  finish_run "$OUT/kill-worker.log" "$run_id" "$REFERENCE"
  docker start "$victim" >/dev/null
  wait_all_healthy

  say "fault: docker restart of RabbitMQ mid-run"
  submit_background "$OUT/restart-broker.log" --input /data/cache/e2e-inputs --chunk-size "$FAULT_CHUNK"
  run_id="$(wait_run_id "$OUT/restart-broker.log")"
  wait_mid_run "$run_id"
  docker restart --time 10 "$(ids_of rabbitmq)" >/dev/null
  echo "restarted RabbitMQ" >&2
  finish_run "$OUT/restart-broker.log" "$run_id" "$REFERENCE"
  wait_all_healthy
  echo "every worker is ready again after the broker restart" >&2
  mark faults
fi

if [[ "$CPU" == 1 ]]; then
  say "scripts/cpu-compare.sh: docker-compose against local, from cgroup figures"
  # One container per service, like the local run it is compared with.
  compose up -d --no-recreate --scale "process=1" process >/dev/null 2>&1
  "$ROOT/scripts/cpu-compare.sh" --envs docker-compose,local -o "$OUT/cpu" \
    --compose-input /data/cache/e2e-inputs --local-input "$INPUTS" --chunk-size "$FAULT_CHUNK" 2>&1 \
    | tee "$OUT/cpu-compare.log" >&2 || fail "scripts/cpu-compare.sh failed"
  mark cpu-compare
fi

kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
"$PYTHON" - "$OUT/memory.json" "$PROJECT" "$OUT/memory-per-service.json" >"$OUT/memory.txt" <<'PY'
import json, re, sys
peaks, project, summary = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
by_service: dict[str, list[int]] = {}
for name, value in peaks.items():
    service = re.sub(rf"^{re.escape(project)}[_-](.+?)(?:[_-]run[_-][0-9a-f]+|[_-]\d+)$", r"\1", name)
    by_service.setdefault(service, []).append(value)
print("peak working set per container (MiB), over the whole e2e run")
for service in sorted(by_service):
    values = sorted(by_service[service])
    print(f"  {service:<11} " + " ".join(f"{v / 2**20:6.0f}" for v in values))
json.dump({s: round(max(v) / 2**20) for s, v in sorted(by_service.items())}, open(summary, "w"), indent=1)
PY
cat "$OUT/memory.txt" >&2

"$PYTHON" - "$OUT/compose-e2e.json" "$((SECONDS - STARTED))" "$IMAGE_BYTES" "$CGROUP_DRIVER" "${TIMINGS[@]}" <<'PY'
import json, sys
path, wall, image, cgroups, *marks = sys.argv[1:]
json.dump({"wall_seconds_before_cleanup": int(wall), "image_bytes": int(image), "cgroups": cgroups,
           "seconds_at": {k: int(v) for k, v in (m.split("=") for m in marks)}}, open(path, "w"), indent=1)
PY
say "all checks passed (image $IMAGE: $((IMAGE_BYTES / 1000000)) MB)"
