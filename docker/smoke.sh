#!/usr/bin/env bash
# Docker smoke test: build the image, run docker/compose.cpu.yml with TLS + SuperNode
# authentication for one round, check the results, remove everything this script made.
#
#   sudo docker/smoke.sh                       # uses the running docker engine, or starts one
#   FEDAPP_SMOKE_TORCH_INDEX_URL= sudo docker/smoke.sh    # torch from PyPI (CUDA build) instead of the CPU index
#
# Steps:
#  1. A docker engine: the running one (`docker info` answers), else a private dockerd started
#     by this script (root needed) in a network namespace of its own with --bridge=none
#     --iptables=false, its own data root and socket: nothing is added to this machine's network.
#  2. Packages: with the running engine, the build reaches PyPI itself (set FEDAPP_SMOKE_CA_CERT
#     to a PEM file where TLS is intercepted). With the private engine, whose namespace has no
#     route out, this host downloads every wheel the image needs (docker/constraints.txt, pip of
#     this machine, its CA settings) into a wheelhouse, serves it as a package index on
#     127.0.0.1 inside that namespace, and the build uses it (--network host, PIP_INDEX_URL).
#  3. Base image: python:3.11-slim if present or pullable, else a Debian bookworm root built with
#     debootstrap (python3, python3-venv, ca-certificates) and imported as a local image.
#  4. Build docker/Dockerfile as fedapp:cpu (compose.cpu.yml's image) with the torch index
#     FEDAPP_SMOKE_TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu), APP_UID 1000.
#  5. make_certs.sh into a temp dir (chowned to uid 1000, the containers' user), compose up the
#     SuperLink and its SuperExec, register both SuperNode keys, up the SuperNodes and their
#     SuperExecs, `flwr run . docker -c num-server-rounds=1`, then `flwr ls --format json` must say
#     finished:completed and the results directory must hold 1 round with finite metrics.
#  6. Always (trap): compose down -v, remove the images it built or imported, stop the private
#     engine and delete its data root and namespace, stop the index server, delete temp dirs.
# Prints the image size; exits non-zero on any failure. Needs: docker CLI, docker-compose
# (1.29+) or `docker compose`, openssl, ssh-keygen, python3 with this project's venv for `flwr`;
# dockerd + debootstrap + iproute2 (and root) only where no engine runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${FEDAPP_SMOKE_PYTHON:-${ROOT}/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
BIN="$(dirname "$PY")"
TORCH_INDEX_URL="${FEDAPP_SMOKE_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
APP_UID=1000
TAG="fedsmoke$$"
IMAGE="fedapp:cpu"
WORK="$(mktemp -d /var/tmp/fedapp-smoke.XXXXXX)"
NETNS=""
DOCKERD_PID=""
INDEX_PID=""
BASE_IMPORTED=""
IMAGE_BUILT=""
COMPOSE_UP=""
export FEDAPP_CERTS_DIR="$WORK/certs" FEDAPP_RESULTS_DIR="$WORK/results" FEDAPP_DATA_DIR="$WORK/data"
export FEDAPP_IMAGE="$IMAGE" FEDAPP_UID="$APP_UID" FEDAPP_GID="$APP_UID"
export FLWR_HOME="$WORK/flwr-cli" FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

log() { echo "[smoke $(date -u +%H:%M:%S)] $*"; }
die() { echo "[smoke] error: $*" >&2; exit 1; }

in_ns() { if [[ -n "$NETNS" ]]; then nsenter --net="/run/netns/$NETNS" "$@"; else "$@"; fi; }

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
compose() { in_ns "${COMPOSE[@]}" -p "$TAG" -f "$ROOT/docker/compose.cpu.yml" "$@"; }

