#!/usr/bin/env bash
# Install p2pwall as a systemd service from this checkout, or remove it (docs/install.md):
#
#   install-service.sh [--green-if IFACE] [--python PYTHON] [PATHS]   install or upgrade
#   install-service.sh --uninstall [--purge] [PATHS]                   remove
#
# PATHS: --prefix DIR (the virtualenv, /opt/p2pwall), --unit-dir DIR (/etc/systemd/system),
# --config FILE (/etc/default/p2pwall), --root DIR (put all three under DIR and leave systemd
# alone: a throw-away root for tests). What the install creates outside the prefix is listed in
# PREFIX/install-manifest, and --uninstall removes exactly that and the prefix; a settings file
# that was there before is kept. --purge also removes the daemon's data (/var/lib/p2pwall,
# /var/log/p2pwall).
#
# System packages: python3-venv (a virtualenv needs ensurepip), iptables (or nftables) and
# python3-nftables (--enforce kernel writes its sets through it, linked into the virtualenv),
# installed if missing. A Python package pip finds no wheel for (NetfilterQueue has none) is
# compiled with build packages installed for the time of the build only (docs/install.md).
set -euo pipefail
umask 022

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
UNIT=p2pwall.service
MANIFEST=install-manifest
root="" prefix=/opt/p2pwall unit_dir=/etc/systemd/system config=/etc/default/p2pwall
python=/usr/bin/python3 green_if="" uninstall=0 purge=0

die() { echo "p2pwall: $*" >&2; exit 1; }
# The header above, lines 2 to 12: --help on stdout, after a bad option on stderr.
usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; exit "$1"; }
value() { [ $# -ge 2 ] || die "$1 needs a value"; printf '%s' "$2"; }

while [ $# -gt 0 ]; do
  case $1 in
    --root) root=$(value "$@"); shift ;;
    --prefix) prefix=$(value "$@"); shift ;;
    --unit-dir) unit_dir=$(value "$@"); shift ;;
    --config) config=$(value "$@"); shift ;;
    --python) python=$(value "$@"); shift ;;
    --green-if) green_if=$(value "$@"); shift ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h|--help) usage 0 ;;
    *) echo "p2pwall: unknown option $1" >&2; usage 2 >&2 ;;
  esac
  shift
done

