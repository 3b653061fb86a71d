"""TRL: the scorer as a reward function of ``GRPOTrainer`` (and any trainer that calls
``f(prompts, completions, **columns) -> list[float | None]``).

Trainer side::

    from trl import GRPOConfig, GRPOTrainer
    from vlgenrm.client.trl import VLGenRMReward

    reward = VLGenRMReward("http://scorer:8000", api_key=os.environ["VLGENRM_API_KEY"],
                           image_column="image")            # the dataset column holding the image
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=GRPOConfig(...),
                          train_dataset=dataset)            # columns: prompt, image[, reference]
    trainer.train()

Per call (one generation batch: B prompts x G completions) the completions sharing an image and
question go to the scorer as one ``/v1/score`` request, the requests concurrently. The reward
of a completion is P("Yes") of the GenRM, in [0, 1]. With a ``reference`` column (or
``mode="pairwise"``) it is P(completion better than the reference) from ``/v1/compare``.

The image comes from ``kwargs[image_column]`` (what TRL passes for every dataset column): a PIL
image, bytes, a path, an ``s3://`` URI or URL, or a one-element list of them (an ``images``
column). The question is ``kwargs[question_column]`` when set, else the prompt's last user
turn (conversational prompts) or the prompt itself (with a chat template's markup removed).

Errors are never a reward: a scorer that fails (after the client's bounded retries) raises a
:class:`~vlgenrm.client.errors.ScorerError` out of ``trainer.train()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from vlgenrm.client.errors import InvalidRequestError
from vlgenrm.client.http import AsyncScorerClient, ScorerClient
from vlgenrm.scoring.queries import question_of, template_of

Mode = Literal["auto", "pointwise", "pairwise"]


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or (conversational) the assistant messages' content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    return "".join(_content_text(m.get("content")) for m in completion if m.get("role", "assistant") == "assistant")


def prompt_question(prompt: Any) -> str:
    """The question of a prompt: its last user turn's text, or a string prompt less any chat markup."""
    if isinstance(prompt, str):
        return question_of(prompt, template_of(prompt)).strip()
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise InvalidRequestError("the prompt has no user turn to take the question from; set question_column", code="invalid_request")
    return _content_text(users[-1].get("content")).strip()


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type", "text") == "text")


def _one_image(value: Any, i: int, column: str) -> Any:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InvalidRequestError(f"{column}[{i}] holds {len(value)} images; the scorer takes one per completion", code="invalid_request")
        return value[0]
    if value is None:
        raise InvalidRequestError(f"{column}[{i}] is empty: every completion needs an image", code="invalid_request")
    return value


class _Reward:
    def __init__(
        self,
        *,
        image_column: str,
        question_column: str | None,
        reference_column: str,
        mode: Mode,
        with_critique: bool,
        samples: int,
        seed: int | None,
        name: str,
    ) -> None:
        self.image_column, self.question_column, self.reference_column = image_column, question_column, reference_column
        self.mode, self.with_critique, self.samples, self.seed = mode, with_critique, samples, seed
        self.__name__ = name  # TRL logs rewards/<name>/mean

    def _inputs(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list, list[str], list[str], list[str] | None]:
        n = len(completions)
        column = self.image_column if self.image_column in kwargs else ("images" if "images" in kwargs else None)
        if column is None:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids", "environments"))
            raise InvalidRequestError(f"no image column {self.image_column!r} among the dataset's columns {columns}", code="invalid_request")
        images = [_one_image(v, i, column) for i, v in enumerate(kwargs[column])]
        if self.question_column:
            questions = [str(q) for q in kwargs[self.question_column]]
        else:
            questions = [prompt_question(p) for p in prompts]
        texts = [completion_text(c) for c in completions]
        pairwise = self.mode == "pairwise" or (self.mode == "auto" and self.reference_column in kwargs)
        references = None
        if pairwise:
            if self.reference_column not in kwargs:
                raise InvalidRequestError(f"mode='pairwise' needs a {self.reference_column!r} column", code="invalid_request")
            references = [completion_text(r) for r in kwargs[self.reference_column]]
        for name, values in (("images", images), ("questions", questions)):
            if len(values) != n:
                raise InvalidRequestError(f"{name}: {len(values)} for {n} completions", code="invalid_request")
        return images, questions, texts, references

    def _options(self) -> dict[str, Any]:
        return {"samples": self.samples, **({"seed": self.seed} if self.seed is not None else {})}

    @staticmethod
    def _log(kwargs: dict[str, Any], scores: Sequence[Any]) -> None:
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and scores and getattr(scores[0], "sample_rewards", None):
            log_metric("vlgenrm/agreement", sum(s.agreement for s in scores) / len(scores))


class VLGenRMReward(_Reward):
    """A synchronous reward function calling the scorer (TRL runs it in its training loop).

    ``client`` or the :class:`~vlgenrm.client.http.ScorerClient` arguments (``url``,
    ``api_key``, ``timeout``, ``retry``, ``concurrency``...). ``mode``: ``"auto"`` (pairwise
    when the batch has a ``reference_column``), ``"pointwise"`` or ``"pairwise"``.
    ``with_critique``/``samples``/``seed``: the scorer's critique and self-consistency options.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: ScorerClient | None = None,
        image_column: str = "image",
        question_column: str | None = None,
        reference_column: str = "reference",
        mode: Mode = "auto",
        with_critique: bool = False,
        samples: int = 1,
        seed: int | None = None,
        name: str = "vlgenrm",
        **client_options: Any,
    ) -> None:
        super().__init__(
            image_column=image_column,
            question_column=question_column,
            reference_column=reference_column,
            mode=mode,
            with_critique=with_critique,
            samples=samples,
            seed=seed,
            name=name,
        )
        self.client = client or ScorerClient(url, api_key, **client_options)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        images, questions, texts, references = self._inputs(prompts, completions, kwargs)
        if references is not None:
            return list(self.client.preferences(images, questions, texts, references, **self._options()))
        scores = self.client.score_completions(images, questions, texts, with_critique=self.with_critique, **self._options())
        self._log(kwargs, scores)
        return [s.reward for s in scores]

    def close(self) -> None:
        self.client.close()


class AsyncVLGenRMReward(_Reward):
    """The same reward as an ``async`` callable: TRL awaits it on its own event loop, beside
    its other async reward functions."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: AsyncScorerClient | None = None,
        image_column: str = "image",
        question_column: str | None = None,
        reference_column: str = "reference",
        mode: Mode = "auto",
        with_critique: bool = False,
        samples: int = 1,
        seed: int | None = None,
        name: str = "vlgenrm",
        **client_options: Any,
    ) -> None:
        super().__init__(
            image_column=image_column,
            question_column=question_column,
            reference_column=reference_column,
            mode=mode,
            with_critique=with_critique,
            samples=samples,
            seed=seed,
            name=name,
        )
        self._client, self._client_options, self._url, self._key = client, client_options, url, api_key

    @property
    def client(self) -> AsyncScorerClient:
        # Made on first use, inside the loop that awaits it (an httpx.AsyncClient belongs to one loop).
        if self._client is None:
            self._client = AsyncScorerClient(self._url, self._key, **self._client_options)
        return self._client

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        images, questions, texts, references = self._inputs(prompts, completions, kwargs)
        if references is not None:
            return list(await self.client.preferences(images, questions, texts, references, **self._options()))
        scores = await self.client.score_completions(images, questions, texts, with_critique=self.with_critique, **self._options())
        self._log(kwargs, scores)
        return [s.reward for s in scores]
