"""Kubernetes watchers: mirror this node's pods and the NetworkAttachmentDefinitions into the store.

The only package that imports kubernetes_asyncio, and only once a cluster is configured
(``client.connect``), so static mode never pays for it. Writes the mirror; never calls
``app.attach``: it implements ``app.attach.cluster``'s protocols, and the daemon wires them.

Modules, highest first: ``watchers`` (the object the daemon creates and runs) → ``watching``
(the watch loops), ``sources`` (PodSource, NadSource), ``status`` (StatusPublisher, NetworkEvents),
``nodedevices`` (DeviceSource: ``podresources`` (kubelet gRPC), ``kubeletcheckpoint`` (its device
checkpoint file), ``dra`` (ResourceClaims and ResourceSlices)) → ``mirroring`` (writes to the
mirror), ``podevents`` (AddedInterface and NoNetworkFound events) → ``api`` (raw JSON requests),
``client`` (finding the cluster), ``resources`` (targets, records, watch events), ``readiness``,
``arrivals``, ``backoff``, ``errors``, ``settings``.
"""
