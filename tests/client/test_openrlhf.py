"""OpenRLHF against the live scorer, exactly as OpenRLHF 0.11 calls a remote reward model.

OpenRLHF itself does not install here (its pins build flash-attn from source), so its two
callers are reproduced line for line from ``openrlhf/utils/agent.py``
(``SingleTurnAgentExecutor``): the HTTP one posts ``{"query", "prompts", "labels"}`` for one
sample with aiohttp (180 s total timeout, no headers), the query being
``tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)`` of a VLM prompt whose
image placeholder the processor expanded; the ``.py`` one imports the file by path as module
``reward_func`` and runs ``reward_func(queries, prompts, labels)`` in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util

import aiohttp
import pytest
import torch
from PIL import Image

import vlgenrm.client.openrlhf
from tests.client.conftest import B64, IMAGE, KEY, QUESTION, RESPONSES, REWARD_ONLY_KEY, LiveScorer
from vlgenrm.client import InvalidRequestError

pytestmark = pytest.mark.slow
SYSTEM = "You are a helpful assistant."


def openrlhf_sample(live: LiveScorer, response: str) -> tuple[str, str]:
    """(query, prompt) as OpenRLHF builds them for a Qwen2-VL policy with one image."""
    processor = live.genrm.processor
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pil = Image.open(__import__("io").BytesIO(IMAGE)).convert("RGB")
    prompt_ids = processor(images=[pil], text=[prompt], return_tensors="pt")["input_ids"][0].tolist()  # image tokens expanded
    eos = processor.tokenizer.eos_token  # vLLM stops on it and keeps it in the output tokens
    action_ids = processor.tokenizer(response + eos, add_special_tokens=False)["input_ids"]
    query = processor.tokenizer.decode(prompt_ids + action_ids, skip_special_tokens=False)
    assert query.count("<|image_pad|>") > 1 and prompt.count("<|image_pad|>") == 1 and query.endswith(eos)
    return query, prompt


async def post_like_openrlhf(url: str, data: dict, try_max_times: int = 5) -> dict:
    """OpenRLHF's _fetch_rewards_via_http._post_request (aiohttp, 180 s, raise_for_status)."""
    timeout = aiohttp.ClientTimeout(total=180)
    for _ in range(try_max_times):
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url, json=data) as response:
                    response.raise_for_status()
                    return await response.json()
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(1)
    raise RuntimeError(f"Request error for {try_max_times} times, returning None. Please check the API server.")


def to_experience_info(answer: dict) -> dict:
    """What OpenRLHF's _process_response_into_experience does with the answer (tensors of every value)."""
    info = {"reward": torch.tensor([answer["rewards"]]), "score": torch.tensor([answer["scores"]])}
    for key, value in answer.get("extra_logs", {}).items():
        info[key] = torch.tensor([value])
    return info


def test_openrlhf_http_requests_with_the_image_in_labels_get_the_rewards_of_v1_score(live: LiveScorer):
    """The issue's new user: a chat-templated Qwen2-VL query (image placeholder expanded, <|im_end|>
    after the response) with the image only in labels. Before: 422 "one image per query is
    required" (and with `images`, the question scored was the whole template). Now: the
    rewards of /v1/score for the same question and response."""
    expected = live.direct_rewards(B64, QUESTION, RESPONSES)
    s3_uri = live.store.uri(live.store.put_image(IMAGE, "png").key)
    url = live.url.replace("http://", f"http://rl:{REWARD_ONLY_KEY}@") + "/get_reward"  # the key as user-info: Basic auth
    for label in (s3_uri, "data:image/png;base64," + B64, {"image": s3_uri, "answer": "red"}):
        for i, response in enumerate(RESPONSES):
            query, prompt = openrlhf_sample(live, response)
            answer = asyncio.run(post_like_openrlhf(url, {"query": [query], "prompts": [prompt], "labels": [label]}))
            assert answer["rewards"] == pytest.approx([expected[i]], abs=1e-5), (label, response)
            assert answer["scores"] == answer["rewards"] and all(0 <= s <= 1 for s in answer["scores"])
            info = to_experience_info(answer)  # OpenRLHF can tensorize every extra log
            assert set(info) >= {"reward", "score", "genrm_p_yes"}
    # The vlgenrm `images` extension: same numbers.
    query, prompt = openrlhf_sample(live, RESPONSES[0])
    r = live.post("/get_reward", {"query": [query], "prompts": [prompt], "labels": [""], "images": [B64]}, key=REWARD_ONLY_KEY)
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == pytest.approx(expected[:1], abs=1e-5)


def test_openrlhf_requests_the_scorer_cannot_serve_get_a_clear_4xx(live: LiveScorer):
    query, prompt = openrlhf_sample(live, RESPONSES[0])
    no_image = live.post("/get_reward", {"query": [query], "prompts": [prompt], "labels": ["red"]}, key=REWARD_ONLY_KEY)
    assert no_image.status_code == 422 and "labels[0]: no image" in no_image.json()["error"]["message"]
    wrong_prompt = live.post(
        "/get_reward", {"query": [query], "prompts": ["<|im_start|>user\nOther?<|im_end|>\n"], "labels": ["data:image/png;base64," + B64]}, key=REWARD_ONLY_KEY
    )
    assert wrong_prompt.status_code == 422 and "does not start with its prompt" in wrong_prompt.json()["error"]["message"]
    no_key = asyncio.run(_status(live.url + "/get_reward", {"query": [query], "prompts": [prompt], "labels": ["s3://x/y.png"]}))
    assert no_key == 401


async def _status(url: str, data: dict) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, json=data) as response:
        return response.status


def test_the_reward_func_file_called_the_way_openrlhf_calls_it(live: LiveScorer, monkeypatch):
    monkeypatch.setenv("VLGENRM_SCORER_URL", live.url)
    monkeypatch.setenv("VLGENRM_API_KEY", KEY)
    path = vlgenrm.client.openrlhf.__file__
    assert path.endswith(".py")
    spec = importlib.util.spec_from_file_location("reward_func", path)  # SingleTurnAgentExecutor.__init__
    reward_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward_module)
    reward_func = reward_module.reward_func

    expected = live.direct_rewards(B64, QUESTION, RESPONSES)
    label = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    samples = [(*openrlhf_sample(live, response), label) for response in RESPONSES]

    async def fetch_rewards_via_func():  # _fetch_rewards_via_func: batch_size 1, asyncio.to_thread
        tasks = [asyncio.to_thread(reward_func, [q], [p], [lab]) for q, p, lab in samples]
        return await asyncio.gather(*tasks)

    answers = asyncio.run(fetch_rewards_via_func())
    assert [a["rewards"][0] for a in answers] == pytest.approx(expected, abs=1e-5)
    for answer in answers:
        assert answer["scores"] == answer["rewards"]
        to_experience_info(answer)
    with pytest.raises(InvalidRequestError, match="no image"):
        reward_func([samples[0][0]], [samples[0][1]], ["red"])  # OpenRLHF logs this and leaves the sample without a reward
