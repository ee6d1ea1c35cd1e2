"""The streamed-answer demo page and the endpoint that starts an answer."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from events.demo import answers as demo
from events.http.responses import error_response
from events.models import Channel


def streamed_demo(request: HttpRequest) -> HttpResponse:
    channel = Channel.objects.active().filter(slug=demo.DEMO_CHANNEL).first()
    return render(request, "events/streamed.html", {"channel": channel})


@require_POST
async def streamed_demo_ask(request: HttpRequest) -> HttpResponse:
    """Start a streamed demo answer (CSRF-checked by the middleware); 202 with its stream id."""
    channel = await Channel.objects.active().filter(slug=demo.DEMO_CHANNEL).afirst()
    if channel is None:
        return error_response(
            404, "channel_not_found", "Create the demo channel first: .venv/bin/python manage.py seed_demo."
        )
    try:
        stream = await demo.start_answer(channel, request.POST.get("question", ""))
    except demo.AnswerInProgress:
        return error_response(409, "busy", "An answer is being streamed right now; try again in a moment.")
    return JsonResponse({"stream": stream, "channel": channel.slug}, status=202)
