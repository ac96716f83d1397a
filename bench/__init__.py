"""Benchmarks of multus-py. ``python -m bench --help`` (or ``./dev.sh bench``) lists them.

They print figures; they assert nothing. Tests never time anything.
"""
