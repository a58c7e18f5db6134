"""A natural Python code corpus too large for the lecture models to memorise: the standard
library plus the `.py` sources of pinned, permissively licensed packages from the package index.

The pins live in `corpus_manifest.json` beside this module (name, version, licence, wheel file
name and its sha256). `prepare_code_data_dir(dir)` (`python -m circwidgets.train corpus`):

1. fetches each wheel into a cache outside git (`~/.cache/circwidgets/corpus`, or
   `$CIRCWIDGETS_CORPUS_CACHE`) with `pip download`, unless a cached copy has the pinned sha256;
   every archive's sha256 is verified against the manifest (a mismatch is an error);
2. collects the `.py` files (test folders and `test_*.py` excluded, as for the stdlib corpus),
   drops files that are not UTF-8 or look generated (over 1 MB, a line over 5,000 characters,
   mean line length over 100), then deduplicates: exactly (sha256 of the bytes) and by normalised
   text (lines stripped, blank and comment-only lines dropped), keeping the first copy in
   manifest order (stdlib first);
3. splits by file, stratified by package: within each package (the standard library is one), files
   are taken in the order of `sha256(key)` (key = `"<package>/<path in wheel>"`, no version, so a
   version bump moves only the files near the cut) and held out until they hold `HELDOUT_PER_MILLE`
   of 1000 of the package's characters; every package keeps at least one training file. The held-out
   split thus has the training split's mix of packages (an unstratified 2 % hash split drew 18 % of
   its tokens from one package that is 4 % of the training split, and its loss measured that mix).
   `split="file-hash"` rebuilds that first, unstratified split (a file is held out when `sha256(key)`
   falls in the first 20 of 1000 buckets), on which the first code models were trained and the first-split
   measurements of docs/training-data.md were made;
4. trains a byte-level BPE on the training files only and writes the same directory layout as
   `corpus.prepare_data_dir` (train.npy, val.npy, tokenizer.json, manifest.json), so
   `CorpusTask` reads it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..model.io import atomic_write_bytes
from .corpus import EXCLUDED_DIRS, _npy_bytes, stdlib_files, stdlib_root, train_tokenizer
from .tasks import BOS

MANIFEST_PATH = Path(__file__).with_name("corpus_manifest.json")
HELDOUT_PER_MILLE = 30  # 3% of every package's characters
# how the held-out files are chosen, with the per mille each split holds out by default
SPLITS = {"package": HELDOUT_PER_MILLE,  # of every package's characters (the current split)
          "file-hash": 20}  # of the files, by sha256 bucket, unstratified (the first split)
SPLIT_DESCRIPTIONS = {"package": "by file, stratified by package: per mille of each package's characters",
                      "file-hash": "by file, unstratified: files whose sha256(key) bucket (of 1000) is below per mille"}
MAX_FILE_BYTES = 1_000_000
MAX_LINE_CHARS = 5_000
MAX_MEAN_LINE_CHARS = 100
# pip picks the same wheel on any machine: CPython 3.11, manylinux x86_64, or a pure-Python wheel
PIP_TARGET = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any"]


class CorpusIntegrityError(RuntimeError):
    """A downloaded archive whose name or sha256 differs from the pinned manifest."""


def default_cache() -> Path:
    return Path(os.environ.get("CIRCWIDGETS_CORPUS_CACHE", "~/.cache/circwidgets/corpus")).expanduser()


def load_pins(path: str | os.PathLike | None = None) -> dict:
    return json.loads(Path(path or MANIFEST_PATH).read_text())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_archive(path: str | os.PathLike, pin: dict) -> Path:
    """Check that `path` is the pinned file (`pin["filename"]`, `pin["sha256"]`); return it."""
    path = Path(path)
    if path.name != pin["filename"]:
        raise CorpusIntegrityError(f"{pin['name']}: got {path.name}, the manifest pins {pin['filename']}")
    got = sha256_file(path)
    if got != pin["sha256"]:
        raise CorpusIntegrityError(f"{path}: sha256 {got} differs from the manifest's {pin['sha256']}")
    return path


def fetch_archive(pin: dict, cache: str | os.PathLike | None = None) -> Path:
    """The pinned wheel, from the cache when its sha256 matches, else downloaded with pip and verified."""
    cache = Path(cache) if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / pin["filename"]
    if cached.is_file() and sha256_file(cached) == pin["sha256"]:
        return cached
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", *PIP_TARGET,
               "-d", tmp, f"{pin['name']}=={pin['version']}"]
        subprocess.run(cmd, check=True)
        got = sorted(Path(tmp).iterdir())
        if len(got) != 1:
            raise CorpusIntegrityError(f"pip download {pin['name']}=={pin['version']} gave {[p.name for p in got]}")
        verify_archive(got[0], pin)
        os.replace(got[0], cached)
    return cached


def pin_packages(specs: Iterable[tuple[str, str, str]], cache: str | os.PathLike | None = None,
                 path: str | os.PathLike | None = None) -> dict:
    """Write the manifest for `(name, version, licence)` triples from what pip downloads now (run once
    by a maintainer; rebuilds use the written pins)."""
    cache = Path(cache) if cache else default_cache()
    packages = []
    for name, version, licence in specs:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                            *PIP_TARGET, "-d", tmp, f"{name}=={version}"], check=True)
            (whl,) = Path(tmp).iterdir()
            sha = sha256_file(whl)
            os.replace(whl, cache / whl.name)
        packages.append({"name": name, "version": version, "licence": licence, "filename": whl.name, "sha256": sha})
    pins = {"format": "circwidgets-corpus-pins-1", "stdlib_licence": "PSF-2.0", "packages": packages}
    atomic_write_bytes(path or MANIFEST_PATH, (json.dumps(pins, indent=1) + "\n").encode())
    return pins


# ------------------------------------------------------------------------------------ files
def is_excluded(rel: str) -> bool:
    """Test folders, caches and `test_*.py` files are left out (as in the stdlib corpus)."""
    parts = rel.split("/")
    return any(p in EXCLUDED_DIRS for p in parts[:-1]) or parts[-1].startswith("test_") or not rel.endswith(".py")


def wheel_sources(path: str | os.PathLike, package: str) -> Iterator[tuple[str, bytes]]:
    """`(key, raw bytes)` of the `.py` files in a wheel, sorted by path; key = `"<package>/<path>"`."""
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if not is_excluded(name) and ".dist-info/" not in name and ".data/" not in name:
                yield f"{package}/{name}", z.read(name)


def stdlib_sources(root: str | os.PathLike | None = None) -> Iterator[tuple[str, bytes]]:
    root = Path(root) if root else stdlib_root()
    for p in stdlib_files(root):
        yield "stdlib/" + p.relative_to(root).as_posix(), p.read_bytes()


def reject_reason(raw: bytes) -> str | None:
    """Why a file stays out of the corpus (None: it goes in)."""
    if len(raw) > MAX_FILE_BYTES:
        return "too_large"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    lines = text.splitlines() or [""]
    if max(len(x) for x in lines) > MAX_LINE_CHARS or len(text) / len(lines) > MAX_MEAN_LINE_CHARS:
        return "generated"
    if not text.strip():
        return "empty"
    return None


def normalised(text: str) -> str:
    """Text with every line stripped and blank / comment-only lines dropped (for near-duplicate detection)."""
    return "\n".join(s for s in (x.strip() for x in text.splitlines()) if s and not s.startswith("#"))


def dedup_and_filter(files: Iterable[tuple[str, bytes]]) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """Keep the first of exact (byte) and normalised-text duplicates and the files `reject_reason` passes.

    Returns `[(key, text, sha256 of bytes)]` in input order and counts of what was dropped and why."""
    seen_raw: set[str] = set()
    seen_norm: set[str] = set()
    kept, stats = [], {"seen": 0, "exact_duplicate": 0, "near_duplicate": 0}
    for key, raw in files:
        stats["seen"] += 1
        h = hashlib.sha256(raw).hexdigest()
        if h in seen_raw:
            stats["exact_duplicate"] += 1
            continue
        seen_raw.add(h)
        why = reject_reason(raw)
        if why:
            stats[why] = stats.get(why, 0) + 1
            continue
        text = raw.decode("utf-8")
        n = hashlib.sha256(normalised(text).encode()).hexdigest()
        if n in seen_norm:
            stats["near_duplicate"] += 1
            continue
        seen_norm.add(n)
        kept.append((key, text, h))
    return kept, stats


def split_per_mille(split: str, per_mille: int | None = None) -> int:
    """`per_mille`, or `split`'s default (`SPLITS`); an unknown split is a ValueError naming the known ones."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    return SPLITS[split] if per_mille is None else per_mille


