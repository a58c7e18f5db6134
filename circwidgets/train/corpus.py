"""Real text that exists on every machine: the Python standard library's own `.py` sources.

`prepare_data_dir(dir, vocab_size)` collects the files (sorted, test folders and site-packages
excluded), records the file list with a sha256 of every file and of the whole list, trains a
byte-level BPE with the `tokenizers` package and writes:

    dir/manifest.json     python version, root, files [[relative path, sha256]], corpus sha256,
                          token counts, tokenizer sha256
    dir/tokenizer.json    the tokenizer (`tokenizers` JSON; id 0 = "<|endoftext|>" = BOS)
    dir/train.npy         uint16 token ids, documents joined with BOS
    dir/val.npy           the same for the held-out files (every 50th file)

`CorpusTask` reads a prepared directory with numpy only (no `tokenizers` needed), so a machine
with a different Python can train on exactly the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model.io import atomic_write_bytes
from .tasks import BOS, Task, step_generator

BOS_TEXT = "<|endoftext|>"
EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
VAL_EVERY = 50  # every 50th file (by sorted position) is held out


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The stdlib's `.py` files, sorted by relative path, without test folders or site-packages."""
    root = Path(root) if root else stdlib_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
        for f in filenames:
            if f.endswith(".py") and not f.startswith("test_"):
                files.append(Path(dirpath, f))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def collect_stdlib(root: str | os.PathLike | None = None) -> tuple[list[str], dict]:
    """Texts of the stdlib files and a manifest (file list, per-file and overall sha256)."""
    root = Path(root) if root else stdlib_root()
    texts, entries = [], []
    overall = hashlib.sha256()
    for p in stdlib_files(root):
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a handful of files use other encodings; skipping keeps the corpus plain UTF-8
        rel = p.relative_to(root).as_posix()
        h = hashlib.sha256(raw).hexdigest()
        overall.update(f"{rel}\0{h}\n".encode())
        texts.append(text)
        entries.append([rel, h])
    manifest = {
        "source": "python-stdlib",
        "python_version": sys.version.split()[0],
        "root": str(root),
        "n_files": len(entries),
        "n_chars": sum(len(t) for t in texts),
        "corpus_sha256": overall.hexdigest(),
        "files": entries,
    }
    return texts, manifest


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (`tokenizers`) with id 0 = `<|endoftext|>`; no added spaces or specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(BOS_TEXT) == BOS
    return tok


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def prepare_data_dir(data_dir: str | os.PathLike, vocab_size: int = 2048, root: str | os.PathLike | None = None,
                     verbose: bool = True) -> Path:
    """Collect, tokenise and write the stdlib corpus into `data_dir` (see the module docstring)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"collecting the stdlib sources under {root or stdlib_root()} ...", file=sys.stderr)
    texts, manifest = collect_stdlib(root)
    if verbose:
        print(f"{manifest['n_files']} files, {manifest['n_chars']:,} characters; training BPE (vocab {vocab_size}) ...",
              file=sys.stderr)
    tok = train_tokenizer(texts, vocab_size)
    tok_json = tok.to_str()
    encs = tok.encode_batch(texts, add_special_tokens=False)
    splits: dict[str, list[int]] = {"train": [], "val": []}
    for i, e in enumerate(encs):
        s = splits["val" if i % VAL_EVERY == VAL_EVERY // 2 else "train"]
        s.append(BOS)
        s.extend(e.ids)
    manifest.update(
        vocab_size=tok.get_vocab_size(),
        tokenizer_sha256=hashlib.sha256(tok_json.encode()).hexdigest(),
        n_tokens={k: len(v) for k, v in splits.items()},
        val_every=VAL_EVERY,
    )
    for k, v in splits.items():
        atomic_write_bytes(data_dir / f"{k}.npy", _npy_bytes(np.asarray(v, dtype=np.uint16)))
    atomic_write_bytes(data_dir / "tokenizer.json", tok_json.encode())
    # manifest last: its presence marks a complete directory
    atomic_write_bytes(data_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    if verbose:
        print(f"wrote {data_dir}: {manifest['n_tokens']} tokens", file=sys.stderr)
    return data_dir


def load_manifest(data_dir: str | os.PathLike) -> dict:
    p = Path(data_dir) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared corpus directory (no manifest.json)")
    try:
        m = json.loads(p.read_text())
    except (ValueError, OSError) as e:
        raise ValueError(f"{p}: not a readable corpus manifest ({e}); prepare the data dir again "
                         "(`python -m circwidgets.train prepare-data` / `corpus --data-dir DIR`)") from e
    if not isinstance(m, dict) or "vocab_size" not in m:
        raise ValueError(f"{p}: not a corpus manifest (no vocab_size); prepare the data dir again")
    return m


def ensure_data_dir(data_dir: str | os.PathLike, vocab_size: int, corpus: str = "stdlib", split: str = "package"
                    ) -> Path:
    """Return `data_dir`, preparing it first when it has no manifest; check the vocabulary size and, for the
    package corpus, the held-out split (a recipe trained on one split must not silently read the other).

    corpus: "stdlib" (this module) or "pycode" (`code_corpus`: stdlib + pinned packages); split: the package
    corpus's held-out split, "package" or "file-hash" (`code_corpus.SPLITS`)."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir}: is a file, not a corpus directory")
    if not (data_dir / "manifest.json").is_file():
        if corpus == "pycode":
            from .code_corpus import prepare_code_data_dir

            prepare_code_data_dir(data_dir, vocab_size, split=split)
        else:
            prepare_data_dir(data_dir, vocab_size)
    m = load_manifest(data_dir)
    if m["vocab_size"] != vocab_size:
        raise ValueError(f"{data_dir} holds a corpus with vocab {m['vocab_size']}, the recipe needs {vocab_size}")
    if corpus == "pycode":
        from .code_corpus import manifest_split

        have = manifest_split(m)
        if have != split:
            raise ValueError(f"{data_dir} holds the code corpus with the {have!r} held-out split, the recipe "
                             f"trains on the {split!r} split: build it with `python -m circwidgets.train corpus "
                             f"--split {split} --data-dir DIR` (or pass `--set split={have}` to train on this one)")
    return data_dir


