#!/usr/bin/env bash
# Install what p2pwall needs on a fresh Debian/Ubuntu machine: system packages (only the missing
# ones) and a virtualenv in .venv with p2pwall installed. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_pkg() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
# libnetfilter-queue-dev, gcc and python3-dev build the NetfilterQueue package (--reader
# netfilterqueue) and the benchmark's C reader; the native reader needs none of them. strace
# lets a test check the daemon's system calls against the systemd unit's filter.
# python3-nftables writes the kernel's sets (--enforce kernel); ipset the same on
# iptables-legacy gateways.
for pkg in libnetfilter-queue-dev iptables nftables python3-nftables ipset iproute2 dnsmasq-base \
           curl netcat-openbsd dnsutils gcc make python3-venv python3-dev strace; do
  have_pkg "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "p2pwall: missing system packages (${need[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "p2pwall: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q '.[dev]' 2> >(grep -v "^WARNING: Location" >&2)
bash scripts/link-nftables.sh .venv/bin/python
# twistd finds plugins by scanning twisted/plugins; regenerate the cache once, as root owns it.
.venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
bash scripts/check-plugin.sh .venv/bin/twistd