cleanup() {
  local code=$?
  set +e
  log "cleaning up"
  if [[ -n "$COMPOSE_UP" ]]; then compose down -v --remove-orphans >/dev/null 2>&1; fi
  if [[ -n "$IMAGE_BUILT" ]]; then docker rmi -f "$IMAGE" >/dev/null 2>&1; fi
  if [[ -n "$BASE_IMPORTED" ]]; then docker rmi -f "$BASE_IMPORTED" >/dev/null 2>&1; fi
  if [[ -n "$INDEX_PID" ]]; then kill "$INDEX_PID" 2>/dev/null; wait "$INDEX_PID" 2>/dev/null; fi
  if [[ -n "$DOCKERD_PID" ]]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
    wait "$DOCKERD_PID" 2>/dev/null
    # Mounts the engine left (overlay layers, netns files) must go before its data root.
    grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  fi
  if [[ -n "$NETNS" ]]; then ip netns del "$NETNS" 2>/dev/null; fi
  rm -rf "$WORK"
  if (( code == 0 )); then log "passed"; else log "FAILED (exit $code)"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in docker openssl ssh-keygen; do command -v "$tool" >/dev/null || die "$tool not found"; done
"${COMPOSE[@]}" version >/dev/null 2>&1 || die "neither 'docker compose' nor docker-compose is installed"

# 1. Engine -------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  log "using the running docker engine"
  PRIVATE_ENGINE=0
else
  [[ $EUID -eq 0 ]] || die "no docker engine answers and starting one needs root"
  for tool in dockerd ip nsenter; do command -v "$tool" >/dev/null || die "$tool not found (apt-get install docker.io iproute2)"; done
  NETNS="$TAG"
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  mkdir -p "$WORK/engine"
  export DOCKER_HOST="unix://$WORK/engine/docker.sock"
  log "starting a private dockerd in network namespace $NETNS (log: $WORK/engine/dockerd.log)"
  nsenter --net="/run/netns/$NETNS" dockerd --bridge=none --iptables=false --ip6tables=false \
    --host "$DOCKER_HOST" --data-root "$WORK/engine/data" --exec-root "$WORK/engine/exec" \
    --pidfile "$WORK/engine/dockerd.pid" >"$WORK/engine/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/engine/dockerd.log" >&2; die "dockerd did not start"; }
  PRIVATE_ENGINE=1
fi

# 2. Packages -----------------------------------------------------------------------------
BUILD_ARGS=(--build-arg "APP_UID=$APP_UID" --build-arg "APP_GID=$APP_UID")
if [[ -n "${FEDAPP_SMOKE_CA_CERT:-}" ]]; then
  BUILD_ARGS+=(--build-arg "EXTRA_CA_CERT=$(cat "$FEDAPP_SMOKE_CA_CERT")")
fi
if (( PRIVATE_ENGINE )); then
  WHEELS="$WORK/index/files"
  mkdir -p "$WHEELS"
  "$PY" -c "import tomllib; d = tomllib.load(open('$ROOT/pyproject.toml', 'rb')); \
print('\n'.join(r.replace('flwr[simulation]', 'flwr') for r in d['project']['dependencies']))" > "$WORK/requirements.txt"
  torch_pins=($(grep -E '^(torch|torchvision)==' "$ROOT/docker/constraints.txt"))
  log "downloading wheels into the wheelhouse (torch: ${TORCH_INDEX_URL:-PyPI})"
  if [[ -n "$TORCH_INDEX_URL" ]]; then
    "$BIN/pip" download -q --no-deps -d "$WHEELS" --index-url "$TORCH_INDEX_URL" "${torch_pins[@]}" \
      || die "cannot download ${torch_pins[*]} from $TORCH_INDEX_URL; set FEDAPP_SMOKE_TORCH_INDEX_URL to a reachable index (empty = PyPI)"
  fi
  # hatchling: the build backend `pip install .` needs inside the build.
  "$BIN/pip" wheel -q -w "$WHEELS" -c "$ROOT/docker/constraints.txt" -r "$WORK/requirements.txt" "${torch_pins[@]}" hatchling
  "$PY" - "$WORK/index" <<'EOF'
import hashlib, html, re, sys
from pathlib import Path
root = Path(sys.argv[1]); files = sorted((root / "files").glob("*.whl"))
projects = {}
for f in files:
    projects.setdefault(re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower(), []).append(f)
