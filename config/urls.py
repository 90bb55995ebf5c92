"""URL map. Each app contributes its own ``urls`` module; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    # There is no public site: the root is the operator's console.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include("integrations.urls")),
    path("", include("streaming.urls")),
]
