#!/usr/bin/env bash
# Builds the real control plane the tests run against (kube-apiserver, kube-controller-manager,
# etcd) from the Go modules pinned in go.mod, and the fake kubelet of cmd/fake-kubelet, into
# target/kube-assets/<versions>/ of the repository. Builds only the binaries missing there, so a
# new one does not rebuild the others. Progress goes to stderr; the last line of stdout is the
# folder (for VCSYNC_KUBE_ASSETS). Needs only the Go module proxy; once built, nothing needs the
# network.
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
# Each binary's package, by the name it gets in the folder.
declare -A packages=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [etcd]=./cmd/etcd
  [fake-kubelet]=./cmd/fake-kubelet
)
binaries=(kube-apiserver kube-controller-manager etcd fake-kubelet)

missing=()
for binary in "${binaries[@]}"; do
  [ -x "$out/$binary" ] || missing+=("$binary")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "control plane $kubernetes (etcd $etcd) already built" >&2
  echo "$out"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build.sh: go not found; install Go 1.26 (the machines have it)" >&2
  exit 1
fi
echo "building ${missing[*]} of control plane $kubernetes (etcd $etcd) into $out (kube-apiserver takes minutes)" >&2
mkdir -p "$out"
# The version the binaries report (/version, feature defaults), as Kubernetes' own build sets it.
minor="$(echo "$kubernetes" | cut -d. -f2)"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$kubernetes -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
ldflags="$ldflags -X $version_pkg.gitTreeState=clean"
flags=(-trimpath -ldflags "$ldflags")
for name in "${missing[@]}"; do
  package="${packages[$name]}"
  echo "  go build $package" >&2
  start=$SECONDS
  # Built beside its place and moved there whole, so a binary in the folder is always complete.
  go build "${flags[@]}" -o "$out/.$name.partial" "$package"
  mv -f "$out/.$name.partial" "$out/$name"
  echo "  built $name in $((SECONDS - start)) s" >&2
done
echo "$out"
