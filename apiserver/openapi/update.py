#!/usr/bin/env python3
"""Regenerates the vendored OpenAPI documents of the embedded API server.

Copies kube-apiserver's published OpenAPI v3 documents (api/openapi-spec/v3 of
k8s.io/kubernetes) for exactly the group versions the embedded server serves, and the v2
swagger.json filtered to those group versions' paths and the definitions they reach; minified,
gzip-compressed, with the SHA-512 of each served document (kube-apiserver's `hash`) in
index.json. Run from anywhere: `python3 apiserver/openapi/update.py [kubernetes-version]`.
"""

import gzip
import hashlib
import json
import os
import subprocess
import sys

VERSION = sys.argv[1] if len(sys.argv) > 1 else "v1.37.2"
# The group versions of apiserver/src/resources.rs (BUILTIN).
GROUP_VERSIONS = [
    ("", "v1"),
    ("apiextensions.k8s.io", "v1"),
    ("apps", "v1"),
    ("authentication.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("discovery.k8s.io", "v1"),
    ("networking.k8s.io", "v1"),
    ("policy", "v1"),
    ("scheduling.k8s.io", "v1"),
    ("storage.k8s.io", "v1"),
]
HERE = os.path.dirname(os.path.abspath(__file__))


def module_dir():
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{VERSION}"],
        capture_output=True, text=True, cwd=HERE, env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    try:
        return json.loads(out.stdout)["Dir"]
    except (ValueError, KeyError):
        fallback = os.path.expanduser(f"~/go/pkg/mod/k8s.io/kubernetes@{VERSION}")
        if os.path.isdir(fallback):
            return fallback
        sys.exit(f"cannot find k8s.io/kubernetes@{VERSION}: {out.stderr}")


def minify(doc):
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def write(name, data):
    # mtime=0: the same input gives the same bytes.
    with open(os.path.join(HERE, name), "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(data)


def gv_path(group, version):
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def refs(node, out):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            out.add(ref[len("#/definitions/"):])
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def main():
    spec = os.path.join(module_dir(), "api", "openapi-spec")
    index = {"source": f"k8s.io/kubernetes@{VERSION}/api/openapi-spec", "v3": {}}
    for group, version in GROUP_VERSIONS:
        path = gv_path(group, version)
        with open(os.path.join(spec, "v3", path.replace("/", "__") + "_openapi.json")) as f:
            data = minify(json.load(f))
        file = path.replace("/", "__") + ".json.gz"
        write(file, data)
        index["v3"][path] = {"file": file, "hash": hashlib.sha512(data).hexdigest().upper()}

    with open(os.path.join(spec, "swagger.json")) as f:
        swagger = json.load(f)
    prefixes = tuple("/" + gv_path(g, v) + "/" for g, v in GROUP_VERSIONS)
    paths = {p: o for p, o in swagger["paths"].items() if p.startswith(prefixes)}
    reached, todo = set(), set()
    refs(paths, todo)
    definitions = swagger["definitions"]
    while todo:
        name = todo.pop()
        if name in reached or name not in definitions:
            continue
        reached.add(name)
        refs(definitions[name], todo)
    swagger["paths"] = paths
    swagger["definitions"] = {n: d for n, d in definitions.items() if n in reached}
    data = minify(swagger)
    write("swagger.json.gz", data)
    index["v2"] = {"file": "swagger.json.gz", "hash": hashlib.sha512(data).hexdigest().upper()}

    with open(os.path.join(HERE, "index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
