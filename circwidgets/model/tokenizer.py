"""Tokenizer glue: one wrapper over a `tokenizers.Tokenizer` (what the shipped models use,
and what every Hugging Face fast tokenizer carries inside)."""

from __future__ import annotations


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
        """The text of each token on its own (byte-level tokens decoded to characters)."""
        return [self.backend.decode([i], skip_special_tokens=False) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)