def heldout_keys(docs: Iterable[tuple[str, str]], per_mille: int | None = None, split: str = "package"
                 ) -> set[str]:
    """The held-out files of `docs` (`(key, text)` pairs), see the module docstring. `split`: "package"
    (stratified, the default) or "file-hash" (the first split); `per_mille` defaults to `SPLITS[split]`.

    A deterministic function of the set of documents (not of their order)."""
    per_mille = split_per_mille(split, per_mille)
    if split == "file-hash":
        return {key for key, _ in docs
                if int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 1000 < per_mille}
    packages: dict[str, list[tuple[bytes, str, int]]] = {}
    for key, text in docs:
        packages.setdefault(key.split("/", 1)[0], []).append((hashlib.sha256(key.encode()).digest(), key, len(text)))
    held: set[str] = set()
    for files in packages.values():
        files.sort()
        budget, taken = per_mille / 1000 * sum(n for *_, n in files), 0
        for _, key, n in files[:-1]:  # the last file in hash order always trains
            if taken >= budget or per_mille <= 0:
                break
            held.add(key)
            taken += n
    return held


def manifest_split(manifest: dict) -> str:
    """The split a prepared corpus was made with ("package" or "file-hash"); manifests written before the
    split was recorded by name are told apart by the description only the stratified split wrote."""
    if "split" in manifest:
        return manifest["split"]
    return "package" if "heldout_split" in manifest else "file-hash"


