"""OpenRLHF: the scorer as its remote reward model, over HTTP or as a ``reward_func`` file.

OpenRLHF sends no images to a reward model, so the image of each prompt travels in its label:
point ``--data.label_key`` at a dataset column holding an ``s3://`` URI of the platform's store
(or a ``data:image/...;base64,`` URL, or a JSON object with an ``image`` field). The scorer
reads the image from ``labels[i]``, the question from the chat-templated prompt, and the
response from what follows the prompt in the decoded query (expanded image placeholders and the
end-of-turn token are handled; docs/integrations.md).

(a) HTTP (``/get_reward``). OpenRLHF's caller sends no headers, so the key goes in the URL's
user-info, which every HTTP client sends as ``Authorization: Basic``::

    python -m openrlhf.cli.train_ppo_ray ... \\
        --data.label_key image_uri \\
        --reward.remote_url "http://rl:${VLGENRM_API_KEY}@scorer:8000/get_reward"

(b) A ``reward_func`` file: this module itself. OpenRLHF imports it by path and calls
``reward_func(queries, prompts, labels)`` in a thread; the key and URL come from the
environment of the rollout workers::

    export VLGENRM_SCORER_URL=http://scorer:8000 VLGENRM_API_KEY=...
    python -m openrlhf.cli.train_ppo_ray ... \\
        --data.label_key image_uri \\
        --reward.remote_url "$(python -c 'import vlgenrm.client.openrlhf as m; print(m.__file__)')"

OpenRLHF catches exceptions from both paths, logs "Failed to fetch reward from remote RM" and
leaves the sample without a reward; the scorer's typed error (after bounded retries) is what
that log line shows. Nothing here returns a made-up 0.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from vlgenrm.client.http import ScorerClient

_client: ScorerClient | None = None
_lock = threading.Lock()


def client() -> ScorerClient:
    """The process's client, from ``$VLGENRM_SCORER_URL`` and ``$VLGENRM_API_KEY`` (made once)."""
    global _client
    with _lock:
        if _client is None:
            _client = ScorerClient()
        return _client


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]) -> dict[str, Any]:
    """OpenRLHF's ``reward_func(queries, prompts, labels)``: what ``/get_reward`` answers, as
    OpenRLHF reads it (``rewards``, ``scores`` in [0, 1] for dynamic filtering, numeric ``extra_logs``)."""
    answer = client().get_reward(list(queries), list(prompts), list(labels))
    return {"rewards": answer.rewards, "scores": answer.scores, "extra_logs": dict(answer.extra_logs)}
