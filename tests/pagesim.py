"""Acting as the page in-process: a comm `update` message, through the widget's PageInputs gate."""

from __future__ import annotations

from typing import Any


def page(w: Any, **state: Any) -> None:
    """Apply `state` as the page's comm `update` would (`w._handle_msg`: the PageInputs gate, no kernel)."""
    w._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})