def collect_code_corpus(pins: dict | None = None, cache: str | os.PathLike | None = None,
                        stdlib: str | os.PathLike | None = None, verbose: bool = True
                        ) -> tuple[list[tuple[str, str, str]], dict]:
    """All documents `[(key, text, sha256)]` (deduplicated, filtered) and a description of the sources."""
    pins = pins or load_pins()

    def sources() -> Iterator[tuple[str, bytes]]:
        yield from stdlib_sources(stdlib)
        for pin in pins["packages"]:
            path = fetch_archive(pin, cache)
            if verbose:
                print(f"  {pin['filename']} (sha256 ok)", file=sys.stderr)
            yield from wheel_sources(path, pin["name"])

    docs, stats = dedup_and_filter(sources())
    return docs, {"filter": stats}


def prepare_code_data_dir(data_dir: str | os.PathLike, vocab_size: int = 4096, pins: dict | None = None,
                          cache: str | os.PathLike | None = None, stdlib: str | os.PathLike | None = None,
                          verbose: bool = True, heldout_per_mille: int | None = None, split: str = "package"
                          ) -> Path:
    """Fetch, verify, filter, deduplicate, split, tokenise; write `data_dir` (see the module docstring).
    split: "package" (stratified, the default) or "file-hash" (the first split); heldout_per_mille defaults
    to `SPLITS[split]`."""
    heldout_per_mille = split_per_mille(split, heldout_per_mille)
    pins = pins or load_pins()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    docs, info = collect_code_corpus(pins, cache, stdlib, verbose)
    held = heldout_keys(((k, t) for k, t, _ in docs), heldout_per_mille, split)
    train_docs = [d for d in docs if d[0] not in held]
    val_docs = [d for d in docs if d[0] in held]
    overall = hashlib.sha256()
    for key, _, h in docs:
        overall.update(f"{key}\0{h}\n".encode())
    if verbose:
        print(f"{len(docs)} files ({len(train_docs)} train / {len(val_docs)} held out), "
              f"{sum(len(t) for _, t, _ in docs):,} characters; training BPE (vocab {vocab_size}) ...", file=sys.stderr)
    tok = train_tokenizer([t for _, t, _ in train_docs], vocab_size)
    tok_json = tok.to_str()
    splits = {}
    for name, part in (("train", train_docs), ("val", val_docs)):
        ids: list[int] = []
        for e in tok.encode_batch([t for _, t, _ in part], add_special_tokens=False):
            ids.append(BOS)
            ids.extend(e.ids)
        splits[name] = np.asarray(ids, dtype=np.uint16 if vocab_size <= 65536 else np.uint32)
    per_package: dict[str, dict[str, int]] = {}
    for key, text, _ in docs:
        p = per_package.setdefault(key.split("/", 1)[0], {"files": 0, "chars": 0})
        p["files"] += 1
        p["chars"] += len(text)
    manifest = {
        "source": "python-code",
        "python_version": sys.version.split()[0],
        "stdlib_licence": pins.get("stdlib_licence", "PSF-2.0"),
        "packages": [{k: p[k] for k in ("name", "version", "licence", "filename", "sha256")} for p in pins["packages"]],
        "per_package": per_package,
        **info,
        "n_files": len(docs),
        "n_files_split": {"train": len(train_docs), "val": len(val_docs)},
        "n_chars": sum(len(t) for _, t, _ in docs),
        "n_bytes": sum(len(t.encode()) for _, t, _ in docs),
        "corpus_sha256": overall.hexdigest(),
        "heldout_per_mille": heldout_per_mille,
        "split": split,
        "heldout_split": SPLIT_DESCRIPTIONS[split],
        "vocab_size": tok.get_vocab_size(),
        "tokenizer_sha256": hashlib.sha256(tok_json.encode()).hexdigest(),
        "tokenizer_trained_on": "train split",
        "n_tokens": {k: int(len(v)) for k, v in splits.items()},
        "files": [[k, h] for k, _, h in docs],
        "val_files": [k for k, _, _ in val_docs],
    }
    for k, v in splits.items():
        atomic_write_bytes(data_dir / f"{k}.npy", _npy_bytes(v))
    atomic_write_bytes(data_dir / "tokenizer.json", tok_json.encode())
    atomic_write_bytes(data_dir / "manifest.json", json.dumps(manifest, indent=1).encode())  # last: marks done
    if verbose:
        print(f"wrote {data_dir}: {manifest['n_tokens']} tokens", file=sys.stderr)
    return data_dir
