"""Rationale and sampler throughput on the tiny model (CPU by default), measured in one run.

    .venv/bin/python benchmarks/rationale_sampler.py [--pairs 32] [--k 2] [--max-new-tokens 32]

- candidates/s of the rationale stage with the ``transformers`` engine, batched
  (batch_size=8) vs one prompt at a time (batch_size=1), same prompts and seed;
- margins/s of the sampler: template-engine candidates scored by the GenRM (teacher forcing,
  two sequences per candidate), batched as the service does.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from vlgenrm.experts.pipeline import Annotator, decode_image
from vlgenrm.genrm.config import GenRMSettings, SamplingParams
from vlgenrm.genrm.model import GenRM
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.rationale.config import EngineSettings, RationaleSettings
from vlgenrm.rationale.engines import TemplateEngine, TransformersEngine
from vlgenrm.rationale.stage import generate_candidates
from vlgenrm.sampling.config import SamplerSettings
from vlgenrm.sampling.sampler import sample
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import SynthConfig, generate_dataset, load_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store")
        generate_dataset(SynthConfig(name="b", n_train=args.pairs, n_eval=0, seed=2, text_probability=0.0), store)
        examples = load_examples(store, "b", "train")
        out = Annotator().annotate(examples, [decode_image(store.get_image(e.image)) for e in examples], datetime.datetime.now(datetime.UTC))
        pairs = [p for p in out.pairs if p.label is not None]
        reports = {r.example_id: r for r in out.reports}
        images = {p.example.image.key: store.get_image(p.example.image) for p in pairs}
        genrm = GenRM.load(build_tiny_genrm(Path(tmp) / "tiny"), GenRMSettings(batch_size=8))
        sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
        engine = TransformersEngine(genrm)

        timings = {}
        for batch in (8, 1):
            genrm.settings = genrm.settings.model_copy(update={"batch_size": batch})
            settings = RationaleSettings(engine=EngineSettings(kind="transformers"), k=args.k, batch_size=batch, sampling=sampling)
            start = time.perf_counter()
            _, counts = generate_candidates(pairs, reports, images, engine, settings, seed=0)
            timings[batch] = (counts["candidates"], time.perf_counter() - start)

        genrm.settings = genrm.settings.model_copy(update={"batch_size": 8})
        template = RationaleSettings(k=4, both_orders=True)
        candidates, _ = generate_candidates(pairs, reports, images, TemplateEngine(), template, seed=0)
        by_pair: dict[str, list] = {}
        for c in candidates:
            by_pair.setdefault(c.pair_id, []).append(c)

        def margin_fn(items):
            from vlgenrm.genrm.model import PairwiseQuery
            from vlgenrm.genrm.verdicts import strip_verdict
            from vlgenrm.sampling.sampler import shown_responses, shown_target

            queries = [
                PairwiseQuery(images[p.example.image.key], p.example.question, *shown_responses(p, c.order), critique=strip_verdict(c.text)) for p, c in items
            ]
            return genrm.margins(queries, [shown_target(p, c) for p, c in items])

        start = time.perf_counter()
        result = sample(pairs, by_pair, margin_fn, 0, SamplerSettings(), genrm.version)
        t_margins = time.perf_counter() - start

    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}; tiny qwen2_vl on cpu")
    print(f"rationale, transformers engine, {len(pairs)} labelled pairs x k={args.k}, {args.max_new_tokens} new tokens:")
    for batch, (n, t) in timings.items():
        print(f"  batch_size={batch}: {n / t:7.1f} candidates/s ({n} in {t:.1f} s)")
    print(f"  speed-up batched vs one-by-one: {(timings[1][1] / timings[1][0]) / (timings[8][1] / timings[8][0]):.2f}x")
    print(
        f"sampler: {result.stats.scored} candidates scored in {t_margins:.1f} s = {result.stats.scored / t_margins:.1f} margins/s "
        f"(accepted {result.stats.accepted}, kept {result.stats.kept})"
    )


if __name__ == "__main__":
    main()
