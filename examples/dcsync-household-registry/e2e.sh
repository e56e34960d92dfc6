#!/usr/bin/env bash
# The example end to end through the `dcsync` command, as an operator runs it: the fake registry in the
# background, the sample log imported, a check, a run, and a second run that must change nothing remotely.
# Needs dcsync and this package installed (pip install . from this directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cp "$here/dcsync.yaml" "$work/"
cp -r "$here/mappings" "$work/"
port=$(python -c 'from connector_core.testing.server import free_port; print(free_port())')
dcsync mock-server household-registry --port "$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
export REGISTRY_URL="http://127.0.0.1:$port" REGISTRY_CLIENT_SECRET=fake-client-secret COLUMNS=200
cd "$work"

for _ in $(seq 50); do dcsync check registry >/dev/null 2>&1 && break; sleep 0.2; done
dcsync plugins | grep -q household-registry
dcsync check registry
dcsync log import "$here/samples/events.jsonl"
dcsync run registry

remote() {  # what the registry holds: record count, highest version, duplicate creates
  python - "$REGISTRY_URL" <<'PY'
import sys

import httpx

records = httpx.get(sys.argv[1] + "/_control/records").json()
stats = httpx.get(sys.argv[1] + "/_control/stats").json()
print(len(records), max(r["version"] for r in records), len(stats["duplicate_creates"]))
PY
}
first=$(remote)
dcsync run registry
second=$(remote)
echo "registry after the first run: $first (records, highest version, duplicates); after the second: $second"
[ "$first" = "20 1 0" ] || { echo "the first run did not create each of the 20 entities once"; exit 1; }
[ "$second" = "$first" ] || { echo "the second run changed the registry although nothing changed"; exit 1; }
echo "example end to end: ok"
