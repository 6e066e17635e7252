"""Run user-supplied code in a separate, limited process.

`parent` starts and supervises the child and parses its JSON reply; `child` is the script
that runs in the child process (started by path, so it never imports torch unless asked);
`fences` and `seccomp` hold the kernel protections it applies; `slots` caps how many run.
"""

from gradviz.check.sandbox.parent import (
    DISABLE_ENV_VAR,
    ISOLATION_ENV_VAR,
    KINDS,
    MAX_SANDBOXES_ENV_VAR,
    TASKS,
    USER_CODE_FILENAME,
    Limits,
    Protection,
    SandboxResult,
    UserCodeDisabled,
    isolation_required,
    keep_spare,
    probe_protections,
    run_sandboxed,
    user_code_enabled,
)

__all__ = [
    "DISABLE_ENV_VAR",
    "ISOLATION_ENV_VAR",
    "KINDS",
    "Limits",
    "MAX_SANDBOXES_ENV_VAR",
    "Protection",
    "SandboxResult",
    "TASKS",
    "USER_CODE_FILENAME",
    "UserCodeDisabled",
    "isolation_required",
    "keep_spare",
    "probe_protections",
    "run_sandboxed",
    "user_code_enabled",
]
