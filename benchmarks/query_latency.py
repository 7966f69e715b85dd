"""Query latency at batch 1: gen, gen_hybrid and HyDE on this machine's device (CPU or CUDA).

gen reads the predicted answer off one forward pass; HyDE writes the answer token by token and then
embeds it, so its cost grows with the answer's length. It runs at each cap in --hyde-caps: 48 new
tokens, what harmful_retrieval's HyDE writes by default, and 512, room for the backbone's whole answer
(the cap used for training answers in the paper is 500). How far apart they are also depends on the
hardware, so this runs wherever torch finds a device:

    python benchmarks/query_latency.py                 # installed weights -> results/query_latency_<device>.*
    python benchmarks/query_latency.py --export-architecture arch/     # configs + tokenizers, no weights
    python benchmarks/query_latency.py --architecture arch/ --replay benchmarks/results/query_latency_cpu.json

The last form is for a machine the weights cannot reach (an accelerator lent without the model
packages): backbone and teacher are built from their configs with random weights. A forward pass
costs the same whatever the weight values, but the answers would differ, so there HyDE generates, per
query, exactly the number of tokens the real backbone generated in the replayed run, on the same
queries (the replayed file holds both).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import typer

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder, resolve_teacher_path
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import xquad_queries
from ragsafe.model.backbone import Backbone, default_dtype, load_backbone, quantize_int8
from ragsafe.model.chat import GenerationSettings, chat_generate_ids
from ragsafe.model.gen_encoder import GenConfig, GenEncoder

RESULTS = Path(__file__).parent / "results"


def write_architecture(backbone: Backbone, teacher_spec: str, out: Path) -> None:
    """Everything but the weights: the backbone's config and tokenizer, the teacher's folder minus its weights."""
    (out / "backbone").mkdir(parents=True, exist_ok=True)
    backbone.model.config.save_pretrained(out / "backbone")
    backbone.model.generation_config.save_pretrained(out / "backbone")
    backbone.tokenizer.save_pretrained(out / "backbone")
    (out / "backbone" / "name.txt").write_text(backbone.name)
    shutil.copytree(
        resolve_teacher_path(teacher_spec),
        out / "teacher",
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "README.md"),
        dirs_exist_ok=True,
    )


def random_backbone(arch: Path, seed: int = 1) -> Backbone:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(arch / "backbone")
    # its own seed: drawn from the global generator, the weights could repeat those of a model built
    # right after the same global seed (the test suite's tiny backbone is seed 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=default_dtype()).eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    name = (arch / "backbone" / "name.txt").read_text().strip() + " (random weights)"
    return Backbone.from_model(name, model, AutoTokenizer.from_pretrained(arch / "backbone"))


def random_teacher(arch: Path, work: Path) -> TeacherEmbedder:
    """The teacher's folder with freshly initialised transformer weights written in."""
    from transformers import AutoConfig, AutoModel

    folder = work / "teacher"
    shutil.copytree(arch / "teacher", folder)
    AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    return TeacherEmbedder(str(folder))


def timed(fn: Callable[[str], object], queries: list[str], warmup: int = 2) -> list[float]:
    for query in queries[:warmup]:
        fn(query)
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append(time.perf_counter() - start)
    return times


