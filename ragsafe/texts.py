"""Input checks every embedder shares; kept free of torch so BM25 and the index load in a blink."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any


def check_texts(texts: Sequence[str] | str) -> list[str]:
    """Validate user input early, with the offending index, instead of failing deep inside torch.

    A single string is taken as one text (the result still has one row per text).
    """
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise TypeError(f"Expected a list of strings, got {type(texts).__name__}.")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str.")
    return out


def warn_if_cut(tokenizer: Any, texts: list[str], limit: int, window: str) -> bool:
    """Warn when passages run past a model's window (`window` names it, e.g. "the teacher's 256 tokens"):
    their ends would go unembedded, unseen. Returns whether it warned, so callers can say it once."""
    counted = tokenizer(texts, add_special_tokens=True, verbose=False)  # counting, not encoding
    cut = sum(len(ids) > limit for ids in counted["input_ids"])
    if cut:
        warnings.warn(
            f"{cut} of {len(texts)} passages are longer than {window} and lose their ends; shorter chunks "
            "(--chunk-words, or your splitter's chunk size) keep them whole.",
            stacklevel=4,  # past this helper and the embedder's encode_documents: the caller's line
        )
    return bool(cut)
