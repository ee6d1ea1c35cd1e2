from __future__ import annotations

import django_eventstream
from django.urls import include, path

from . import views

urlpatterns = [
    path("events/<channel>/", include(django_eventstream.urls)),
    path("api/channels/<slug:slug>/messages", views.publish),
    path("healthz", views.healthz),
]