def corpus_summary(manifest: dict) -> dict:
    """What a model file records about its data: everything but the per-file hashes (for the
    package corpus, the pinned packages instead of its thousands of file names)."""
    out = {
        "source": manifest["source"], "python_version": manifest["python_version"],
        "n_files": manifest["n_files"], "n_chars": manifest["n_chars"],
        "corpus_sha256": manifest["corpus_sha256"], "tokenizer_sha256": manifest["tokenizer_sha256"],
        "vocab_size": manifest["vocab_size"], "n_tokens": manifest["n_tokens"],
    }
    if "packages" in manifest:
        out["packages"] = [{k: p[k] for k in ("name", "version", "licence", "sha256")} for p in manifest["packages"]]
        from .code_corpus import manifest_split

        out["heldout_per_mille"] = manifest["heldout_per_mille"]
        out["split"] = manifest_split(manifest)
    else:
        out["files"] = [f for f, _ in manifest["files"]]
    return out


@dataclass
class CorpusTask(Task):
    """Random windows of a prepared corpus: `[BOS] + tokens[o : o + n_ctx - 1]`.

    Augmentation (training split only; documented in the model card): in a fraction `repeat_frac`
    of the training windows a stretch of the window's own code (length ~ U[repeat_min, repeat_max],
    default max (n_ctx - 1) // 2) is copied to a random later place, overwriting what was there:
    "... A B C ... A B C ...", the pattern induction heads exploit, made frequent. Plain stdlib
    text on its own (4M tokens, seen many times over) let a 2-layer model memorise before any
    induction head formed.
    """

    data_dir: str = ""
    repeat_frac: float = 0.0
    repeat_min: int = 8
    repeat_max: int | None = None
    repeat_mode: str = "one"  # "one": one copied stretch per chosen window; "many": copies all along it
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)

    def tokens(self, split: str = "train") -> np.ndarray:
        if split not in self._arrays:
            p = Path(self.data_dir) / f"{split}.npy"
            try:
                a = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as e:  # missing, truncated, not an array: a ValueError naming the file
                raise ValueError(f"{p}: cannot read the corpus's {split} tokens ({e}); prepare the data dir again "
                                 "(`python -m circwidgets.train prepare-data` / `corpus --data-dir DIR`)") from e
            if a.ndim != 1 or a.dtype.kind not in "iu" or len(a) < self.n_ctx:
                raise ValueError(f"{p}: not a corpus token array (need >= {self.n_ctx} integer token ids in one "
                                 f"dimension, got shape {a.shape} {a.dtype}); prepare the data dir again")
            self._arrays[split] = a
        return self._arrays[split]

    def tokenizer_json(self) -> str:
        return (Path(self.data_dir) / "tokenizer.json").read_text()

    def manifest(self) -> dict:
        return load_manifest(self.data_dir)

    def batch(self, batch_size: int, seed: int, step: int, split: str = "train") -> torch.Tensor:
        data = self.tokens(split)
        g = step_generator(seed, step, stream=0 if split == "train" else 1)
        w = self.n_ctx - 1
        offs = torch.randint(len(data) - w, (batch_size,), generator=g).numpy()
        idx = offs[:, None] + np.arange(w)[None]
        out = torch.empty(batch_size, self.n_ctx, dtype=torch.long)
        out[:, 0] = BOS
        out[:, 1:] = torch.from_numpy(data[idx].astype(np.int64))
        if split == "train" and self.repeat_frac > 0:
            self._plant_repeats(out, g)
        return out

    def _plant_repeats(self, out: torch.Tensor, g: torch.Generator) -> None:
        if self.repeat_mode == "many":
            return self._plant_many(out, g)
        n = self.n_ctx
        hi = self.repeat_max or (n - 1) // 2
        lo = min(self.repeat_min, hi)
        rows = (torch.rand(out.shape[0], generator=g) < self.repeat_frac).nonzero()[:, 0].tolist()
        lens = torch.randint(lo, hi + 1, (out.shape[0],), generator=g).tolist()
        u = torch.rand(out.shape[0], 2, generator=g).tolist()
        for b in rows:
            r = lens[b]
            s = 1 + int(u[b][0] * (n - 2 * r))  # first copy in [1, n - 2r]
            t = s + r + int(u[b][1] * (n - s - 2 * r + 1))  # second copy starts in [s + r, n - r]
            out[b, t:t + r] = out[b, s:s + r].clone()

    def _plant_many(self, out: torch.Tensor, g: torch.Generator) -> None:
        """In each chosen window, walk left to right: with probability 1/2 copy a random earlier
        stretch of the window here (length ~ U[repeat_min, repeat_max], source start uniform over the
        past, so no typical look-back distance), else keep a run of the window's own code."""
        n = self.n_ctx
        hi = self.repeat_max or n // 8
        lo = min(self.repeat_min, hi)
        rows = (torch.rand(out.shape[0], generator=g) < self.repeat_frac).nonzero()[:, 0].tolist()
        lens = torch.randint(lo, hi + 1, (out.shape[0], n), generator=g).tolist()
        u = torch.rand(out.shape[0], n, 3, generator=g).tolist()
        for b in rows:
            pos = 1 + hi
            for d in range(n):
                if pos >= n:
                    break
                r = lens[b][d]
                if u[b][d][0] < 0.5 and pos - 1 >= r:
                    src = 1 + int(u[b][d][1] * (pos - r))
                    r = min(r, n - pos)
                    out[b, pos:pos + r] = out[b, src:src + r].clone()
                    pos += r
                else:
                    pos += 1 + int(u[b][d][2] * hi)

    def describe(self) -> dict:
        return {"task": "CorpusTask", "d_vocab": self.d_vocab, "n_ctx": self.n_ctx,
                "repeat_frac": self.repeat_frac, "repeat_min": self.repeat_min, "repeat_max": self.repeat_max,
                "repeat_mode": self.repeat_mode,
                "data": corpus_summary(self.manifest())}
