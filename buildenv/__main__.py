"""`python -m buildenv`: what Pants' sandboxed processes run."""

from .cli import run

run()
