"""Tokenizer glue: one wrapper over a `tokenizers.Tokenizer` (what the shipped models use,
and what every Hugging Face fast tokenizer carries inside)."""

from __future__ import annotations


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; serialises to its JSON string."""

    def __init__(self, backend):
        self.backend = backend

    @classmethod
    def from_json(cls, s: str) -> Tokenizer:
        from tokenizers import Tokenizer as _T

        return cls(_T.from_str(s))

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
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def id_to_str(self, ids: list[int]) -> list[str]:
        """The text of each token on its own (byte-level tokens decoded to characters)."""
        return [self.backend.decode([i], skip_special_tokens=False) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)
