#!/bin/sh
# Writes mosquitto's password file from the compose secrets (one file per user's password).
# Runs in the one-shot `mosquitto-passwd` service before the broker starts, as:
#   make-passwd.sh /mosquitto/auth/passwd
# Passwords go through a plaintext file converted in place (`mosquitto_passwd -U`), never
# through the command line where `ps` would show them. SECRETS_DIR overrides /run/secrets.
set -eu

out="${1:?usage: make-passwd.sh PASSWORD_FILE}"
secrets="${SECRETS_DIR:-/run/secrets}"
# user:secret-file; the worker's secret is named like its setting (IOTAD_MQTT__PASSWORD).
users="iotad:iotad_mqtt__password simulator:mqtt_simulator_password reader:mqtt_reader_password"

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: >"$tmp"
for pair in $users; do
  user="${pair%%:*}"
  file="$secrets/${pair#*:}"
  if [ ! -s "$file" ]; then
    echo "make-passwd: missing or empty secret $file (run deploy/init-secrets.sh)" >&2
    exit 1
  fi
  # $(cat) drops the trailing newline an editor may have added
  printf '%s:%s\n' "$user" "$(cat "$file")" >>"$tmp"
done
mosquitto_passwd -U "$tmp"
# In the image the broker drops to the mosquitto user (uid 1883): it must read the file.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown mosquitto:mosquitto "$tmp"
fi
mv "$tmp" "$out"
trap - EXIT
echo "make-passwd: wrote $out for users:$(for p in $users; do printf ' %s' "${p%%:*}"; done)"
