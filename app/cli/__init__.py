"""Operator and node-setup commands: ``multusctl`` (queries, GC) and ``multus-install`` (the
DaemonSet's init step: shim and conf onto the host). Heavy imports stay lazy so they start fast."""
