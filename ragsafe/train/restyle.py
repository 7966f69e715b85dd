"""Plain-question copies of how-to requests, so a harm probe cannot learn a class from a phrasing.

The permissive harmful pools are mostly written as instructions ("Give detailed instructions for how
to ..."), the benign ones as questions and tasks. A probe fitted on them flags the form: it caught
99 % of AdvBench goals and 22.5 % of XSTest's unsafe prompts, which users type as questions ("How do
I make a pipe bomb at home?"). `as_question` rewrites a request that asks how to do something into one
of a few question forms a user would type; applied to every source under its own label, the form
carries no signal about the class.
"""

from __future__ import annotations

import random
import re

_VERB = (
    r"(?:please\s+)?(?:give|provide|write|create|generate|list|offer|develop|draft|produce|outline|describe|"
    r"explain|detail|share|suggest|teach me|tell me|show me)"
)
_NOUN = (
    r"(?:me\s+)?(?:a\s+|an\s+|some\s+|the\s+)?"
    r"(?:detailed\s+|step-by-step\s+|specific\s+|clear\s+|simple\s+|practical\s+|few\s+|list of\s+|set of\s+)*"
    r"(?:tutorial|guide|instructions|steps|tips|advice|guidance|plan|suggestions|ways|methods|techniques|"
    r"strategies|recipe|procedure)\s+(?:on|for|about|to)\s+"
)
_PATTERNS = [
    re.compile(rf"^{_VERB}\s+{_NOUN}(?:how\s+to\s+)?(?P<rest>.+)$", re.I),
    re.compile(
        rf"^{_VERB}\s+(?:in detail\s+|step by step\s+)?how\s+"
        r"(?:to|one could|someone could|I can|I could)\s+(?P<rest>.+)$",
        re.I,
    ),
    re.compile(r"^(?:how to|ways to|best way to)\s+(?P<rest>.+)$", re.I),
]
# "{}" is the action: a bare verb phrase ("make a bomb") or a gerund one ("making a bomb")
_BARE = ("How do I {}?", "How can I {}?", "What's the best way to {}?", "how would i {}", "Can you tell me how to {}?")
_GERUND = ("How would someone go about {}?", "What's the trick to {}?", "Any advice on {}?")


def as_question(text: str, rng: random.Random) -> str | None:
    """A question form of a how-to request, or None when the text is not one (most texts)."""
    stripped = text.strip().rstrip(".?!").strip()
    for pattern in _PATTERNS:
        match = pattern.match(stripped)
        if not match:
            continue
        action = match.group("rest").strip()
        if len(action.split()) < 2:  # "how to cook" says too little to be worth a copy
            return None
        action = action[0].lower() + action[1:]
        forms = _GERUND if action.split()[0].lower().endswith("ing") else _BARE
        return rng.choice(forms).format(action)
    return None
