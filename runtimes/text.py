"""Text in a request → token ids and attention masks, with the Bento's own tokenizer.json.

`tokenizers` (Hugging Face's Rust tokenizer, one small wheel) is imported on first use, so only Bentos
that declare a text input load it. The tokenizer file is one of the Bento's hashed, signed files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RequestInput

# Refused before tokenizing: a string this many characters per allowed token cannot be meant.
_CHARS_PER_TOKEN_BOUND = 64


class TextEncoder:
    """One declared text input: strings → {ids: [N, max_length] int64, mask: [N, max_length] int64}.

    Always padded to max_length: one shape for every request, so requests stack into shared batches and
    models exported with a fixed sequence axis take them."""

    def __init__(self, bento_dir: Path, spec: RequestInput):
        from tokenizers import Tokenizer

        self.spec = spec
        assert spec.tokenizer is not None
        self.tokenizer = Tokenizer.from_file(str(Path(bento_dir) / spec.tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()  # truncation (or refusal) is ours, so it can be declared

    def encode(self, value: Any, field: str) -> dict[str, np.ndarray]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{field}: send a string or a non-empty list of strings")
        limit = self.spec.max_length * _CHARS_PER_TOKEN_BOUND
        for i, text in enumerate(texts):
            where = field if len(texts) == 1 else f"{field}[{i}]"
            if not text.strip():
                raise InputError(f"{where}: the text is empty")
            if len(text) > limit:
                raise PayloadTooLarge(f"{where}: {len(text)} characters, over the {limit} this input reads "
                                      f"(max_length {self.spec.max_length} tokens)")
        encodings = self.tokenizer.encode_batch(texts)
        longest = self.spec.max_length
        for i, encoding in enumerate(encodings):
            if len(encoding.ids) > self.spec.max_length and self.spec.truncation == "refuse":
                where = field if len(texts) == 1 else f"{field}[{i}]"
                raise InputError(f"{where}: {len(encoding.ids)} tokens, over max_length {self.spec.max_length} "
                                 "(truncation: refuse): send shorter text")
        ids = np.zeros((len(texts), longest), dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            kept = encoding.ids[:self.spec.max_length]
            ids[row, :len(kept)] = kept
            mask[row, :len(kept)] = 1
        feeds = {self.spec.ids: ids}
        if self.spec.mask:
            feeds[self.spec.mask] = mask
        return feeds
