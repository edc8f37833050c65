"""The data gate: the one path by which dataset bytes enter buildenv (see `gate.gate`).

`gate` opens reads; `scope` is what every reader needs from it; `reader` is what every reader
does alike (open, placed errors, verification, the audit); `dataset_read`, `partitioned_read`
and `file_read` are the readers; `pinned` fixes the bytes being read;
`formats` decodes them; `privacy` keeps restricted values out of messages; `audit` records
restricted reads; `filters` are `ctx.read`'s row filters; `errors` is what the gate raises.
"""
