#!/usr/bin/env bash
# The test command (README, .ci/run): every test of the workspace, with the end-to-end suite
# against the embedded API servers in both namespace mappings and against a real pair of
# control planes (kube-apiserver, kube-controller-manager and etcd, built once from the Go
# modules in tests/control-plane/ and cached under target/kube-assets/), and the API server's
# behaviour suite against the embedded server and a real kube-apiserver.
#
# VCSYNC_KUBE_ASSETS, when set, names the binaries' folder and skips the build. Without Go the
# real-control-plane runs are skipped, saying so. Extra arguments go to every cargo nextest run
# (`bash tests/run.sh --no-fail-fast`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VCSYNC_KUBE_ASSETS:-}" ]; then
  if command -v go >/dev/null; then
    VCSYNC_KUBE_ASSETS="$(bash tests/control-plane/build.sh | tail -n 1)"
  else
    echo "tests/run.sh: go not found: the runs against a real kube-apiserver are skipped" \
      "(install Go 1.26; tests/control-plane/build.sh builds the control plane)" >&2
  fi
fi

section() { printf '\n=== %s\n' "$*"; }

# The real control plane's folder for the runs that use it, none for those that must not.
with_assets() { VCSYNC_KUBE_ASSETS="${VCSYNC_KUBE_ASSETS:-}" "$@"; }
embedded() { env -u VCSYNC_KUBE_ASSETS "$@"; }

section "unit, behaviour (embedded and real kube-apiserver) and control-plane tests"
# No import circles between the modules of the product's crates: the binary, the syncer, the
# translators, the plugins and envtest (tests/module_graph.py lists any). The embedded API
# server (apiserver/, a development tool) is not held to it yet.
python3 tests/module_graph.py src syncer/src translators/src envtest/src plugins/*/src
with_assets cargo nextest run --workspace -E 'not binary(e2e)' "$@"

section "end-to-end suite, embedded servers, single namespace mapping"
embedded cargo nextest run -p vcsync -E 'binary(e2e)' "$@"

section "end-to-end suite, embedded servers, per-namespace mapping"
embedded env VCSYNC_E2E_NAMESPACE_MAPPING=perNamespace \
  cargo nextest run -p vcsync -E 'binary(e2e)' "$@"

if [ -n "${VCSYNC_KUBE_ASSETS:-}" ]; then
  section "end-to-end suite, real control planes ($VCSYNC_KUBE_ASSETS)"
  with_assets cargo nextest run -p vcsync -E 'binary(e2e)' "$@"
fi
