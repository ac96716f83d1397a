"""The CNI protocol as a library: find and execute plugins, thread configs and results, convert versions.

Belongs here: what the CNI specification (and its Go reference library, libcni) define: environment,
stdin configuration injection, plugin chains, result formats, error objects. Public verbs live in
``app.cni.api`` (``add_network_list``, ``del_network_list``, ...). Never imports Kubernetes, SQL or
netlink code and holds no state between calls: the caller (``app.attach``) owns policy and durability.
"""
