from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Pushsite administration"
admin.site.site_title = "Pushsite admin"
admin.site.index_title = "Channels, messages and keys"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("events.urls")),
]
