"""A synthetic training set and a tiny start checkpoint for the trainer tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from vlgenrm.contracts import Choice, Order, TrainingRecord
from vlgenrm.genrm.verdicts import verdict_line
from vlgenrm.stages import jsonl
from vlgenrm.store import BlobStore
from vlgenrm.synth.dataset import SynthConfig, generate_dataset, load_examples, load_truth


def records_from_truth(store: BlobStore, name: str, split: str = "train") -> list[TrainingRecord]:
    """TrainingRecords as the sampler writes them, labelled with the domain's truth (what
    expert refinement recovers ~99 % of the time), in both orders. The trainer is under test
    here, not the label pipeline."""
    truth = load_truth(store, name, split)
    out = []
    for ex in load_examples(store, name, split):
        better = truth[ex.id].better
        for order in Order:
            shown_a, shown_b = (ex.response_a, ex.response_b) if order is Order.AB else (ex.response_b, ex.response_a)
            y = better if order is Order.AB else (Choice.B if better is Choice.A else Choice.A)
            critique = f"Response {y.value} is more faithful to the image.\n{verdict_line(y.value)}"
            out.append(
                TrainingRecord(
                    id=f"{ex.id}/{order.value}",
                    example_id=ex.id,
                    pair_id=ex.id,
                    candidate_id=f"{ex.id}/{order.value}/0",
                    image=ex.image,
                    question=ex.question,
                    response_a=shown_a,
                    response_b=shown_b,
                    order=order,
                    target=critique,
                    verdict=y,
                )
            )
    random.Random(0).shuffle(out)
    return out


@dataclass
class TrainingData:
    name: str
    records: list[TrainingRecord]
    uris: list[str]


def put_training_set(store: BlobStore, records: list[TrainingRecord], key: str, shards: int = 2) -> list[str]:
    """The records as the sampler's shards: ``key``/<nnnnn>.jsonl."""
    uris = []
    for i in range(shards):
        k = f"{key}/{i:05d}.jsonl"
        store.put_bytes(k, jsonl(records[i::shards]))
        uris.append(store.uri(k))
    return uris


def synth(store: BlobStore, name: str = "synth", n_train: int = 96, n_eval: int = 48, **config) -> TrainingData:
    generate_dataset(SynthConfig(name=name, n_train=n_train, n_eval=n_eval, image_size=192, shard_size=32, **config), store)
    records = records_from_truth(store, name)
    return TrainingData(name, records, put_training_set(store, records, f"iterations/test/{name}/sampling"))


COLOUR_QUESTION = "What colour is the square?"
COLOUR_RESPONSES = ("It is red.", "It is blue.")


def colour_records(store: BlobStore, n: int, seed: int, red_is: Choice = Choice.A) -> list[TrainingRecord]:
    """A synthetic set the tiny model can learn in a few dozen steps: the text is the same in
    every record, so only the pixels (a red or a blue square, random shades) decide; the red
    square's option is ``red_is``."""
    import io

    from PIL import Image

    rng = random.Random(seed)
    out = []
    for i in range(n):
        red = i % 2 == 0
        hot, cold = rng.randint(170, 255), (rng.randint(0, 70), rng.randint(0, 70))
        colour = (hot, *cold) if red else (cold[0], cold[1], hot)
        buf = io.BytesIO()
        Image.new("RGB", (56, 56), colour).save(buf, "PNG")
        y = red_is if red else (Choice.B if red_is is Choice.A else Choice.A)
        out.append(
            TrainingRecord(
                id=f"colour-{seed}-{i}",
                example_id=f"colour-{seed}-{i}",
                pair_id=f"colour-{seed}-{i}",
                candidate_id=f"colour-{seed}-{i}/0",
                image=store.put_image(buf.getvalue(), "png"),
                question=COLOUR_QUESTION,
                response_a=COLOUR_RESPONSES[0],
                response_b=COLOUR_RESPONSES[1],
                target=f"Response {y.value} names the colour of the square.\n{verdict_line(y.value)}",
                verdict=y,
            )
        )
    return out
