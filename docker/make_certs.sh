#!/usr/bin/env bash
# Create the TLS material and SuperNode authentication keys for a Flower deployment.
#
#   docker/make_certs.sh [--out DIR] [--host NAME_OR_IP ...] [--nodes N] [--force | --keys-only]
#
# Writes into DIR (default: docker/certs, git-ignored and docker-ignored):
#   ca.crt, ca.key                  a private certificate authority (keep ca.key secret)
#   server.pem, server.key          the SuperLink certificate, signed by the CA, with SANs
#                                   localhost, 127.0.0.1, ::1, superlink (compose service name)
#                                   and every --host given (IP addresses detected)
#   keys/supernode-<i>, .pub        N ECDSA P-384 key pairs for SuperNode authentication,
#                                   i = 0..N-1 (the compose service supernode-<i> uses key i)
#   superexec/superlink.secret,     random SuperExec secrets (--superexec-auth-secret-file): the
#   superexec/supernode-<i>.secret  SuperLink / SuperNode i and their SuperExec share one
# An existing CA is never overwritten unless --force is given (which recreates everything;
# the new public keys must then be registered again). --keys-only only adds missing SuperNode
# key pairs (e.g. going from 2 to 4 GPUs) and leaves the CA and certificate alone.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: docker/make_certs.sh [--out DIR] [--host NAME_OR_IP ...] [--nodes N] [--force | --keys-only]

  --out DIR         output directory (default: docker/certs next to this script)
  --host NAME|IP    extra subject alternative name for the SuperLink certificate: the DNS
                    name or IP address that SuperNodes and the flwr CLI use to reach the
                    SuperLink (repeatable; localhost, 127.0.0.1, ::1 and superlink are always in)
  --nodes N         number of SuperNode key pairs to create (default: 2)
  --days D          validity of the SuperLink certificate in days (default: 825)
  --force           overwrite an existing CA, certificate and keys
  --keys-only       only create the missing keys/supernode-<i> pairs for i < N (keeps the CA)
  -h, --help        show this help
EOF
}

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${SCRIPT_DIR}/certs"
NODES=2
DAYS=825
FORCE=0
KEYS_ONLY=0
HOSTS=()

