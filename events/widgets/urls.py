from __future__ import annotations

from django.urls import path

from events.widgets import views

urlpatterns = [
    path("embed/<slug:slug>/", views.embed, name="embed"),
]
