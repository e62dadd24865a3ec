#!/usr/bin/env bash
# Register SuperNode public keys with a running SuperLink (SuperNode authentication).
#
#   docker/register_supernodes.sh [--certs DIR] [--nodes N] [--address HOST:PORT]
#                                 [--connection NAME]
#
# 1. Writes (or replaces) the connection [superlink.NAME] in $FLWR_HOME/config.toml
#    (default ~/.flwr/config.toml): address = HOST:PORT, root-certificates = DIR/ca.crt
#    (absolute). `flwr run . NAME` then talks to the same SuperLink over TLS.
# 2. Waits until the SuperLink answers (up to --wait seconds).
# 3. Runs `flwr supernode register DIR/keys/supernode-<i>.pub NAME` for i = 0..N-1
#    (default: every keys/supernode-*.pub in DIR); a key that is already registered is fine.
# 4. Prints `flwr supernode list NAME`.
#
# The SuperLink publishes its single port (Fleet, Control and Runtime APIs) on
# 127.0.0.1:9092 in docker/compose.yml, hence the default address.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: docker/register_supernodes.sh [--certs DIR] [--nodes N] [--address HOST:PORT]
                                     [--connection NAME] [--wait SECONDS]

  --certs DIR         output of make_certs.sh (default: $FEDAPP_CERTS_DIR or docker/certs)
  --nodes N           register keys/supernode-0..N-1 (default: all keys/supernode-*.pub)
  --address H:P       SuperLink address as seen from this host (default: 127.0.0.1:9092)
  --connection NAME   name of the connection in $FLWR_HOME/config.toml (default: docker)
  --wait SECONDS      how long to wait for the SuperLink to answer (default: 90)
Environment: FLWR (flwr executable, default: flwr on PATH, else .venv/bin/flwr of the repo),
             FLWR_HOME (Flower config directory, default ~/.flwr).
EOF
}

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
CERTS="${FEDAPP_CERTS_DIR:-$SCRIPT_DIR/certs}"
NODES=""
ADDRESS="127.0.0.1:9092"
CONNECTION="docker"
WAIT=90

die() { echo "register_supernodes.sh: error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --certs) [[ $# -ge 2 ]] || die "--certs needs a directory"; CERTS="$2"; shift 2 ;;
    --nodes) [[ $# -ge 2 ]] || die "--nodes needs a number"; NODES="$2"; shift 2 ;;
    --address) [[ $# -ge 2 ]] || die "--address needs HOST:PORT"; ADDRESS="$2"; shift 2 ;;
    --connection) [[ $# -ge 2 ]] || die "--connection needs a name"; CONNECTION="$2"; shift 2 ;;
    --wait) [[ $# -ge 2 ]] || die "--wait needs seconds"; WAIT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

[[ "$CONNECTION" =~ ^[A-Za-z0-9_-]+$ ]] || die "--connection must match [A-Za-z0-9_-]+, got '$CONNECTION'"
[[ "$ADDRESS" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$ ]] \
  || die "--address must be HOST:PORT (IPv6 as [::1]:PORT), got '$ADDRESS'"
[[ "$WAIT" =~ ^[0-9]+$ ]] || die "--wait must be a number of seconds, got '$WAIT'"
[[ -d "$CERTS" ]] || die "certificate directory '$CERTS' does not exist: run docker/make_certs.sh first"
CERTS="$(cd "$CERTS" && pwd)"
CA="$CERTS/ca.crt"
[[ -f "$CA" ]] || die "'$CA' not found: run docker/make_certs.sh first"

if [[ -n "${FLWR:-}" ]]; then :
elif command -v flwr >/dev/null; then FLWR=flwr
elif [[ -x "$REPO_DIR/.venv/bin/flwr" ]]; then FLWR="$REPO_DIR/.venv/bin/flwr"
else die "flwr not found: pip install 'flwr==1.41.0' (or set FLWR=/path/to/flwr)"
fi

PUBKEYS=()
if [[ -n "$NODES" ]]; then
  if ! [[ "$NODES" =~ ^[0-9]+$ ]] || (( NODES < 1 )); then
    die "--nodes must be a positive integer, got '$NODES'"
  fi
  for (( i = 0; i < NODES; i++ )); do
    [[ -f "$CERTS/keys/supernode-$i.pub" ]] \
      || die "'$CERTS/keys/supernode-$i.pub' not found: run docker/make_certs.sh --nodes $NODES"
    PUBKEYS+=("$CERTS/keys/supernode-$i.pub")
  done
else
  shopt -s nullglob
  PUBKEYS=("$CERTS"/keys/supernode-*.pub)
  shopt -u nullglob
  (( ${#PUBKEYS[@]} )) || die "no keys/supernode-*.pub in '$CERTS': run docker/make_certs.sh"
fi

export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"

# 1. Connection entry. `flwr config ls` creates the default config.toml when it is missing.
"$FLWR" config ls >/dev/null
FLWR_HOME_DIR="${FLWR_HOME:-$HOME/.flwr}"
CONFIG="$FLWR_HOME_DIR/config.toml"
[[ -f "$CONFIG" ]] || die "expected the Flower configuration at '$CONFIG' (FLWR_HOME=${FLWR_HOME:-unset})"
tmp="$(mktemp "$CONFIG.XXXXXX")"
# Drop an existing [superlink.NAME] table (up to the next table header), then append ours.
awk -v header="[superlink.$CONNECTION]" '
  { line = $0; sub(/[[:space:]]*#.*$/, "", line); gsub(/^[[:space:]]+|[[:space:]]+$/, "", line) }
  line ~ /^\[/ { skip = (line == header) }
  !skip { print }
' "$CONFIG" >"$tmp"
# Paths in TOML basic strings: escape backslashes and double quotes.
ca_toml="${CA//\\/\\\\}"; ca_toml="${ca_toml//\"/\\\"}"
separator=""
if [[ -s "$tmp" ]]; then
  separator=$'\n'
  [[ -n "$(tail -c1 "$tmp")" ]] && separator=$'\n\n'
fi
{
  printf '%s' "$separator"
  echo "[superlink.$CONNECTION]"
  echo "address = \"$ADDRESS\""
  echo "root-certificates = \"$ca_toml\""
} >>"$tmp"
mv "$tmp" "$CONFIG"
echo "Connection [superlink.$CONNECTION] in $CONFIG: address $ADDRESS, CA $CA"

# 2. Wait for the SuperLink (the container needs a few seconds after `up`).
deadline=$(( SECONDS + WAIT ))
until out="$("$FLWR" supernode list "$CONNECTION" 2>&1)"; do
  if (( SECONDS >= deadline )); then
    echo "$out" >&2
    die "the SuperLink at $ADDRESS did not answer within ${WAIT}s \
(is it up? docker compose -f docker/compose.yml up -d superlink)"
  fi
  sleep 3
done

# 3. Register every key; an already registered key is reported and accepted.
status=0
for pub in "${PUBKEYS[@]}"; do
  name="$(basename "$pub" .pub)"
  if out="$("$FLWR" supernode register "$pub" "$CONNECTION" --name "$name" 2>&1)"; then
    echo "registered $name ($pub)"
  elif grep -qiE "already (registered|exists|in use)" <<<"$out"; then
    echo "already registered: $name ($pub)"
  else
    echo "$out" >&2
    echo "FAILED to register $name ($pub)" >&2
    status=1
  fi
done

# 4. Show the federation's SuperNodes.
"$FLWR" supernode list "$CONNECTION"
exit "$status"
