from __future__ import annotations

from django.urls import path

from events.demo import views

urlpatterns = [
    path("demo/streamed/", views.streamed_demo, name="streamed-demo"),
    path("demo/streamed/ask", views.streamed_demo_ask, name="streamed-demo-ask"),
]
