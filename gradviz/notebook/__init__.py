"""gradviz in Jupyter (and VS Code, Colab): the explorer and the backward stepper as widgets.

Built on anywidget, an optional dependency: `import gradviz` works without it, and calling
`widget` or `step_widget` without it raises `NotebookMissing` saying what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradviz.errors import GradvizError

if TYPE_CHECKING:
    from gradviz.notebook.step_widget import StepWidget
    from gradviz.notebook.widget import GraphWidget

__all__ = ["NotebookMissing", "step_widget", "widget"]


class NotebookMissing(GradvizError, ImportError):
    """The notebook widgets need anywidget (and ipywidgets), which are not installed."""


def _require() -> None:
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError as exc:
        raise NotebookMissing(
            f"gradviz's notebook widgets need anywidget and ipywidgets ({exc.name} is missing): "
            "run `pip install gradviz-explorer[notebook]` (or `pip install anywidget`) and restart "
            "the kernel"
        ) from exc


def widget(output_or_model: Any, *args: Any, **kwargs: Any) -> GraphWidget:
    """The interactive autograd graph in a notebook; see `gradviz.notebook.widget.widget`."""
    _require()
    from gradviz.notebook.widget import widget as make

    return make(output_or_model, *args, **kwargs)


def step_widget(loss: Any, *args: Any, **kwargs: Any) -> StepWidget:
    """Step through backward in a notebook; see `gradviz.notebook.step_widget.step_widget`."""
    _require()
    from gradviz.notebook.step_widget import step_widget as make

    return make(loss, *args, **kwargs)
