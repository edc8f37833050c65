"""`python -m buildenv`: what Pants' sandboxed processes run."""

from .cli import main

main()
