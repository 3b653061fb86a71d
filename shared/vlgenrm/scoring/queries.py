"""OpenRLHF's remote reward requests, read back into (image, question, response).

OpenRLHF posts ``query`` = the *decoded* prompt + response tokens with their special tokens
(``tokenizer.decode(..., skip_special_tokens=False)``), the chat-templated ``prompt`` it
generated from, and the dataset's ``label``; it has no field for images. So:

- a VLM policy's query holds the image placeholder *expanded* by its processor (hundreds of
  ``<|image_pad|>`` where the prompt has one), and ends with the template's end-of-turn token;
- the question the GenRM should judge is the user's text inside the prompt, not the system
  prompt, role headers and image placeholders around it;
- the image comes in ``labels[i]`` (an ``s3://`` URI, a data URL, an allowed http(s) URL, or a
  JSON object with an ``image`` field), since that is the one per-sample field OpenRLHF forwards.

:func:`parse_query` splits a query the way ``/v1/score`` would have been called with the
same question and response. Prompts in no template it knows are kept as sent (the question
is the whole prompt). Special tokens *inside* a response stay: the GenRM scores them as
ordinary characters (``GenRM.as_data``), so a policy cannot forge a turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Template:
    """How one chat-template family marks user turns, the assistant's start and its end."""

    name: str
    marker: str  # present in every prompt of the family
    user_turn: re.Pattern[str]  # group 1: a user turn's content
    assistant_start: str  # what precedes the response (for a query sent without its prompt)
    ends: tuple[str, ...]  # end-of-turn / end-of-text tokens decoded after a response
    begins: tuple[str, ...] = ()  # beginning-of-text tokens


TEMPLATES = (
    Template(
        "chatml", "<|im_start|>", re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.S), "<|im_start|>assistant\n", ("<|im_end|>", "<|endoftext|>")
    ),
    Template(
        "llama3",
        "<|start_header_id|>",
        re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n*(.*?)(?:<\|eot_id\|>|$)", re.S),
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|eot_id|>", "<|end_of_text|>"),
        ("<|begin_of_text|>",),
    ),
    Template(
        "gemma",
        "<start_of_turn>",
        re.compile(r"<start_of_turn>user\n(.*?)(?:<end_of_turn>|$)", re.S),
        "<start_of_turn>model\n",
        ("<end_of_turn>", "<eos>"),
        ("<bos>",),
    ),
    Template("mistral", "[INST]", re.compile(r"\[INST\](.*?)(?:\[/INST\]|$)", re.S), "[/INST]", ("</s>",), ("<s>",)),
)

#: Image placeholders a processor expands into runs of one token (collapsed before matching).
_RUNS = re.compile(r"(<\|image_pad\|>|<\|video_pad\|>|<\|image\|>|<image>|<image_soft_token>|<IMG_CONTEXT>)(?:\1)+")
#: Whole image placeholders, removed from the question (the image travels separately).
_IMAGE_SPANS = re.compile(
    r"<\|vision_start\|>.*?<\|vision_end\|>|<start_of_image>.*?<end_of_image>|<img>.*?</img>"
    r"|<\|image_pad\|>|<\|video_pad\|>|<\|image\|>|<image>|<image_soft_token>|<IMG_CONTEXT>",
    re.S,
)
IMAGE_PREFIXES = ("s3://", "data:image/", "http://", "https://", "file://")  # file://: a LocalStore URI, still fetched only from the store


def collapse_image_runs(text: str) -> str:
    """``text`` with every run of a repeated image placeholder token reduced to one."""
    return _RUNS.sub(r"\1", text)


def template_of(text: str) -> Template | None:
    return next((t for t in TEMPLATES if t.marker in text), None)


def _strip_begins(text: str, template: Template | None) -> str:
    for token in template.begins if template else ():
        while text.startswith(token):
            text = text[len(token) :]
    return text


def question_of(prompt: str, template: Template | None) -> str:
    """The user's text of a chat-templated prompt (every user turn, image placeholders
    removed); a prompt in no known template is the question as sent."""
    if template is None:
        return prompt
    turns = [_IMAGE_SPANS.sub("", m).strip() for m in template.user_turn.findall(prompt)]
    text = "\n".join(t for t in turns if t)
    return text or _IMAGE_SPANS.sub("", prompt).strip()


def response_of(tail: str, template: Template | None) -> str:
    """The response: what follows the prompt, less the end-of-turn tokens decoded after it."""
    if template is None:
        return tail
    changed = True
    while changed:
        changed = False
        stripped = tail.rstrip()
        for token in template.ends:
            if stripped.endswith(token):
                tail, changed = stripped[: -len(token)], True
    return tail.strip()


def parse_query(query: str, prompt: str | None) -> tuple[str, str]:
    """(question, response) of an OpenRLHF query, as ``/v1/score`` would take them.

    With ``prompt`` the response is what follows it in ``query`` (after expanded image
    placeholders are collapsed in both); without one, what follows the last assistant header
    of a known template. ValueError when the query cannot be split.
    """
    template = template_of(prompt if prompt is not None else query)
    q = _strip_begins(collapse_image_runs(query), template)
    if prompt is None:
        if template is None:
            raise ValueError("no prompts given and the query is in no chat template this scorer knows: send prompts")
        at = q.rfind(template.assistant_start)
        if at < 0:
            raise ValueError(f"no prompts given and no assistant turn ({template.assistant_start!r}) in the query")
        head, tail = q[: at + len(template.assistant_start)], q[at + len(template.assistant_start) :]
        return question_of(head, template), response_of(tail, template)
    p = _strip_begins(collapse_image_runs(prompt), template)
    if not q.startswith(p):
        raise ValueError("query does not start with its prompt")
    return question_of(p, template), response_of(q[len(p) :], template)


def image_from_label(label: Any) -> str | None:
    """The image named by an OpenRLHF label: an image source string (``s3://``, data URL,
    http(s) URL), or an object (or its JSON) with an ``image``/``image_url``/``images`` field."""
    if isinstance(label, str):
        text = label.strip()
        if text.startswith(IMAGE_PREFIXES):
            return text
        if text.startswith("{"):
            try:
                label = json.loads(text)
            except ValueError:
                return None
        else:
            return None
    if isinstance(label, dict):
        for key in ("image", "image_url", "images"):
            value = label.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, dict):  # {"url": ...}, as in OpenAI-style content parts
                value = value.get("url")
            if isinstance(value, str) and value:
                return value
    return None
