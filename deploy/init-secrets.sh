#!/bin/sh
# Creates the stack's secrets with random values, once: deploy/secrets/<name>, one password
# per file. Existing files are kept, so you may also write your own before running it.
# Never commit them (deploy/secrets/.gitignore ignores everything there).
#   sh deploy/init-secrets.sh            # SECRETS_OUT overrides the directory (tests)
set -eu

dir="${SECRETS_OUT:-$(cd "$(dirname "$0")" && pwd)/secrets}"
# The NATS cluster (profile scale-out) adds the workers' NATS password and the routes' password;
# devices and readers use their MQTT users' passwords there too.
names="iotad_mqtt__password mqtt_simulator_password mqtt_reader_password grafana_admin_password
iotad_nats__password nats_route_password"

mkdir -p "$dir"
chmod 700 "$dir" # the directory keeps other users of this host out...
for name in $names; do
  file="$dir/$name"
  if [ -s "$file" ]; then
    echo "keeping $file"
    continue
  fi
  # 32 characters from [A-Za-z0-9]: no quoting trouble in URLs, shells or config files
  pw="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
  printf '%s' "$pw" >"$file"
  # ...while the file itself must be readable by the containers' own users (compose bind-
  # mounts file secrets with the host's owner and mode).
  chmod 644 "$file"
  echo "created $file"
done
