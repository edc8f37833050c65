"""buildenv: compile ML training code against declarative, locked build environments."""

__version__ = "0.1.0"
