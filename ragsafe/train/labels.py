"""A domain pack's labels and the training targets they imply.

A pack tags each source `benign`, `harmful` or something else (e.g. `red-team`: requests of either
kind). The backbone does not always follow its response policy: the default one answered half of
the training set's harmful requests (meth recipes, mustard gas) and refused one benign query in
nine as off-topic. Trained on those answers, the tokens learn both slips, and because the student
regresses to an average answer, a harmful query then lands between a refusal and the harmful
content instead of on the refusal. Where a label says which way the policy goes, the target
follows it:

- a `harmful` query the backbone answered gets the backbone's own most frequent refusal as its answer;
- a `benign` query the backbone refused is left out (its right answer is unknown; a refusal is wrong).
  It stays a negative for the harm probe: it is the over-refusal look-alike the probe's threshold
  must let through.

Every other query (unlabeled pools, red-team openings, a user's own file) keeps the backbone's answer.
The refusal flag is a keyword heuristic; both directions of its errors are harmless here: a missed
refusal to a harmful request is replaced by a refusal, a benign answer mistaken for one is dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Used only when the backbone never refused anything (e.g. SmolLM2): no refusal of its own to reuse.
FALLBACK_REFUSAL = "I'm sorry, but I can't help with that."


def label_of(source: str) -> str:
    """The label of a query's source: packs write it as "label:file"; a user's own file has none."""
    label, sep, _ = source.partition(":")
    return label if sep else ""


def most_common_refusal(responses: Sequence[str], refused: Sequence[bool]) -> str:
    counts = Counter(r.strip() for r, f in zip(responses, refused, strict=True) if f and r.strip())
    return counts.most_common(1)[0][0] if counts else FALLBACK_REFUSAL


@dataclass
class LabelledTargets:
    keep: list[int]  # indices into the inputs, in order
    responses: list[str]  # aligned with keep
    refused: list[bool]  # aligned with keep
    left_out: list[int]  # indices of the benign refusals
    counts: dict[str, int]


def follow_labels(sources: Sequence[str], responses: Sequence[str], refused: Sequence[bool]) -> LabelledTargets:
    """Training answers made to agree with the labels (module docstring)."""
    refusal = most_common_refusal(responses, refused)
    out = LabelledTargets([], [], [], [], {})
    replaced = 0
    for i, (source, response, did_refuse) in enumerate(zip(sources, responses, refused, strict=True)):
        label = label_of(source)
        if label == "benign" and did_refuse:
            out.left_out.append(i)
            continue
        if label == "harmful" and not did_refuse:
            response, did_refuse = refusal, True
            replaced += 1
        out.keep.append(i)
        out.responses.append(response)
        out.refused.append(did_refuse)
    out.counts = {"harmful answers replaced by a refusal": replaced, "benign refusals left out": len(out.left_out)}
    return out
