"""`python -m circwidgets.zoo --check [NAME ...]`: recompute the model cards' claims (exit 1 on failure).
`python -m circwidgets.zoo --list`: the shipped models and their cards.
`python -m circwidgets.zoo --build NAME --run RUN_DIR [--data-dir DIR]`: ship a finished training run.
`python -m circwidgets.zoo --restate NAME [--notes TEXT]`: measure a shipped model's claims again as the
claim specifications now state them (no training run needed) and rewrite its card.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from . import card
    from . import list as zoo_list

    p = argparse.ArgumentParser(prog="python -m circwidgets.zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", nargs="*", metavar="NAME", help="check these models' claims (default: all)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--build", metavar="NAME")
    p.add_argument("--run", help="--build: the training run directory")
    p.add_argument("--data-dir", help="--build: the prepared corpus (code models)")
    p.add_argument("--device-note", help="--build: where it was trained, if the run did not record it")
    p.add_argument("--command", help="--build: the command that trained it")
    p.add_argument("--restate", metavar="NAME")
    p.add_argument("--notes", default=None)
    p.add_argument("--snapshots", default="", help="--build: comma-separated snapshot steps to ship")
    a = p.parse_args(argv)
    if a.build:
        from .build import build

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", a.build) or ".." in a.build:
            p.error(f"--build {a.build!r}: a model name is letters, digits, '.', '_' and '-' (e.g. toy-2l-induction)")
        if not a.run:
            p.error("--build needs --run RUN_DIR")
        if not (Path(a.run) / "model.safetensors").is_file():
            p.error(f"--run {a.run}: not a finished training run directory (it has no model.safetensors)")
        try:
            steps = [int(x) for x in a.snapshots.split(",") if x.strip()]
        except ValueError:
            p.error(f"--snapshots {a.snapshots!r}: expected comma-separated snapshot steps, e.g. 0,200,1000")
        c = build(a.build, a.run, a.data_dir, a.device_note, a.command, a.notes or "", steps or None)
        print(c.to_markdown())
        return 0
    if a.restate:
        from .build import restate

        if a.restate not in zoo_list():
            p.error(f"--restate {a.restate!r}: no shipped model of that name; available: {', '.join(zoo_list())}")

        print(restate(a.restate, a.notes).to_markdown())
        return 0
    if a.list:
        for n in zoo_list():
            print(card(n).to_markdown(), end="\n\n")
        return 0
    if a.check is not None:
        from .build import ClaimFailed, check

        names = a.check or zoo_list()
        if not names:
            print("no shipped models found", file=sys.stderr)
            return 1
        failed = []
        t0 = time.perf_counter()
        for n in names:
            try:
                check(n)
            except ClaimFailed as e:
                failed.append(str(e))
            except KeyError as e:
                failed.append(str(e))
        print(f"checked {len(names)} model(s) in {time.perf_counter() - t0:.1f} s")
        if failed:
            print("CLAIMS FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
            return 1
        print("all claims hold")
        return 0
    p.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
