"""Run user-supplied code in a separate, limited process.

`parent` starts and supervises the child and parses its JSON reply; `child` is the script
that runs in the child process (started by path, so it never imports torch unless asked).
"""

from gradviz.check.sandbox.parent import (
    DISABLE_ENV_VAR,
    KINDS,
    TASKS,
    USER_CODE_FILENAME,
    Limits,
    SandboxResult,
    UserCodeDisabled,
    run_sandboxed,
    user_code_enabled,
)

__all__ = [
    "DISABLE_ENV_VAR",
    "KINDS",
    "Limits",
    "SandboxResult",
    "TASKS",
    "USER_CODE_FILENAME",
    "UserCodeDisabled",
    "run_sandboxed",
    "user_code_enabled",
]
