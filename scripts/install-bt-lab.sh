#!/usr/bin/env bash
# Install the real BitTorrent clients, tracker and DHT library the BitTorrent lab (lab/btlab.py)
# runs in namespaces. Not part of `make test`: the e2e swarm test skips when these are missing.
# A policy-rc.d that exits 101 stops the packages from starting daemons (transmission-daemon) in
# the root namespace while they install; it is removed afterwards unless it was there before.
set -euo pipefail

PACKAGES=(aria2 transmission-cli transmission-daemon qbittorrent-nox rtorrent python3-libtorrent
          opentracker tcpdump socat openssl)

if [ "$(id -u)" != 0 ]; then
  echo "install-bt-lab: run as root (apt-get install ${PACKAGES[*]})" >&2
  exit 1
fi

need=()
for pkg in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need+=("$pkg")
done
if ((${#need[@]} == 0)); then
  echo "install-bt-lab: all installed"
  exit 0
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
echo "install-bt-lab: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian enables transmission-daemon's unit; the lab runs its own instances in namespaces.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now transmission-daemon.service >/dev/null 2>&1 || true
fi
echo "install-bt-lab: installed ${need[*]}"
