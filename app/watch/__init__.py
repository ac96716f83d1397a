"""Kubernetes watchers: mirror this node's pods and the NetworkAttachmentDefinitions into the store.

The only package that imports kubernetes_asyncio. Writes the mirror; never calls ``app.attach``.
"""
