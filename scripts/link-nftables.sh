#!/usr/bin/env bash
# Make libnftables' Python binding (Debian's python3-nftables: pure Python over
# libnftables.so.1, which --enforce kernel writes its sets through) importable in the virtualenv
# whose Python is given: that Python is not Debian's, so the package is linked into it.
set -euo pipefail
python=$1
binding=/usr/lib/python3/dist-packages/nftables
[ -d "$binding" ] || { echo "p2pwall: $binding missing (apt-get install python3-nftables)" >&2; exit 1; }
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$binding" "$site/nftables"
"$python" -c 'import nftables' || { echo "p2pwall: the nftables binding does not import" >&2; exit 1; }
