#!/usr/bin/env bash
# Rebuilds vendor/aws-local-stepfunctions-3.0.0-node20.tgz: the package exactly as published on
# npm, with one change in its package.json, engines.node ">=22.0.0" -> ">=20.0.0" (see
# vendor/README.md for why). Run from the repository root; needs npm and the registry.
set -euo pipefail
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent aws-local-stepfunctions@3.0.0 >/dev/null && tar xzf aws-local-stepfunctions-3.0.0.tgz)
manifest="$work/package/package.json"
grep -q '"node": ">=22.0.0"' "$manifest"
sed -i 's/"node": ">=22.0.0"/"node": ">=20.0.0"/' "$manifest"
(cd "$work/package" && npm pack --silent --ignore-scripts >/dev/null)
mv "$work/package/aws-local-stepfunctions-3.0.0.tgz" aws-local-stepfunctions-3.0.0-node20.tgz
echo "vendor/aws-local-stepfunctions-3.0.0-node20.tgz"
