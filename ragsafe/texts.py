"""Input checks every embedder shares; kept free of torch so BM25 and the index load in a blink."""

from __future__ import annotations

from collections.abc import Sequence


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
