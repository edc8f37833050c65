"""Toolchains: the locked Python environment each training runs in.

A training declares the libraries it imports (`requirements`, default: its environment's
`serving.requirements`); buildenv adds what its own runner imports, resolves the set once
with uv into a hashed lock, and installs that lock into a content-addressed environment that
every training with the same lock shares. The lock is known before anything runs, so it is
part of the build's cache key, and its versions are checked against the serving stack.
"""
