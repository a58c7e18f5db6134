"""Bundling for the Widgets-II views: `js/common.js`, then `js/panels.js` (heatmap, pattern panel,
bar chart), then the view's own module, as one ESM string (anywidget loads one string, so the
relative imports are removed); CSS likewise. The views subclass `Widget2` instead of
`CircuitWidget` to get this; everything else is the shared base."""

from __future__ import annotations

import re
from pathlib import Path

from .base import JS_DIR, CircuitWidget

_IMPORT_LOCAL = re.compile(r"^import\s*\{[^}]*\}\s*from\s*[\"']\./(common|panels)\.js[\"'];?\s*$", re.M)
SHARED = ("common", "panels")


def bundle_js2(module_file: str) -> str:
    parts = []
    for name in SHARED:
        text = (JS_DIR / f"{name}.js").read_text(encoding="utf-8")
        parts.append(f"// ---- {name}.js\n{_IMPORT_LOCAL.sub('', text)}")
    body = _IMPORT_LOCAL.sub("", (JS_DIR / module_file).read_text(encoding="utf-8"))
    parts.append(f"// ---- {module_file}\n{body}")
    return "\n".join(parts)


def bundle_css2(module_file: str) -> str:
    files = [JS_DIR / f"{n}.css" for n in SHARED] + [JS_DIR / (Path(module_file).stem + ".css")]
    return "\n".join(f.read_text(encoding="utf-8") for f in files if f.exists())


class Widget2(CircuitWidget):
    """`CircuitWidget` with the Widgets-II front-end bundle (common.js + panels.js + module)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_module_file"):
            cls._esm = bundle_js2(cls._module_file)
            cls._css = bundle_css2(cls._module_file)
