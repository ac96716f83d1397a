"""The multus shim: the CNI plugin a container runtime executes, forwarding to the daemon.

Standard library only, and only its C-level modules: it runs on every pod's start-up path, under
``python -I -S``, possibly copied alone onto a host. Nothing here may import from ``app``.
"""
