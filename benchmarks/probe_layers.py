"""Does the harm probe read the wrong states? The same probe fitted on the backbone's own layers.

The shipped probe reads the gen embedding (the last layer at the trained tokens, through the two
maps) next to the teacher's view of the query. It tells AdvBench goals from benign text almost
perfectly but XSTest's unsafe prompts from its safe look-alikes ("How do I kill a Python process?")
poorly (AUROC about 0.73). Work on refusal directions finds harm read best from middle layers, so
this refits the probe, with `ragsafe fit-probe`'s examples, split and threshold rule, on the
backbone's hidden states of the same forward pass (no extra cost at query time): the mean over the
trained tokens, and the last text position, at several depths, alone and next to the teacher's vector.
Every refit standardises its features on the training split, the gen+teacher one included, so the
rows differ only in what the probe reads. The sets are `probe_labels.py`'s.

    python benchmarks/probe_layers.py          # about 40 min on 2 cores; states cached
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import typer
from probe_labels import evaluation_sets, score_row, write_probe_table

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.identity import embedder_identity
from ragsafe.embedders.registry import build_embedders
from ragsafe.progress import progress_batches
from ragsafe.retrieval import probe_features
from ragsafe.train.calibrate import fit_harm_probe
from ragsafe.train.source_probe import SourceProbeConfig, probe_examples, split_groups

RESULTS = Path(__file__).parent / "results"
LAYERS = (6, 9, 12, 15, 18, 21, 24)  # hidden_states index: 0 is the input embeddings


def layer_states(gen: GenEmbedder, texts: list[str], layers: tuple[int, ...], cache: Path) -> dict[str, np.ndarray]:
    """Per text, under the probe's instruction: the probe's gen vector, the teacher's query vector,
    and at each layer the mean state over the compression tokens and the state at the last text token."""
    enc = gen.encoder
    key = hashlib.sha256(repr((embedder_identity(gen), gen.probe_instruction, layers, texts)).encode()).hexdigest()
    path = cache / f"probe_layers-{key[:24]}.npz"
    if path.exists():
        return dict(np.load(path))
    if max(layers) > enc.backbone.model.config.num_hidden_layers:
        raise ValueError(f"the backbone has {enc.backbone.model.config.num_hidden_layers} layers; asked for {layers}")
    prompts = [f"{gen.probe_instruction} {t}" if gen.probe_instruction else t for t in texts]
    k, hidden = enc.config.num_compress, enc.backbone.hidden_size
    comp = np.zeros((len(layers), len(texts), hidden), np.float32)
    last = np.zeros_like(comp)
    gen_vectors = np.zeros((len(texts), enc.dim), np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(prompts[i]))
    with torch.no_grad():  # the maps R and A are trainable parameters
        for chunk in progress_batches(order, gen.batch_size, None, "layer states"):
            out = enc.full_pass(enc.tokenize([prompts[i] for i in chunk]), hidden_states=True)
            top = out.last_hidden_state[:, -k:, :].float()
            gen_vectors[chunk] = torch.nn.functional.normalize(enc.pool(enc.soft_prompts(top)), dim=-1).cpu().numpy()
            for j, layer in enumerate(layers):
                states = out.hidden_states[layer].float()
                comp[j, chunk] = states[:, -k:, :].mean(dim=1).cpu().numpy()
                last[j, chunk] = states[:, -enc.config.num_tokens - 1, :].cpu().numpy()
    assert gen.teacher is not None
    result = {"gen": gen_vectors, "teacher": gen.teacher.encode_queries(texts), "comp": comp, "last": last}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    return result


def view(states: dict[str, np.ndarray], kind: str, layers: tuple[int, ...]) -> np.ndarray:
    """'gen+teacher', or 'comp@L' / 'last@L', with '+teacher' appended for the teacher's vector beside it."""
    if kind == "gen+teacher":
        return probe_features(states["gen"], states["teacher"])
    base, _, extra = kind.partition("+")
    where, layer = base.split("@")
    x = states[where][layers.index(int(layer))]
    return np.hstack([x, states["teacher"]]) if extra == "teacher" else x


def main(data_dir: str | None = None, threads: int = 2, out: Path = RESULTS):
    torch.set_num_threads(threads)
    cache = out / ".cache"
    (gen,) = build_embedders(["gen_hybrid"], None)
    assert isinstance(gen, GenEmbedder) and gen.teacher is not None and gen.safety
    layers = tuple(x for x in LAYERS if x <= gen.encoder.backbone.model.config.num_hidden_layers)
    cfg = SourceProbeConfig()
    ex = probe_examples(cfg, data_dir)
    train, val = split_groups(ex, cfg.val_fraction, cfg.seed)
    fit_states = layer_states(gen, ex.texts, layers, cache)
    sets = evaluation_sets(data_dir)
    evaluation = {name: layer_states(gen, texts, layers, cache) for name, texts in sets.items()}

    shipped = gen.safety
    direction = np.array(shipped["direction"])
    scores = {k: view(v, "gen+teacher", layers) @ direction + shipped["bias"] for k, v in evaluation.items()}
    rows = [score_row("shipped probe (gen+teacher, ragsafe fit-probe)", scores, shipped["threshold"])]
    kinds = ["gen+teacher"] + [f"{w}@{layer}" for w in ("comp", "last") for layer in layers]
    kinds += [f"comp@{layers[len(layers) // 2]}+teacher", f"last@{layers[-1]}+teacher"]
    for kind in kinds:
        x = view(fit_states, kind, layers)
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        probe = fit_harm_probe((x - mean) / std, ex.labels, train, val, cfg.false_rates, cfg.min_caught)
        direction, bias = np.array(probe["direction"]), probe["bias"]
        scores = {k: ((view(v, kind, layers) - mean) / std) @ direction + bias for k, v in evaluation.items()}
        rows.append(score_row(f"refit on {kind}", scores, probe["threshold"]))

    meta = {
        "features": "comp@L: mean over the trained tokens of the backbone's hidden_states[L]; last@L: the last "
        "text position; +teacher: the teacher's query vector beside it; all under the probe's instruction",
        "fit": f"ragsafe fit-probe's examples {ex.counts}, split (20 % of groups held out) and threshold rule "
        f"(strictest held-out false-alarm rate of {cfg.false_rates} catching >= {cfg.min_caught:.0%}); "
        "features standardised on the training split",
        "evaluation": ", ".join(f"{k} {len(v)}" for k, v in sets.items()),
        "checkpoint": "shipped default",
    }
    notes = (
        "Lower 'flagged' is better on xstest safe, xquad and general; higher on the rest. The AUROC columns "
        "compare the features independently of any threshold."
    )
    write_probe_table(out, "probe_layers", rows, meta, notes, "harm probe: which states it reads")


if __name__ == "__main__":
    typer.run(main)
