"""The fake OpenStack's services around Nova: Keystone v3, version discovery, Glance and Neutron.

Why apart from Nova (:mod:`tests.fakes.openstack`): these only let openstacksdk authenticate,
find its endpoints and resolve a flavor's image and network by name; the provider's real work
(create, list, delete servers, with faults) is Nova's. Keystone password / application-
credential auth returns a token and a service catalog pointing back at the same server.

The catalog has the shape of openstacksdk's ``ConnectionFixture`` / keystoneauth's v3 token
fixture (service type, name, endpoints per interface and region); those fixtures are not
usable here (they need the ``fixtures`` package and serve no HTTP), so it is written out.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_MICROVERSION = "2.96"
MIN_MICROVERSION = "2.1"
USERNAME = "hybrid-rm"
PASSWORD = "os-pw-5f2c9e1a7b"  # what start() puts in the password environment variable
APP_CRED_ID = "appcred-0001"
APP_CRED_SECRET = "os-appcred-secret-93be01"
PROJECT_NAME = "burst"
PROJECT_ID = "c0ffee00c0ffee00c0ffee00c0ffee00"
REGION = "RegionOne"


def now_iso(delta_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Image:
    id: str
    name: str


@dataclass
class Network:
    id: str
    name: str


class HttpError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def keystone_401(message: str = "The request you have made requires authentication.") -> HttpError:
    return HttpError(401, {"error": {"code": 401, "title": "Unauthorized", "message": message}},
                     {"WWW-Authenticate": 'Keystone uri="/identity"'})


class OpenStackServices:
    """Keystone, version discovery, Glance and Neutron, mixed into the fake's WSGI app.

    The app (a dataclass) holds the state these read: the inventory and the issued tokens.
    """

    images: list[Image]
    networks: list[Network]
    tokens: set[str]
    reject_auth: int  # the next N token requests get a 401 (credentials revoked)
    _lock: threading.Lock

    # -- Keystone ----------------------------------------------------------------------------
    def _identity(self, method: str, parts: list[str], body: Any, base: str) -> tuple[int, Any, dict[str, str]]:
        v3 = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
              "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
              "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}
        if method == "GET" and not parts:
            return 300, {"versions": {"values": [v3]}}, {}
        if method == "GET" and parts == ["v3"]:
            return 200, {"version": v3}, {}
        if method == "POST" and parts == ["v3", "auth", "tokens"]:
            return self._issue_token(body or {}, base)
        raise HttpError(404, {"error": {"code": 404, "title": "Not Found", "message": "not emulated"}})

    def _issue_token(self, body: dict, base: str) -> tuple[int, Any, dict[str, str]]:
        identity = body.get("auth", {}).get("identity", {})
        methods = identity.get("methods", [])
        with self._lock:
            if self.reject_auth > 0:
                self.reject_auth -= 1
                raise keystone_401()
        if methods == ["password"]:
            user = identity.get("password", {}).get("user", {})
            project = body.get("auth", {}).get("scope", {}).get("project", {})
            if (user.get("name") != USERNAME or user.get("password") != PASSWORD
                    or user.get("domain", {}).get("name") != "Default"
                    or not (project.get("id") == PROJECT_ID or (project.get("name") == PROJECT_NAME
                                                              and project.get("domain", {}).get("name") == "Default"))):
                raise keystone_401()
        elif methods == ["application_credential"]:
            cred = identity.get("application_credential", {})
            if cred.get("id") != APP_CRED_ID or cred.get("secret") != APP_CRED_SECRET:
                raise keystone_401()
        else:
            raise keystone_401()
        token = uuid.uuid4().hex
        with self._lock:
            self.tokens.add(token)

        def service(kind: str, name: str, url: str) -> dict:
            return {"id": uuid.uuid4().hex, "type": kind, "name": name, "endpoints": [
                {"id": uuid.uuid4().hex, "interface": interface, "region": REGION, "region_id": REGION, "url": url}
                for interface in ("public", "internal", "admin")]}

        domain = {"id": "default", "name": "Default"}
        payload = {"token": {
            "methods": methods, "audit_ids": [uuid.uuid4().hex[:22]],
            "expires_at": now_iso(3600), "issued_at": now_iso(),
            "user": {"id": uuid.uuid4().hex, "name": USERNAME, "domain": domain, "password_expires_at": None},
            "project": {"id": PROJECT_ID, "name": PROJECT_NAME, "domain": domain},
            "is_domain": False, "roles": [{"id": uuid.uuid4().hex, "name": "member"}],
            "catalog": [service("identity", "keystone", f"{base}/identity"),
                        service("compute", "nova", f"{base}/compute/v2.1"),
                        service("image", "glance", f"{base}/image"),
                        service("network", "neutron", f"{base}/networking")],
        }}
        if methods == ["application_credential"]:
            payload["token"]["application_credential"] = {"id": APP_CRED_ID, "name": "hybrid-rm", "restricted": True}
        return 201, payload, {"X-Subject-Token": token}

    def _authenticate(self, headers: dict) -> None:
        with self._lock:
            if headers.get("x-auth-token") not in self.tokens:
                raise keystone_401()

    def _revoke(self) -> None:
        """An AUTH fault: every token becomes invalid and the re-authentication is refused once."""
        with self._lock:
            self.tokens.clear()
            self.reject_auth += 1

    # -- version discovery -------------------------------------------------------------------
    def _versions(self, service: str, rest: list[str], base: str) -> tuple[int, Any, dict[str, str]]:
        if service == "compute":
            v21 = {"id": "v2.1", "status": "CURRENT", "version": MAX_MICROVERSION, "min_version": MIN_MICROVERSION,
                   "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}]}
            v20 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
                   "updated": "2011-01-21T11:33:21Z", "links": [{"rel": "self", "href": f"{base}/compute/v2/"}]}
            if rest == ["v2.1"]:
                return 200, {"version": v21}, {}
            if not rest:
                return 200, {"versions": [v20, v21]}, {}
        if service == "image" and not rest:
            versions = [{"id": f"v2.{minor}", "status": "CURRENT" if minor == 15 else "SUPPORTED",
                         "links": [{"rel": "self", "href": f"{base}/image/v2/"}]} for minor in (15, 9, 0)]
            return 300, {"versions": versions}, {}
        if service == "networking" and not rest:
            return 200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"{base}/networking/v2.0/"}]}]}, {}
        if service == "networking" and rest == ["v2.0"]:
            return 200, {"resources": [{"name": "network", "collection": "networks", "links": [
                {"rel": "self", "href": f"{base}/networking/v2.0/networks"}]}]}, {}
        raise HttpError(404, {"message": "no such version"})

    # -- Glance and Neutron ------------------------------------------------------------------
    def _image(self, method: str, parts: list[str], query: dict) -> tuple[int, Any, dict[str, str]]:
        def render(image: Image) -> dict:
            return {"id": image.id, "name": image.name, "status": "active", "visibility": "public",
                    "disk_format": "qcow2", "container_format": "bare", "min_disk": 0, "min_ram": 0,
                    "protected": False, "os_hidden": False, "tags": [], "owner": PROJECT_ID,
                    "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
                    "self": f"/v2/images/{image.id}", "file": f"/v2/images/{image.id}/file",
                    "schema": "/v2/schemas/image"}

        if method == "GET" and parts == ["images"]:
            name = query.get("name", [None])[0]
            found = [render(i) for i in self.images if name is None or i.name == name]
            return 200, {"images": found, "schema": "/v2/schemas/images", "first": "/v2/images"}, {}
        if method == "GET" and len(parts) == 2 and parts[0] == "images":
            for image in self.images:
                if image.id == parts[1]:
                    return 200, render(image), {}
            raise HttpError(404, {"message": f"No image found with ID {parts[1]}", "code": "404 Not Found",
                                  "title": "Not Found"})
        raise HttpError(404, {"message": "not emulated"})

    def _network(self, method: str, parts: list[str], query: dict) -> tuple[int, Any, dict[str, str]]:
        def render(network: Network) -> dict:
            return {"id": network.id, "name": network.name, "status": "ACTIVE", "admin_state_up": True,
                    "subnets": [], "shared": False, "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
                    "router:external": network.name == "public", "mtu": 1450, "tags": []}

        if method == "GET" and parts == ["networks"]:
            name = query.get("name", [None])[0]
            return 200, {"networks": [render(n) for n in self.networks if name is None or n.name == name]}, {}
        if method == "GET" and len(parts) == 2 and parts[0] == "networks":
            for network in self.networks:
                if network.id == parts[1]:
                    return 200, {"network": render(network)}, {}
            raise HttpError(404, {"NeutronError": {"type": "NetworkNotFound", "detail": "",
                                                   "message": f"Network {parts[1]} could not be found."}})
        raise HttpError(404, {"NeutronError": {"type": "HTTPNotFound", "detail": "", "message": "not emulated"}})
