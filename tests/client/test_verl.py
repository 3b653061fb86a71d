"""verl's reward loop calling vlgenrm.client.verl against the live scorer.

verl does not install here beside this project's pins (it needs transformers 5.10 and
huggingface_hub 1.x), so its entry point is reproduced from verl 0.9.1:
``verl.trainer.ppo.reward.get_custom_reward_fn`` loads the file by path and wraps the function
with the config's ``reward_kwargs`` (``_call_with_kwargs``), and
``NaiveRewardManager.run_single`` calls it with ``data_source``, ``solution_str``,
``ground_truth`` and ``extra_info`` (to which it adds ``num_turns`` and
``rollout_reward_scores``), awaiting an async function, running a sync one in the loop's
default executor, and reading ``result["score"]`` and every key as extra info.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from functools import partial

import pytest

import vlgenrm.client.verl
from tests.client.conftest import B64, IMAGE, KEY, QUESTION, RESPONSES, LiveScorer
from vlgenrm.client import InvalidImageError, InvalidRequestError

pytestmark = pytest.mark.slow


def load_extern_object(module_path: str, object_name: str):
    spec = importlib.util.spec_from_file_location("custom_module", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, object_name)


def _call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):
    return raw_fn(*args, **{**kwargs, **extra_kwargs})


async def _call_with_kwargs_async(raw_fn, extra_kwargs, *args, **kwargs):
    return await raw_fn(*args, **{**kwargs, **extra_kwargs})


def get_custom_reward_fn(path: str, name: str, reward_kwargs: dict):
    raw_fn = load_extern_object(path, name)
    if not inspect.iscoroutinefunction(raw_fn):
        return partial(_call_with_kwargs, raw_fn, reward_kwargs)
    return partial(_call_with_kwargs_async, raw_fn, reward_kwargs)


async def run_single(compute_score, data_source, response_str, ground_truth, extra_info) -> dict:
    """NaiveRewardManager.run_single, from the decoded response on."""
    extra_info = dict(extra_info)
    extra_info["num_turns"] = None
    extra_info["rollout_reward_scores"] = {}
    if inspect.iscoroutinefunction(compute_score):
        result = await compute_score(data_source=data_source, solution_str=response_str, ground_truth=ground_truth, extra_info=extra_info)
    else:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None, lambda: compute_score(data_source=data_source, solution_str=response_str, ground_truth=ground_truth, extra_info=extra_info)
        )
    reward_extra_info = {}
    if isinstance(result, dict):
        score = result["score"]
        reward_extra_info.update(result)
    else:
        score = result
        reward_extra_info["acc"] = score
    return {"reward_score": score, "reward_extra_info": reward_extra_info}


@pytest.mark.parametrize("name", ["compute_score", "compute_score_async"])
def test_compute_score_through_verls_reward_loop_equals_v1_score(live: LiveScorer, name: str):
    reward_kwargs = {"scorer_url": live.url, "api_key": KEY, "image_key": "image", "question_key": "question"}
    compute_score = get_custom_reward_fn(vlgenrm.client.verl.__file__, name, reward_kwargs)
    assert inspect.iscoroutinefunction(compute_score) == name.endswith("_async")
    s3_uri = live.store.uri(live.store.put_image(IMAGE, "png").key)
    expected = live.direct_rewards(B64, QUESTION, RESPONSES)

    async def rollouts():  # the reward loop scores a batch's rollouts concurrently
        return await asyncio.gather(
            *(run_single(compute_score, "vlgenrm/synth", r, "red", {"image": s3_uri, "question": QUESTION, "index": i}) for i, r in enumerate(RESPONSES))
        )

    results = asyncio.run(rollouts())
    assert [r["reward_score"] for r in results] == pytest.approx(expected, abs=1e-5)
    for r in results:
        assert set(r["reward_extra_info"]) == {"score", "verdict", "critique"}
        assert r["reward_extra_info"]["verdict"] == ("Yes" if r["reward_score"] >= 0.5 else "No")


def test_compute_score_with_critique_and_samples_and_its_errors(live: LiveScorer, monkeypatch):
    monkeypatch.setenv("VLGENRM_API_KEY", KEY)
    info = {"images": [IMAGE], "prompt": QUESTION}  # the fallbacks: a one-image list, the prompt as question
    result = vlgenrm.client.verl.compute_score("d", RESPONSES[0], None, info, scorer_url=live.url, with_critique=True, samples=2, seed=3, max_critique_tokens=8)
    assert set(result) == {"score", "verdict", "critique", "agreement"} and isinstance(result["critique"], str)
    again = vlgenrm.client.verl.compute_score("d", RESPONSES[0], None, info, scorer_url=live.url, with_critique=True, samples=2, seed=3, max_critique_tokens=8)
    assert again == result
    with pytest.raises(InvalidRequestError, match="no image in extra_info"):
        vlgenrm.client.verl.compute_score("d", RESPONSES[0], None, {"question": QUESTION}, scorer_url=live.url)
    with pytest.raises(InvalidImageError):  # the scorer's 400 raises out of the reward loop, no 0 is made up
        asyncio.run(vlgenrm.client.verl.compute_score_async("d", RESPONSES[0], None, {"image": b"not an image", "question": QUESTION}, scorer_url=live.url))
