#!/usr/bin/env bash
# Builds the real control plane the tests run against (kube-apiserver, kube-controller-manager,
# etcd) from the Go modules pinned in go.mod, into target/kube-assets/<versions>/ of the
# repository. Does nothing when they are already there. Progress goes to stderr; the last line of
# stdout is the folder (for VCSYNC_KUBE_ASSETS). Needs only the Go module proxy; once built,
# nothing needs the network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

# The version go.mod requires of a module (in a require block or on a `require` line).
required() {
  awk -v module="$1" '{ for (i = 1; i < NF; i++) if ($i == module) { print $(i + 1); exit } }' go.mod
}
kubernetes="$(required k8s.io/kubernetes)"
etcd="$(required go.etcd.io/etcd/server/v3)"
out="$root/target/kube-assets/kubernetes-$kubernetes-etcd-$etcd"
binaries=(kube-apiserver kube-controller-manager etcd)

built=true
for binary in "${binaries[@]}"; do
  [ -x "$out/$binary" ] || built=false
done
if $built; then
  echo "control plane $kubernetes (etcd $etcd) already built" >&2
  echo "$out"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build.sh: go not found; install Go 1.26 (the machines have it)" >&2
  exit 1
fi
echo "building control plane $kubernetes (etcd $etcd) into $out (the first time takes minutes)" >&2
tmp="$out.partial"
rm -rf "$tmp"
mkdir -p "$tmp"
# The version the binaries report (/version, feature defaults), as Kubernetes' own build sets it.
minor="$(echo "$kubernetes" | cut -d. -f2)"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$kubernetes -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
ldflags="$ldflags -X $version_pkg.gitTreeState=clean"
flags=(-trimpath -ldflags "$ldflags")
for package in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager ./cmd/etcd; do
  name="$(basename "$package")"
  echo "  go build $package" >&2
  start=$SECONDS
  go build "${flags[@]}" -o "$tmp/$name" "$package"
  echo "  built $name in $((SECONDS - start)) s" >&2
done
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
