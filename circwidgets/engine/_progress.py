"""Progress bars of long engine loops (`tqdm.auto`), and a switch that turns them all off.

`quiet_progress()` is used where a bar left in a notebook's output would only be noise (the offline
export replays many requests: `widgets.export.save_html`). A context variable, so it holds for the
calling thread / task only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("circwidgets_quiet_progress", default=False)


def tqdm(*args: Any, **kwargs: Any):
    """`tqdm.auto.tqdm(*args, **kwargs)`, disabled inside `quiet_progress()`."""
    from tqdm.auto import tqdm as _tqdm

    if _QUIET.get():
        kwargs["disable"] = True
    return _tqdm(*args, **kwargs)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Inside: no engine progress bar is shown."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)
