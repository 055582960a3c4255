#!/usr/bin/env python3
"""A minimal CRI (Kubernetes Container Runtime Interface v1) client for the
rcrun suite: what kubelet/crictl send, over gRPC on containerd's socket.

    cri_client.py --endpoint unix:///run/x.sock METHOD [REQUEST_JSON]

METHOD is a RuntimeService RPC name (RunPodSandbox, CreateContainer, ...).
REQUEST_JSON is the request message in protobuf's JSON mapping (field names
as in cri_subset.proto).  The response is printed as JSON with the proto
field names; a gRPC error is printed on stderr as `CODE: details` and the
exit status is 1.

Debian 12 packages no crictl, so the suite drives containerd's CRI plugin
with this instead (grpcio and grpcio-tools from PyPI, in a venv the suite
creates).  The stubs are generated from cri_subset.proto on first use.
"""
import argparse
import hashlib
import importlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "cri_subset.proto")


def stubs(cache):
    """Generate (once per proto content) and import the Python stubs."""
    with open(PROTO, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    gen = os.path.join(cache, "gen-" + digest)
    if not os.path.exists(os.path.join(gen, "cri_subset_pb2_grpc.py")):
        from grpc_tools import protoc

        tmp = gen + ".tmp%d" % os.getpid()
        os.makedirs(tmp, exist_ok=True)
        rc = protoc.main(
            ["protoc", "-I" + HERE, "--python_out=" + tmp, "--grpc_python_out=" + tmp, PROTO]
        )
        if rc != 0:
            sys.exit("protoc failed on %s" % PROTO)
        try:
            os.rename(tmp, gen)
        except OSError:
            pass  # another process generated it first
    sys.path.insert(0, gen)
    return importlib.import_module("cri_subset_pb2"), importlib.import_module("cri_subset_pb2_grpc")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--cache", default=os.environ.get("RCRUN_CRI_CACHE", "/var/cache/rcrun-cri"))
    ap.add_argument("method")
    ap.add_argument("request", nargs="?", default="{}")
    a = ap.parse_args()

    import grpc
    from google.protobuf import json_format

    pb2, pb2_grpc = stubs(a.cache)
    service = pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    method = service.methods_by_name.get(a.method)
    if method is None:
        sys.exit("unknown RuntimeService method %r" % a.method)
    req = getattr(pb2, method.input_type.name)()
    json_format.Parse(a.request, req)
    with grpc.insecure_channel(a.endpoint) as ch:
        stub = pb2_grpc.RuntimeServiceStub(ch)
        try:
            resp = getattr(stub, a.method)(req, timeout=a.timeout)
        except grpc.RpcError as e:
            print("%s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    out = json_format.MessageToDict(resp, preserving_proto_field_name=True)
    # bytes fields (ExecSync's stdout/stderr) as text rather than base64
    for field in resp.DESCRIPTOR.fields:
        if field.type == field.TYPE_BYTES:
            out[field.name] = getattr(resp, field.name).decode("utf-8", "replace")
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
