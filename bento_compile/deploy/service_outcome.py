"""What a Cloud Run or Knative deploy reports: the service, its URL, and where the traffic now goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bento_compile.deploy.traffic import Route


@dataclass(frozen=True)
class ServedRoute:
    """A route as the platform reports it, with the URL its tag gives (empty without a tag)."""

    route: Route
    url: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"revision": self.route.revision, "percent": self.route.percent, "tag": self.route.tag or None,
                "url": self.url or None}


@dataclass
class ServiceDeployment:
    """One deploy, promote or rollback of a service, as `--json` prints it."""

    platform: str  # "cloudrun" or "knative"
    service: str
    resource: str  # projects/P/locations/R/services/S, or NAMESPACE/NAME
    action: str  # deploy, canary, promote, rollback
    revision: str  # the revision the action was about (the new one, the promoted one, the one now serving)
    url: str
    traffic: list[ServedRoute] = field(default_factory=list)
    bento_tag: str | None = None
    image: str | None = None
    unchanged: bool = False
    smoke: dict[str, Any] | None = None  # the smoke check's result (passed, problems, url), as Lambda's
    notes: list[str] = field(default_factory=list)  # e.g. that the smoke check was skipped, and why

    def as_json(self) -> dict[str, Any]:
        return {"platform": self.platform, "service": self.service, "resource": self.resource,
                "action": self.action, "revision": self.revision, "version": self.revision, "url": self.url,
                "traffic": [route.as_json() for route in self.traffic], "bento_tag": self.bento_tag,
                "image": self.image, "unchanged": self.unchanged, "skipped": self.unchanged, "smoke": self.smoke,
                "notes": self.notes}
