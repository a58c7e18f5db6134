"""Tokenizer glue: one wrapper over a `tokenizers.Tokenizer` (what the shipped models use,
and what every Hugging Face fast tokenizer carries inside)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable stand-in character of each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_label(backend, token_id: int) -> str:
    """A readable label for one token id of a `tokenizers.Tokenizer` (the one place views get token text).

    Byte-level BPE tokens are mapped back to their bytes and decoded as UTF-8; bytes that are only
    part of a character (a token that splits a multi-byte character) are shown as escapes, e.g.
    `"\\xe2\\x80"`, never as U+FFFD. Special tokens and other tokenizers' pieces: their decoded text.
    """
    raw = backend.id_to_token(int(token_id))
    if raw is None:
        return f"<{int(token_id)}>"
    table = _byte_level_decoder()
    text = backend.decode([int(token_id)], skip_special_tokens=False)
    if "\ufffd" in text and all(ch in table for ch in raw):
        return bytes(table[ch] for ch in raw).decode("utf-8", errors="backslashreplace")
    return text


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; serialises to its JSON string."""

    def __init__(self, backend):
        self.backend = backend

    @classmethod
    def from_json(cls, s: str, source: str | None = None) -> Tokenizer:
        """From a tokenizer JSON string; `source` (e.g. the file it came from) is named in the error."""
        from tokenizers import Tokenizer as _T

        try:
            return cls(_T.from_str(s))
        except Exception as e:  # noqa: BLE001 - `tokenizers` raises bare Exceptions on bad JSON
            raise ValueError(f"{source or 'tokenizer JSON'}: not a valid tokenizer JSON ({e})") from None

    @classmethod
    def from_file(cls, path) -> Tokenizer:
        """From a `tokenizer.json` file; errors name the file."""
        from pathlib import Path

        return cls.from_json(Path(path).read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def from_any(cls, tok) -> Tokenizer:
        """Accept a circwidgets Tokenizer, a `tokenizers.Tokenizer` or a HF fast tokenizer."""
        if tok is None or isinstance(tok, Tokenizer):
            return tok
        if hasattr(tok, "backend_tokenizer"):  # transformers PreTrainedTokenizerFast
            return cls(tok.backend_tokenizer)
        if hasattr(tok, "encode") and hasattr(tok, "to_str"):
            return cls(tok)
        raise TypeError(f"unsupported tokenizer type {type(tok).__name__}; pass a fast (Rust) tokenizer")

    def to_json(self) -> str:
        return self.backend.to_str()

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: Python allows it in a str, UTF-8 does not
            raise ValueError(f"text is not valid Unicode: {text[e.start]!r} at index {e.start} is a lone surrogate "
                             "(half of a UTF-16 pair); remove it or decode the text with errors='replace'"
                             ) from None
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def id_to_str(self, ids: list[int]) -> list[str]:
        """The label of each token on its own (`token_label`: byte fragments as `\\xNN` escapes)."""
        return [token_label(self.backend, i) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)
