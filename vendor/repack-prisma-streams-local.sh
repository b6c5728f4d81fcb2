#!/usr/bin/env bash
# Rebuilds vendor/prisma-streams-local-0.1.11-node20.tgz: @prisma/streams-local exactly as
# published on npm, with one change in its package.json, engines.node ">=22.0.0" -> ">=20.0.0"
# and the bun engine removed (see vendor/README.md for why). Run from anywhere; needs npm and the
# registry.
set -euo pipefail
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @prisma/streams-local@0.1.11 >/dev/null && tar xzf prisma-streams-local-0.1.11.tgz)
manifest="$work/package/package.json"
grep -q '"node": ">=22.0.0"' "$manifest"
node -e '
const fs = require("fs");
const m = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
m.engines = { node: ">=20.0.0" };
fs.writeFileSync(process.argv[1], JSON.stringify(m, null, 2) + "\n");
' "$manifest"
(cd "$work/package" && npm pack --silent --ignore-scripts >/dev/null)
mv "$work/package/prisma-streams-local-0.1.11.tgz" prisma-streams-local-0.1.11-node20.tgz
echo "vendor/prisma-streams-local-0.1.11-node20.tgz"
