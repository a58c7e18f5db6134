"""`python -m circwidgets.train RECIPE [--steps N] [--out DIR] [--device cpu|cuda] [--data-dir DIR]`

Also `python -m circwidgets.train prepare-data [--data-dir DIR] [--vocab 2048]` to tokenise the
stdlib corpus once (e.g. to carry it to a machine with another Python), and
`python -m circwidgets.train corpus [--data-dir DIR] [--vocab 4096] [--cache DIR] [--split package|file-hash]`
to (re)build the lecture models' code corpus: stdlib + the pinned packages of
`circwidgets/train/corpus_manifest.json`, downloaded with pip into the cache and verified against their sha256
(default runs/data/pycode-bpe4096; `--split file-hash`, the first, unstratified split that the docs'
first-split measurements used: runs/data/pycode-filehash-bpe4096).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import recipes
from .code_corpus import SPLITS
from .trainer import TrainingDivergedError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m circwidgets.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="one of: " + ", ".join(recipes.RECIPES) + ", or prepare-data / corpus")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: the recipe's)")
    p.add_argument("--out", default=None, help="run directory (default runs/RECIPE)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data-dir", default=None, help="prepared stdlib corpus (default runs/data/stdlib-bpeV)")
    p.add_argument("--vocab", type=int, default=None,
                   help=f"prepare-data / corpus: BPE vocabulary size (default {recipes.CODE_VOCAB} / "
                        f"{recipes.PYCODE_VOCAB})")
    p.add_argument("--cache", default=None, help="corpus: where downloaded archives are kept "
                                                 "(default ~/.cache/circwidgets/corpus)")
    p.add_argument("--split", default="package", choices=list(SPLITS),
                   help="corpus: held-out split, stratified by package (default) or the first, unstratified one")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--time-limit", type=float, default=None, help="stop (and save) after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's peak learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--snapshots", type=int, default=None, help="override the number of log-spaced snapshots")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field: model.X, task.X, train.X, init_std, model_seed, split "
                        "(repeatable; JSON values)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar; one log line per evaluation")
    a = p.parse_args(argv)
    if a.recipe == "prepare-data":
        from .corpus import prepare_data_dir

        v = a.vocab or recipes.CODE_VOCAB
        prepare_data_dir(a.data_dir or recipes.default_data_dir(v), v)
        return 0
    if a.recipe == "corpus":
        from .code_corpus import prepare_code_data_dir

        v = a.vocab or recipes.PYCODE_VOCAB
        prepare_code_data_dir(a.data_dir or recipes.default_data_dir(v, "pycode", a.split), v, cache=a.cache,
                              split=a.split)
        return 0
    if a.recipe not in recipes.RECIPES:
        p.error(f"unknown recipe {a.recipe!r}; available: {', '.join(recipes.RECIPES)}")
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
    overrides = {}
    for kv in a.set:
        k, sep, v = kv.partition("=")
        if not sep:
            p.error(f"--set {kv!r}: expected KEY=VALUE")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    try:  # a bad option, data dir or checkpoint fails before the first step: say which, no traceback
        tr = recipes.prepare_run(a.recipe, steps=a.steps, out=a.out, device=a.device, data_dir=a.data_dir,
                                 fresh=a.fresh, time_limit=a.time_limit, progress=not a.no_progress,
                                 threads=a.threads, batch_size=a.batch_size, lr=a.lr, n_snapshots=a.snapshots,
                                 overrides=overrides or None)
    except (ValueError, KeyError, FileNotFoundError) as e:
        p.error(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    try:
        tr = recipes.train_and_save(tr, a.recipe)
    except TrainingDivergedError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a full disk or an unwritable --out: every file is written atomically
        print(f"{p.prog}: error: training stopped: {e}; the files already in {tr.out_dir} (the last checkpoint, "
              "snapshots) were left as they were: fix the cause and run the same command again to resume",
              file=sys.stderr)
        return 1
    return 130 if tr.stopped_by == "interrupt" else 0


if __name__ == "__main__":
    sys.exit(main())
