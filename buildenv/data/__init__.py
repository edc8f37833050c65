"""The data room: where dataset bytes live, how they are pinned, read and checked.

Layers, each importing only those before it: `storage` and `executor` (where bytes live, where
per-file work runs) -> `lock/` (content digests, manifests, the lock file, locking, staleness)
-> `gate/` (the one verified, typed, private, audited path by which bytes enter buildenv) ->
`validate/` (columns against their declarations) and `evaluation` (the held-out rows).
"""