die() { echo "make_certs.sh: error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --host) [[ $# -ge 2 ]] || die "--host needs a name or IP address"; HOSTS+=("$2"); shift 2 ;;
    --host=*) HOSTS+=("${1#*=}"); shift ;;
    --nodes) [[ $# -ge 2 ]] || die "--nodes needs a number"; NODES="$2"; shift 2 ;;
    --nodes=*) NODES="${1#*=}"; shift ;;
    --days) [[ $# -ge 2 ]] || die "--days needs a number"; DAYS="$2"; shift 2 ;;
    --days=*) DAYS="${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    --keys-only) KEYS_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

if ! [[ "$NODES" =~ ^[0-9]+$ ]] || (( NODES < 1 || NODES > 1024 )); then
  die "--nodes must be an integer in 1..1024, got '$NODES'"
fi
if ! [[ "$DAYS" =~ ^[0-9]+$ ]] || (( DAYS < 1 )); then
  die "--days must be a positive integer, got '$DAYS'"
fi
(( FORCE && KEYS_ONLY )) && die "--force and --keys-only exclude each other"
(( KEYS_ONLY && ${#HOSTS[@]} )) && die "--host needs a new certificate: it cannot go with --keys-only"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found (apt-get install openssh-client)"

is_ipv4() {
  local ip="$1" part
  [[ "$ip" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  IFS=. read -r -a parts <<<"$ip"
  for part in "${parts[@]}"; do (( 10#$part <= 255 )) || return 1; done
}
is_ipv6() { [[ "$1" == *:* && "$1" =~ ^[0-9A-Fa-f:.]+$ ]]; }
is_dns() {
  [[ ${#1} -le 253 && "$1" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$ ]]
}

# Subject alternative names: the fixed ones, then --host values (deduplicated, validated).
SANS=("DNS:localhost" "IP:127.0.0.1" "IP:::1" "DNS:superlink")
for h in "${HOSTS[@]+"${HOSTS[@]}"}"; do
  if is_ipv4 "$h" || is_ipv6 "$h"; then san="IP:$h"
  elif is_dns "$h"; then san="DNS:$h"
  else die "--host '$h' is neither an IP address nor a valid DNS name"
  fi
  dup=0
  for s in "${SANS[@]}"; do [[ "$s" == "$san" ]] && dup=1; done
  (( dup )) || SANS+=("$san")
done
SAN_LINE="$(IFS=,; echo "${SANS[*]}")"

if (( KEYS_ONLY )); then
  :
elif [[ -e "$OUT/ca.crt" || -e "$OUT/ca.key" ]]; then
  if (( ! FORCE )); then
    die "a CA already exists in $OUT (ca.crt/ca.key); refusing to overwrite it. Use --force to \
recreate the CA, the SuperLink certificate and all SuperNode keys (then register the new keys again)."
  fi
  echo "--force: replacing the CA, certificate and keys in $OUT"
  rm -f "$OUT/ca.crt" "$OUT/ca.key" "$OUT/ca.srl" "$OUT/server.pem" "$OUT/server.key" \
        "$OUT/server.csr"
  rm -f "$OUT"/keys/supernode-* "$OUT"/superexec/*.secret
fi

umask 077
mkdir -p "$OUT/keys"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

make_ca_and_server_cert() {
  cat >"$WORK/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = Flower federation CA
O = fedapp
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

  cat >"$WORK/server.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = superlink
O = fedapp
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = ${SAN_LINE}
EOF

  # CA (ECDSA P-384, 10 years) and SuperLink key + certificate (ECDSA P-384, signed by the CA).
  EC=(-newkey ec -pkeyopt ec_paramgen_curve:secp384r1)
  openssl req -x509 -new "${EC[@]}" -nodes -sha384 -days 3650 \
    -config "$WORK/ca.cnf" -keyout "$OUT/ca.key" -out "$OUT/ca.crt" 2>/dev/null
  openssl req -new "${EC[@]}" -nodes -sha384 \
    -config "$WORK/server.cnf" -keyout "$OUT/server.key" -out "$WORK/server.csr" 2>/dev/null
  openssl x509 -req -sha384 -days "$DAYS" -in "$WORK/server.csr" \
    -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial -CAserial "$WORK/ca.srl" \
    -extfile "$WORK/server.cnf" -extensions v3_server -out "$OUT/server.pem" 2>/dev/null
  openssl verify -CAfile "$OUT/ca.crt" "$OUT/server.pem" >/dev/null \
    || die "the new server certificate does not verify against the new CA"
}

if (( KEYS_ONLY )); then
  [[ -f "$OUT/ca.crt" && -f "$OUT/server.pem" ]] \
    || die "--keys-only: no CA/certificate in $OUT yet; run without --keys-only first"
else
  make_ca_and_server_cert
fi

# SuperNode authentication keys: ECDSA P-384 (what flwr's SuperNode auth expects).
created_keys=()
for (( i = 0; i < NODES; i++ )); do
  key="$OUT/keys/supernode-$i"
  if [[ -e "$key" ]]; then
    echo "keeping existing key pair $key"
  else
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$i" -f "$key"
    created_keys+=("$key")
  fi
done

# SuperExec secrets (random, 0600): a SuperLink / SuperNode started with
# --superexec-auth-secret-file accepts Runtime API calls only from a SuperExec holding the same
# file. One for the SuperLink and its SuperExec, one per SuperNode and its SuperExec.
mkdir -p "$OUT/superexec"
for name in superlink $(for (( i = 0; i < NODES; i++ )); do echo "supernode-$i"; done); do
  secret="$OUT/superexec/$name.secret"
  [[ -e "$secret" ]] || openssl rand -hex 32 | tr -d '\n' > "$secret"
  chmod 0600 "$secret"
done

# Public material is world-readable; private keys stay owner-only (0600).
chmod 0644 "$OUT/ca.crt" "$OUT/server.pem" "$OUT"/keys/*.pub
(( KEYS_ONLY )) || chmod 0600 "$OUT/ca.key" "$OUT/server.key"
for (( i = 0; i < NODES; i++ )); do chmod 0600 "$OUT/keys/supernode-$i"; done
chmod 0755 "$OUT" "$OUT/keys" "$OUT/superexec"

echo "Wrote to $OUT:"
if (( ! KEYS_ONLY )); then
  echo "  ca.crt, ca.key          certificate authority (keep ca.key offline/secret)"
  echo "  server.pem, server.key  SuperLink certificate, SANs: ${SAN_LINE}"
fi
echo "  keys/supernode-<i>[.pub] for i = 0..$((NODES - 1)) (ECDSA P-384), new: ${#created_keys[@]}"
echo "  superexec/superlink.secret, superexec/supernode-<i>.secret   SuperExec HMAC secrets (0600)"
ABS_OUT="$(cd "$OUT" && pwd)"
cat <<EOF

Next, on separate machines (docs/DEPLOYMENT.md, steps 2-6): copy only what each machine needs:
  server (SuperLink)          $ABS_OUT/{ca.crt,server.pem,server.key}, superexec/superlink.secret
  client i (SuperNode i)      $ABS_OUT/ca.crt, keys/supernode-<i>, superexec/supernode-<i>.secret
  CLI workstation             $ABS_OUT/ca.crt and $ABS_OUT/keys/supernode-*.pub (to register them)
Keep ca.key offline. The SANs above must hold the name or address the SuperNodes and the CLI use.
EOF
COMPOSE="-f docker/compose.yml"
(( NODES == 4 )) && COMPOSE="-f docker/compose.yml -f docker/compose.4gpu.yml"
CERTS_ENV=""
[[ "$ABS_OUT" != "${SCRIPT_DIR}/certs" ]] && CERTS_ENV="FEDAPP_CERTS_DIR=$ABS_OUT "
cat <<EOF

Or, with docker compose on one host (docker/README.md): the containers run as uid \${FEDAPP_UID:-1000}
(never 0), which must be able to read the 0600 private keys: build with FEDAPP_UID=<owner's uid>
FEDAPP_GID=<owner's gid>, or chown the files to that uid.
  mkdir -p data outputs/docker
  ${CERTS_ENV}docker compose $COMPOSE build
  ${CERTS_ENV}docker compose $COMPOSE up -d superlink superexec-serverapp
  docker/register_supernodes.sh --certs "$ABS_OUT" --nodes $NODES
  ${CERTS_ENV}docker compose $COMPOSE up -d          # the SuperNodes and their SuperExecs
  flwr run . docker --stream -c 'output-dir="/results/run-1"'
EOF
