#!/usr/bin/env bash
# Figures of `vcsync cluster snapshot` and `restore` for BENCHMARKS.md: a `local` cluster with
# 1,000 objects (10 namespaces, each with 40 ConfigMaps, 30 Secrets, 10 Services, 10 Pods and
# 9 Deployments), a snapshot, its datastore replaced by an empty one, a restore, and a dry-run
# comparison. Prints the times, the archive's size and how many host pods were recreated.
#
#   bash tests/bench/snapshot_round_trip.sh [VCSYNC_BINARY]   (default target/release/vcsync)
set -euo pipefail
vcsync=$(realpath "${1:-target/release/vcsync}")
kubectl=${VCSYNC_KUBECTL:-kubectl}
work=$(mktemp -d)
trap '"$vcsync" cluster -d local -q delete bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export VCSYNC_DATA_DIR=$work/data
cluster() { "$vcsync" cluster -d local -q "$@"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

cluster create bench --wait
dir=$VCSYNC_DATA_DIR/local/bench
virt() { "$kubectl" --kubeconfig "$dir/virtual.kubeconfig" "$@"; }
host() { "$kubectl" --kubeconfig "$dir/host.kubeconfig" "$@"; }

python3 - "$work/objects.json" <<'PY'
import json, sys
items = []
for n in range(10):
    ns = f"bench-{n}"
    items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    meta = lambda name, **extra: {"name": name, "namespace": ns, **extra}
    items += [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"config-{i}"),
               "data": {"settings": f"value-{i}" * 20}} for i in range(40)]
    items += [{"apiVersion": "v1", "kind": "Secret", "metadata": meta(f"secret-{i}"),
               "stringData": {"password": f"secret-{i}"}} for i in range(30)]
    items += [{"apiVersion": "v1", "kind": "Service", "metadata": meta(f"svc-{i}"),
               "spec": {"selector": {"app": f"app-{i}"}, "ports": [{"port": 80}]}} for i in range(10)]
    items += [{"apiVersion": "v1", "kind": "Pod", "metadata": meta(f"pod-{i}", labels={"app": f"app-{i}"}),
               "spec": {"containers": [{"name": "app", "image": "nginx",
                   "envFrom": [{"configMapRef": {"name": f"config-{i}"}}]}]}} for i in range(10)]
    items += [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(f"deploy-{i}"),
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": f"d-{i}"}},
                        "template": {"metadata": {"labels": {"app": f"d-{i}"}},
                                     "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}
              for i in range(9)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
PY
virt create --validate=false -f "$work/objects.json" >/dev/null
until [ "$(host get pods -n vcsync-bench --no-headers 2>/dev/null | grep -c Running)" -ge 100 ]; do sleep 1; done
host_pods() { host get pods -n vcsync-bench -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}' | sort; }
host_pods > "$work/before"

t0=$(now); cluster snapshot bench -o "$work/bench.snapshot"; t1=$(now)
objects=$(python3 -c 'import gzip,json,sys; print(json.loads(gzip.open(sys.argv[1]).readline())["objects"])' "$work/bench.snapshot")
echo "snapshot: $objects objects in $(secs "$t0" "$t1") s, $(stat -c %s "$work/bench.snapshot") bytes"

cluster pause bench
echo '{"format":1,"resourceVersion":1,"clean":true,"tables":{}}' > "$dir/virtual-state/state.json"
cluster resume bench --wait

t0=$(now); cluster restore bench -f "$work/bench.snapshot" | tail -1; t1=$(now)
echo "restore: $(secs "$t0" "$t1") s"
until [ "$(virt get pods -A --no-headers 2>/dev/null | grep -c Running)" -ge 100 ]; do sleep 1; done
t2=$(now)
echo "every restored pod Running (from its host copy) after $(secs "$t0" "$t2") s"
t0=$(now); cluster restore bench -f "$work/bench.snapshot" --dry-run | tail -1; t1=$(now)
echo "dry-run comparison: $(secs "$t0" "$t1") s"
host_pods > "$work/after"
echo "host pods recreated: $(comm -13 "$work/before" "$work/after" | wc -l) of $(wc -l < "$work/before")"
