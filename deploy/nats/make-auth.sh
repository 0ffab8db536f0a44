#!/bin/sh
# Writes the NATS nodes' auth/auth.conf from the secrets (one file per user's password):
# the variables nats.conf uses for its users' passwords, the route password and the routes.
# Runs in the one-shot `nats-auth` service (compose) or an init container (Kubernetes) as:
#   make-auth.sh /etc/nats/auth/auth.conf nats-1:6222 nats-2:6222 nats-3:6222
# The arguments after the file are the cluster's route addresses, every node's. SECRETS_DIR
# overrides /run/secrets. The file holds plaintext passwords: it is written mode 0600 into a
# volume only the NATS containers mount, never into the image or git.
set -eu

out="${1:?usage: make-auth.sh AUTH_FILE HOST:PORT...}"
shift
[ $# -gt 0 ] || { echo "make-auth: no route addresses given" >&2; exit 2; }
secrets="${SECRETS_DIR:-/run/secrets}"
# variable:secret-file; the worker's secret is named like its setting (IOTAD_NATS__PASSWORD),
# devices and readers share their passwords with the mosquitto stack's users.
vars="IOTAD_PASSWORD:iotad_nats__password SIMULATOR_PASSWORD:mqtt_simulator_password
READER_PASSWORD:mqtt_reader_password ROUTE_PASSWORD:nats_route_password"

read_secret() {
  file="$secrets/$1"
  if [ ! -s "$file" ]; then
    echo "make-auth: missing or empty secret $file (run deploy/init-secrets.sh)" >&2
    exit 1
  fi
  # $(cat) drops the trailing newline an editor may have added
  value="$(cat "$file")"
  case "$value" in
    *[!A-Za-z0-9._~+=-]*)
      # The value goes into a quoted config string and a route URL: keep it to characters
      # that need no escaping in either (init-secrets.sh makes [A-Za-z0-9]).
      echo "make-auth: $file has characters other than A-Za-z0-9._~+=-" >&2
      exit 1 ;;
  esac
  printf '%s' "$value"
}

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "# Written by make-auth.sh from the secrets; do not edit (it is rewritten at every start)." >"$tmp"
for pair in $vars; do
  printf '%s: "%s"\n' "${pair%%:*}" "$(read_secret "${pair#*:}")" >>"$tmp"
done
route_pw="$(read_secret nats_route_password)"
routes=""
for addr in "$@"; do
  routes="$routes${routes:+, }\"nats-route://route:$route_pw@$addr\""
done
printf 'ROUTES: [%s]\n' "$routes" >>"$tmp"
# The official image runs nats-server as root; where it does not, let its group read the file.
chmod 0640 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "make-auth: wrote $out (users iotad, simulator, reader; $# routes)"
