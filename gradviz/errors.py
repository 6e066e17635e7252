"""Every error gradviz raises on purpose: one base class, a few precise kinds."""

from __future__ import annotations

import os
from typing import Any, ClassVar

__all__ = [
    "ArgumentError",
    "DataError",
    "GradvizError",
    "GraphvizMissing",
    "ModelUnavailable",
    "ProgramError",
    "SpecError",
    "TraceError",
    "UserCodeDisabled",
]


class GradvizError(Exception):
    """Base of every error gradviz raises on purpose."""


class ArgumentError(GradvizError, ValueError):
    """An argument has a value gradviz cannot use; the message names it and the fix."""

    def __init__(self, argument: str, value: Any, fix: str) -> None:
        self.argument = argument
        self.value = value
        self.fix = fix
        super().__init__(f"{argument}={_short(value)}: {fix}")


class SpecError(GradvizError, ValueError):
    """A network spec (layer list) cannot be built; names the layer, the shapes and the fix."""


class TraceError(GradvizError, ValueError):
    """What was passed to trace()/capture() cannot be traced."""


class DataError(GradvizError, ValueError):
    """A data file or array is malformed; names the file/row and what was expected."""


class ProgramError(GradvizError):
    """The user's program could not be loaded or did not produce a tensor."""


class GraphvizMissing(GradvizError):
    """Graphviz's `dot` program is not installed, so SVG/PNG cannot be drawn."""


class ModelUnavailable(GradvizError, RuntimeError):
    """A model's library (torchvision, transformers) is not installed; says how to get it."""


class UserCodeDisabled(GradvizError, RuntimeError):
    """Running user code is switched off for this app (``GRADVIZ_DISABLE_USER_CODE``).

    ``value`` is the setting that switched it off; by default it is read from the
    environment at the time of the error, so the message shows what the app saw.
    """

    env_var: ClassVar[str] = "GRADVIZ_DISABLE_USER_CODE"

    def __init__(self, value: str | None = None) -> None:
        self.value = os.environ.get(self.env_var, "") if value is None else value
        super().__init__(
            f"Running user code is turned off ({self.env_var}={self.value!r}). To enable "
            f"it, restart the app without {self.env_var} or with {self.env_var}=0."
        )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
