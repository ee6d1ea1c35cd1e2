"""The streamed-answer demo page and the endpoint that starts an answer."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from events.demo import answers as demo
from events.exceptions import PushsiteError
from events.http.responses import allow_methods, error_response, from_exception


def streamed_demo(request: HttpRequest) -> HttpResponse:
    channel = demo.demo_channels().first()
    return render(request, "events/streamed.html", {"channel": channel})


@allow_methods("POST")
async def streamed_demo_ask(request: HttpRequest) -> HttpResponse:
    """Start a streamed demo answer (CSRF-checked by the middleware); 202 with its stream id."""
    channel = await demo.demo_channels().afirst()
    if channel is None:
        return error_response(
            404,
            "channel_not_found",
            "The demo needs a public feed channel 'answers': .venv/bin/python manage.py seed_demo makes it.",
        )
    try:
        stream = await demo.start_answer(channel, request.POST.get("question", ""))
    except demo.AnswerInProgress:
        return error_response(409, "busy", "An answer is being streamed right now; try again in a moment.")
    except PushsiteError as error:
        return from_exception(error)
    return JsonResponse({"stream": stream, "channel": channel.slug}, status=202)
