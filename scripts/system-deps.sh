#!/usr/bin/env bash
# Installs the Debian tools the tests and the demo use, if they are missing.
# Runs as root on CI; elsewhere it uses sudo when it can and says what is missing when it cannot.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
# Prometheus rule tests (promtool) and the Alertmanager integration tests. Debian names the
# Alertmanager binary prometheus-alertmanager; upstream tarballs name it alertmanager.
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v alertmanager >/dev/null 2>&1 || command -v prometheus-alertmanager >/dev/null 2>&1 \
  || need+=(prometheus-alertmanager)
# The model init container's script (deploy/k8s/components/model-from-image) runs on busybox.
command -v busybox >/dev/null 2>&1 || need+=(busybox)
# NATS JetStream scale-out tests (tests/integration/test_nats_*.py): a real nats-server.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "missing Debian packages: ${need[*]} (install them: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