def main(
    backbone: str = "default",
    teacher: str = "minilm",
    data_dir: str | None = None,
    queries: int = 20,
    hyde_caps: str = "48,512",
    threads: int = 2,
    architecture: Path | None = None,
    replay: Path | None = None,
    export_architecture: Path | None = None,
    int8: bool = True,
    out: Path = RESULTS,
) -> None:
    """int8 (a CPU with float32 weights): after the float runs, gen, gen_hybrid and the shorter HyDE
    again with the backbone's MLP in int8 (`quantize_int8`), HyDE decoding the float run's lengths."""
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="ragsafe-latency-"))
    if architecture is not None:
        if replay is None:
            raise typer.BadParameter("--architecture needs --replay: random weights cannot say how long answers are")
        replayed = json.loads(replay.read_text())["meta"]
        texts, replayed_lengths = replayed["queries"], replayed["hyde new tokens"]
        if not isinstance(replayed_lengths, dict):
            raise typer.BadParameter("this replay file predates --hyde-caps (one length list): rerun it first")
        # a replay decodes at the caps it recorded (its "hyde≤N" keys), whatever --hyde-caps says
        caps = [int(label.removeprefix("hyde≤")) for label in replayed_lengths if label.removeprefix("hyde≤").isdigit()]
        bb, tm = random_backbone(architecture), random_teacher(architecture, work)
        encoder = GenEncoder(bb, GenConfig(out_dim=tm.dim))  # untrained: same shapes, same cost
        instructions = replayed["instructions"]
        beta, gate = replayed["query mix"], None  # random weights: no probe; the gate costs one dot product
    else:
        bb, tm = load_backbone(backbone), TeacherEmbedder(teacher)
        if export_architecture is not None:
            write_architecture(bb, teacher, export_architecture)
            typer.echo(f"architecture written to {export_architecture}")
            return
        texts, replayed_lengths = xquad_queries(data_dir, n=queries).queries, None
        caps = [int(c) for c in hyde_caps.split(",")]
        loaded = GenEmbedder.load(backbone=bb, teacher=tm, hybrid=True)
        encoder, beta, gate = loaded.encoder, loaded.query_mix, loaded.query_gate
        instructions = {"query": loaded.query_instruction, "document": loaded.document_instruction}
    gen = GenEmbedder(encoder, instructions["query"], instructions["document"], "teacher", tm, batch_size=1)
    hybrid = GenEmbedder(encoder, instructions["query"], instructions["document"], "teacher", tm, 1, beta, gate)
    new_tokens: dict[str, dict[str, int]] = {}

    def hyde(cap: int, label: str | None = None):
        """label given (the int8 rerun): decode exactly the lengths the float run at this cap decoded, so
        both time the same work, with real weights or replayed."""
        float_label = f"hyde≤{cap}"
        label, settings = label or float_label, GenerationSettings(max_new_tokens=cap)
        new_tokens[label] = {}

        def run(query: str):
            n = None
            if label != float_label:
                n = new_tokens[float_label][query]
            elif replayed_lengths is not None:
                n = replayed_lengths[float_label][texts.index(query)]
            forced = {} if n is None else {"min_new_tokens": n, "max_new_tokens": n}
            ids = chat_generate_ids(bb, [query], None, settings, **forced)
            new_tokens[label][query] = int(ids.shape[1])
            answer = bb.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
            return tm.embed([answer])

        return run

    runs = {
        "teacher": lambda q: tm.embed([q]),
        "gen": lambda q: gen.encode_queries([q]),
        "gen_hybrid": lambda q: hybrid.encode_queries([q]),
        **{f"hyde≤{cap}": hyde(cap) for cap in caps},
    }
    rows = []
    timings = {}

    def time_each(runs: dict[str, Callable[[str], object]]) -> None:
        for name, fn in runs.items():
            timings[name] = times = timed(fn, texts)
            typer.echo(f"{name}: p50 {1000 * statistics.median(times):.1f} ms")

    time_each(runs)
    int8_cosine = None
    if int8 and bb.device.type == "cpu" and bb.dtype == torch.float32:
        before = gen.encode_queries(texts)
        quantize_int8(bb)  # every closure above shares this backbone, so they now run quantized
        int8_cosine = (before * gen.encode_queries(texts)).sum(axis=1)
        cap = min(caps)
        time_each(
            {f"{k} (int8)": runs[k] for k in ("gen", "gen_hybrid")}
            | {f"hyde≤{cap} (int8)": hyde(cap, f"hyde≤{cap} (int8)")}
        )
    elif int8:
        typer.echo(f"int8 rows skipped: they need float32 weights on a CPU ({bb.dtype} on {bb.device})")
    for name, times in timings.items():
        row = {
            "embedder": name,
            "p50 ms": 1000 * statistics.median(times),
            "p95 ms": 1000 * statistics.quantiles(times, n=20)[-1],
            "mean ms": 1000 * statistics.mean(times),
        }
        for label in new_tokens:
            row[f"{label} p50 / p50"] = statistics.median(timings[label]) / statistics.median(times)
        rows.append(row)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    generated = {label: [per_query[q] for q in texts] for label, per_query in new_tokens.items()}
    meta = {
        "device": device,
        "weights": "random (architecture only; HyDE lengths replayed)" if architecture else "installed",
        "backbone": bb.name,
        "backbone dtype": str(bb.dtype),
        "queries": texts,
        "hyde new tokens": generated,
        "hyde new tokens, mean": {label: statistics.mean(n) for label, n in generated.items()},
        "instructions": instructions,
        "query mix": beta,
        "gen query cosine, int8 to float32 (min, mean)": (
            None if int8_cosine is None else [float(int8_cosine.min()), float(int8_cosine.mean())]
        ),
        "threads": threads if device == "cpu" else None,
    }
    notes = (
        "Batch 1, one query at a time after 2 warm-up queries. gen: one forward pass over instruction + query + "
        "10 tokens; gen_hybrid: that plus the teacher on the query; hyde≤N: the backbone's greedy answer (no "
        "system prompt, at most N new tokens) embedded by the teacher. Random-weight runs replay the real "
        "answer lengths, so HyDE decodes exactly as many steps as with the real weights."
    )
    tag = "cpu" if device == "cpu" else "cuda"
    write_results(out, f"query_latency_{tag}", rows, meta, notes)
    shutil.rmtree(work, ignore_errors=True)
    typer.echo(json.dumps({r["embedder"]: round(r["p50 ms"], 1) for r in rows}))


if __name__ == "__main__":
    typer.run(main)
