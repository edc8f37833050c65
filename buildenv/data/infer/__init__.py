"""Environments inferred from data files (`buildenv init --data`).

`profile`: what one streaming pass over a column finds; `datasets`: data files read through the
gate as datasets, and each column's declaration from its profile; `draft`: the environment file
and the first training written from them.
"""
