"""GENERATED protobuf messages of the kubelet pod-resources API v1, for ``app.watch.podresources`` only.

``podresources_v1.proto`` (hand-written from the public Kubernetes API definition) is the source;
``podresources_v1_pb2.py`` and its typing stub ``podresources_v1_pb2.pyi`` are generated from it
with grpcio-tools and committed. Never edit them by hand; after changing the .proto, run from the
repository root::

    python -m grpc_tools.protoc -Iapp/watch/_podresources \\
        --python_out=app/watch/_podresources --pyi_out=app/watch/_podresources \\
        app/watch/_podresources/podresources_v1.proto

No ``*_pb2_grpc.py`` is generated: the client calls the two methods through
``grpc.aio.Channel.unary_unary`` directly. The generated module requires a protobuf runtime of at
least the version stamped in it. This ``__init__`` imports nothing, so importing the package does
not load protobuf.
"""
