#!/usr/bin/env bash
# Check that twistd lists the p2pwall plugin: check-plugin.sh [TWISTD] (default .venv/bin/twistd).
# twistd's help is captured before grep reads it: in 'twistd --help | grep -q' under pipefail, grep
# exits at the first match and twistd, still writing, dies of SIGPIPE, which fails the check.
set -euo pipefail
help=$("${1:-.venv/bin/twistd}" --help)
grep -q '^ *p2pwall ' <<<"$help" || { echo "p2pwall: twistd does not list the plugin" >&2; exit 1; }