for name, group in projects.items():
    page = root / "simple" / name
    page.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="../../files/{html.escape(f.name)}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}">'
                    f"{html.escape(f.name)}</a><br>\n" for f in group)
    (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
print(f"index: {len(projects)} projects, {len(files)} wheels")
EOF
  PORT=38471
  nsenter --net="/run/netns/$NETNS" "$PY" -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/index" \
    >"$WORK/index.log" 2>&1 &
  INDEX_PID=$!
  sleep 2
  INDEX="http://127.0.0.1:$PORT/simple"
  BUILD_ARGS+=(--network host --build-arg "PIP_INDEX_URL=$INDEX" --build-arg "TORCH_INDEX_URL=$INDEX")
else
  BUILD_ARGS+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi

# 3. Base image ---------------------------------------------------------------------------
BASE="python:3.11-slim"
if ! docker image inspect "$BASE" >/dev/null 2>&1 && ! docker pull -q "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || die "cannot pull $BASE and debootstrap is missing (apt-get install debootstrap)"
  log "no $BASE: building a Debian bookworm base with debootstrap"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
    "${FEDAPP_SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  BASE="fedapp-smoke-base:$TAG"
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null
  BASE_IMPORTED="$BASE"
  rm -rf "$WORK/rootfs"
fi

# 4. Build --------------------------------------------------------------------------------
log "building $IMAGE on $BASE"
started=$(date +%s)
IMAGE_BUILT=1
docker build -q -f "$ROOT/docker/Dockerfile" -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE" "${BUILD_ARGS[@]}" "$ROOT" >/dev/null
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE in $(( $(date +%s) - started )) s: $(( SIZE / 1000000 )) MB"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | awk -F'\t' '$1 != "0B" {print "  " $1 "\t" substr($2, 1, 90)}'

# 5. Run ----------------------------------------------------------------------------------
mkdir -p "$FEDAPP_RESULTS_DIR" "$FEDAPP_DATA_DIR" "$FLWR_HOME"
bash "$ROOT/docker/make_certs.sh" --out "$FEDAPP_CERTS_DIR" --nodes 2 >/dev/null
chown -R "$APP_UID:$APP_UID" "$FEDAPP_CERTS_DIR" "$FEDAPP_RESULTS_DIR"
COMPOSE_UP=1
log "compose up: SuperLink and its SuperExec"
compose up -d --no-build superlink superexec-serverapp >/dev/null
PATH="$BIN:$PATH" in_ns bash "$ROOT/docker/register_supernodes.sh" --certs "$FEDAPP_CERTS_DIR" --nodes 2 \
  --address 127.0.0.1:9092 --connection docker --wait 180
log "compose up: SuperNodes and their SuperExecs"
compose up -d --no-build >/dev/null
for _ in $(seq 60); do
  online=$(in_ns "$BIN/flwr" supernode list docker --format json 2>/dev/null | grep -c '"online"' || true)
  (( online >= 2 )) && break
  sleep 5
done
(( online >= 2 )) || { compose logs --tail 40 >&2; die "SuperNodes not online"; }
log "flwr run (1 round)"
(cd "$ROOT" && in_ns "$BIN/flwr" run . docker --stream -c 'num-server-rounds=1 local-epochs=1 output-dir="/results/smoke"') \
  >"$WORK/flwr-run.log" 2>&1 || { tail -30 "$WORK/flwr-run.log" >&2; die "flwr run failed"; }
status=$(in_ns "$BIN/flwr" ls docker --format json | "$PY" -c \
  'import json, sys; t = sys.stdin.read(); d = json.loads(t[t.index("{"):]); assert d["success"], d; print(d["runs"][0]["status"])')
[[ "$status" == "finished:completed" ]] || { compose logs --tail 60 >&2; die "run status: $status"; }
"$PY" - "$FEDAPP_RESULTS_DIR/smoke" <<'EOF'
import json, math, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
summary = json.loads((run / "summary.json").read_text())
assert [r["round"] for r in rows] == [1] and rows[0]["clients_ok"] == 2, rows
assert all(v is None or math.isfinite(v) for v in summary["final"].values()), summary["final"]
print(f"[smoke] results: 1 round, clients_ok 2, final {summary['main_metric']} = {summary['final'][summary['main_metric']]:.4f}")
EOF
log "image $IMAGE: $(( SIZE / 1000000 )) MB (torch: ${TORCH_INDEX_URL:-PyPI})"
