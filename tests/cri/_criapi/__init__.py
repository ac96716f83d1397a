"""GENERATED protobuf messages of the CRI (runtime.v1), for the containerd test only.

``runtime_v1.proto`` (hand-written from the public k8s.io/cri-api definition, trimmed to what the test
sends and reads) is the source; ``runtime_v1_pb2.py`` and its typing stub ``runtime_v1_pb2.pyi`` are
generated from it with grpcio-tools and committed. Never edit them by hand; after changing the
.proto, run from the repository root (``pip install grpcio-tools`` first)::

    python -m grpc_tools.protoc -Itests/cri/_criapi \\
        --python_out=tests/cri/_criapi --pyi_out=tests/cri/_criapi \\
        tests/cri/_criapi/runtime_v1.proto

No ``*_pb2_grpc.py`` is generated: ``tests.cri.runtime`` calls the methods through
``grpc.Channel.unary_unary`` directly.
"""