# The paths go into the unit's command lines and a sed replacement: plain characters only.
for path in "$prefix" "$unit_dir" "$config" ${root:+"$root"}; do
  [[ $path =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "not an absolute path of plain characters: '$path'"
done
[ -z "$green_if" ] || [[ $green_if =~ ^[A-Za-z0-9_.:@-]{1,15}$ ]] ||
  die "--green-if: not an interface name: '$green_if'"
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"

root=${root%/}
prefix=$root$prefix unit_dir=$root$unit_dir config=$root$config
unit=$unit_dir/$UNIT manifest=$prefix/$MANIFEST
# The daemon's data, made by systemd (StateDirectory, LogsDirectory): kept without --purge.
data=("$root/var/lib/p2pwall" "$root/var/log/p2pwall")
# systemctl only for the real system, and only when systemd runs it (sd_booted's test).
live=0
if [ -z "$root" ] && [ -d /run/systemd/system ]; then live=1; fi

created=()
# mkdir -p, remembering each directory it creates (outermost first) for the uninstall.
make_dir() {
  local dir=$1 missing=()
  while [ ! -d "$dir" ]; do missing=("$dir" "${missing[@]}"); dir=$(dirname "$dir"); done
  for dir in "${missing[@]}"; do mkdir "$dir"; created+=("$dir"); done
}

uninstall() {
  [ -f "$manifest" ] || die "no p2pwall install at $prefix (no $manifest)"
  if [ "$live" = 1 ]; then
    # Stopping runs ExecStopPost, which removes the queue rules.
    systemctl disable --now "$UNIT" 2>/dev/null || true
  fi
  local entries=() packages=() path i
  mapfile -t entries <"$manifest"
  rm -rf "$prefix"
  for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
    path=${entries[i]}
    if [[ $path == apt:* ]]; then
      packages+=("${path#apt:}")
    elif [ -d "$path" ] && [ ! -L "$path" ]; then
      rmdir "$path" 2>/dev/null || echo "p2pwall: kept $path (not empty)"
    else
      rm -f "$path"
    fi
  done
  if [ "$live" = 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" 2>/dev/null || true
  fi
  if [ ${#packages[@]} -gt 0 ]; then
    # Installed for the compiled modules: apt may remove them once nothing else needs them.
    apt-mark auto "${packages[@]}" >/dev/null
    echo "p2pwall: ${packages[*]} now removable (apt-get autoremove)"
  fi
  for path in "${data[@]}"; do
    if [ "$purge" = 1 ]; then
      rm -rf "$path"
    elif [ -d "$path" ]; then
      echo "p2pwall: kept $path (--purge removes it)"
    fi
  done
  echo "p2pwall: removed"
}

# Missing system packages: installed on the real system, an error anywhere else.
system_packages() {
  local need=()
  "$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
  command -v iptables >/dev/null || command -v nft >/dev/null || need+=(iptables)
  [ -d /usr/lib/python3/dist-packages/nftables ] || need+=(python3-nftables)
  [ ${#need[@]} -gt 0 ] || return 0
  if [ -n "$root" ] || [ "$(id -u)" != 0 ]; then
    die "missing system packages: ${need[*]} (apt-get install ${need[*]})"
  fi
  echo "p2pwall: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
}

# The Debian packages that build a Python package pip finds no wheel for, besides gcc and
# Python's headers (NetfilterQueue has none at all; google-re2 none for armhf, say).
build_needs() {
  case $1 in
    netfilterqueue) echo libnetfilter-queue-dev ;;
    google-re2) echo g++ libre2-dev pybind11-dev ;;
  esac
}

have_pkg() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
installed_packages() {
  dpkg-query -W -f='${Status} ${Package}\n' | awk '$3 == "installed" {print $4}' | sort
}

pip_install() {
  "$prefix/bin/pip" install --quiet --disable-pip-version-check --use-pep517 "$@" "$SOURCE"
}

# The Python packages pip would build from source here (no wheel for this machine).
from_source() {
  local report=$prefix/pip-report.json
  pip_install --dry-run --ignore-installed --report "$report" >/dev/null
  "$prefix/bin/python" - "$report" <<'EOF_PY'
import json
import sys

for item in json.load(open(sys.argv[1]))["install"]:
    info = item["download_info"]
    if "archive_info" in info and not info["url"].endswith(".whl"):
        print(item["metadata"]["name"].lower())
EOF_PY
  rm -f "$report"
}

# Build the virtualenv's packages. What has no wheel is compiled: gcc, Python's headers and the
# library's -dev package are installed for the build and purged after it, all but the
# libraries the compiled modules load (libnetfilter-queue1), so no compiler stays behind.
build_packages() {
  local sources=() need=() new=() kept=() purge=() name package before status=0
  mapfile -t sources < <(from_source)
  if [ ${#sources[@]} -eq 0 ]; then
    pip_install
    return
  fi
  local headers
  headers=$("$python" -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')
  for package in gcc "$headers" $(for name in "${sources[@]}"; do build_needs "$name"; done); do
    have_pkg "$package" || need+=("$package")
  done
  echo "p2pwall: no wheel for ${sources[*]}: building from source"
  if [ ${#need[@]} -eq 0 ]; then
    pip_install
    return
  fi
  if [ -n "$root" ] || [ "$(id -u)" != 0 ]; then
    die "building ${sources[*]} needs ${need[*]} (apt-get install ${need[*]}), or wheels (PIP_FIND_LINKS)"
  fi
  before=$(installed_packages)
  echo "p2pwall: installing ${need[*]} for the build (removed after it)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  pip_install || status=$?
  mapfile -t new < <(comm -13 <(echo "$before") <(installed_packages))
  # The packages of the libraries the compiled modules load stay, as if installed by hand.
  mapfile -t kept < <(find "$prefix" -name '*.so' -exec ldd {} + 2>/dev/null |
    awk '$3 ~ /^\// {print $3}' | xargs -r -n1 basename | sort -u |
    xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | sort -u | comm -12 - <(printf '%s\n' "${new[@]}"))
  mapfile -t purge < <(comm -23 <(printf '%s\n' "${new[@]}") <(printf '%s\n' "${kept[@]}"))
  if [ ${#kept[@]} -gt 0 ]; then
    apt-mark manual "${kept[@]}" >/dev/null
    created+=("${kept[@]/#/apt:}")
  fi
  if [ ${#purge[@]} -gt 0 ]; then
    echo "p2pwall: removing the build's ${#purge[@]} packages; keeping ${kept[*]:-none}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${purge[@]}" >/dev/null
  fi
  return "$status"
}

# The manifest: the entries given (a previous install's) and what this run created, once each.
write_manifest() {
  printf '%s\n' "$@" "${created[@]}" | awk 'NF && !seen[$0]++' >"$manifest"
}

render() {
  sed -e "s|@PREFIX@|${prefix}|g" -e "s|@CONFIG@|${config}|g" "$1" >"$2.tmp"
  mv "$2.tmp" "$2"
}

install() {
  command -v "$python" >/dev/null || die "no Python at $python (--python)"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "p2pwall needs Python 3.11 or later; $python is $("$python" -V 2>&1) (--python)"
  local entries=()
  if [ -f "$manifest" ]; then
    mapfile -t entries <"$manifest"
  elif [ -e "$prefix" ] && [ -n "$(ls -A "$prefix")" ]; then
    die "$prefix exists and is not a p2pwall install: choose another --prefix"
  fi
  system_packages

  make_dir "$(dirname "$prefix")"
  echo "p2pwall: building $prefix from $SOURCE"
  "$python" -m venv --clear "$prefix"
  write_manifest "${entries[@]}"
  build_packages
  bash "$SOURCE/scripts/link-nftables.sh" "$prefix/bin/python"
  # twistd finds plugins through a cache it cannot write at run time (ProtectSystem=strict).
  "$prefix/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
  bash "$SOURCE/scripts/check-plugin.sh" "$prefix/bin/twistd"

  make_dir "$unit_dir"
  [ -e "$unit" ] || created+=("$unit")
  render "$SOURCE/packaging/p2pwall.service.in" "$unit"
  make_dir "$(dirname "$config")"
  if [ ! -e "$config" ]; then
    created+=("$config")
    render "$SOURCE/packaging/p2pwall.default" "$config"
  fi
  if [ -z "$green_if" ]; then
    :
  elif grep -q '^GREEN_IF=' "$config"; then
    sed -i "s|^GREEN_IF=.*|GREEN_IF=$green_if|" "$config"
  else
    echo "GREEN_IF=$green_if" >>"$config"
  fi
  write_manifest "${entries[@]}"

  echo "p2pwall: installed $unit and $prefix; settings in $config"
  if [ "$live" = 0 ]; then
    [ -n "$root" ] || echo "p2pwall: systemd is not running here: nothing enabled or started"
    return
  fi
  systemctl daemon-reload
  if [ -n "$green_if" ]; then
    systemctl enable "$UNIT"
    systemctl restart "$UNIT"
    echo "p2pwall: started (systemctl status p2pwall, journalctl -u p2pwall)"
  elif grep -q '^GREEN_IF=.' "$config"; then
    systemctl try-restart "$UNIT"
  else
    echo "p2pwall: set GREEN_IF in $config, then: systemctl enable --now p2pwall"
  fi
}

if [ "$uninstall" = 1 ]; then uninstall; else install; fi
