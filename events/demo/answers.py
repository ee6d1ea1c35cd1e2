"""The streamed-answer demo: a server-side generator publishing tokens through the streaming path.

Stands in for a language model: it "answers" with canned text, one token every
TOKEN_SECONDS, as one logical stream (events/publish/stream_publication.py) into the demo's
``answers`` channel. One answer at a time per process keeps it harmless.
"""

from __future__ import annotations

import asyncio
import logging
import re

from django.db.models import QuerySet

from events.models import Channel, Kind, Visibility
from events.publish import validate
from events.publish.stream_publication import DONE, FAILED, StreamPublication
from events.runtime.tasks import detached

logger = logging.getLogger(__name__)

DEMO_CHANNEL = "answers"
TOKEN_EVENT = "token"
TOKEN_SECONDS = 0.05
MAX_QUESTION_LENGTH = 200
ANSWER = (
    "Here is how this answer reaches you. The server publishes it as one stream: every token is a "
    "part with the same stream id and the next part number, and a final event says the stream is "
    "done. Your page subscribed with a plain EventSource and appends each token as it arrives, as "
    "text. The answers channel folds its streams, so the tokens are live-only and the whole answer "
    "is stored once, in the end event, for anyone who joins later."
)
_TOKEN = re.compile(r"\S+\s*")

_running: asyncio.Task[None] | None = None


class AnswerInProgress(Exception):
    """This process is already streaming an answer."""


def demo_channels() -> QuerySet[Channel]:
    """The demo's channel, the active public feed ``answers``, or none: the page and the asking both read it here.

    Anyone may ask (a CSRF token is all it takes), so the demo never publishes into a
    channel called ``answers`` that is private, for members only, or a chat room.
    """
    return Channel.objects.active().filter(slug=DEMO_CHANNEL, visibility=Visibility.PUBLIC, kind=Kind.FEED)


def clean_question(question: str) -> str:
    """The question as the answer quotes it; InvalidInput (400) for what a message may not hold."""
    question = question[:MAX_QUESTION_LENGTH].strip()
    validate.check_strings(question, subject="The question")
    return question


def tokens(question: str) -> list[str]:
    """The answer to ``question``, token by token (words with their trailing space)."""
    text = f"You asked: “{question}”. {ANSWER}" if question else ANSWER
    return _TOKEN.findall(text)


async def start_answer(channel: Channel, question: str) -> str:
    """Start streaming an answer in the background; its stream id (InvalidInput for a bad question)."""
    global _running
    question = clean_question(question)
    if _running is not None and not _running.done():
        raise AnswerInProgress
    stream = StreamPublication(channel, publisher="demo")
    _running = detached(_answer(stream, question))
    return stream.id


async def _answer(stream: StreamPublication, question: str) -> None:
    try:
        for token in tokens(question):
            await stream.apart(token, event=TOKEN_EVENT)
            await asyncio.sleep(TOKEN_SECONDS)
        await stream.aend(DONE)
    except asyncio.CancelledError:
        await stream.aend(FAILED, "The server stopped.")
        raise
    except Exception as exc:
        logger.exception("The demo answer %s failed.", stream.id)
        await stream.aend(FAILED, f"The demo failed: {type(exc).__name__}.")
