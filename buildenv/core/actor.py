"""Who is acting: recorded in the champion history and the audit log (one rule for both).

`actor()` is a declaration: whoever runs buildenv can set `BUILDENV_ACTOR` (CI systems set
theirs), so it names the person or job responsible, not an authenticated identity. The audit
log also records `os_user()`, the account of the process as the operating system knows it
(from the user id, not from a variable), so a declared actor can be set against who ran it.
"""

from __future__ import annotations

import getpass
import os

__all__ = ["actor", "os_user"]

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


def os_user() -> str:
    """The login name of this process's user id (not `USER`, which anyone can set)."""
    try:
        import pwd  # POSIX only: imported where it is used, so Windows can import this module

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, OSError):
        return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "unknown"
