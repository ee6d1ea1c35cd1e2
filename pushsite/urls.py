"""The site's URLs: the core's and each feature's, under one "events" namespace."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import include, path, re_path

from events import urls as core
from events.chat import urls as chat
from events.demo import urls as demo
from events.ops import urls as ops
from events.widgets import urls as widgets

events_urls = [
    *core.urlpatterns,
    *chat.urlpatterns,
    *widgets.urlpatterns,
    *demo.urlpatterns,
    *ops.urlpatterns,
]

# Admin pages of the models that moved from the core app to their own (issue 12).
MOVED_ADMIN = {"announcement": "announcements", "chatmute": "chat", "servercensus": "ops"}


def moved_admin_page(request: HttpRequest, model: str, rest: str) -> HttpResponseRedirect:
    """Old bookmarks keep working; 308 keeps a form's method and body, unlike 301."""
    response = HttpResponseRedirect(f"/admin/{MOVED_ADMIN[model]}/{model}/{rest}")
    response.status_code = 301 if request.method in {"GET", "HEAD"} else 308
    return response


admin.site.site_header = "Pushsite administration"
admin.site.site_title = "Pushsite admin"
admin.site.index_title = "Channels, messages and keys"

# Django's 400s (an unknown Host, too many fields): the JSON the stream path sends, not an HTML page.
handler400 = "events.views.bad_request"

urlpatterns = [
    re_path(r"^admin/events/(?P<model>announcement|chatmute|servercensus)/(?P<rest>.*)$", moved_admin_page),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include((events_urls, "events"))),
]
