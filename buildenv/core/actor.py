"""Who is acting: recorded in the champion history and the audit log (one rule for both)."""

from __future__ import annotations

import getpass
import os

__all__ = ["actor"]

_VARIABLES = ("BUILDENV_ACTOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "USER")


def actor() -> str:
    """`BUILDENV_ACTOR`, else the CI's user (GitHub, GitLab), else the login name."""
    for var in _VARIABLES:
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
