"""The OpenAPI 3 description of the HTTP API (served at ``/api/openapi.json``).

The camera input schema is generated from :class:`onvifcam.config.CameraConfig` (the same
typed model a ``[[cameras]]`` entry is read into); the rest is written out here.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from onvifcam import __version__
from onvifcam.config import _PORT_KEYS, CameraConfig

_JSON = "application/json"
# the methods that change something: web.api.cross_site_refusal checks these
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def camera_input_schema() -> dict[str, Any]:
    """JSON Schema of a camera as the API takes it: the keys of a ``[[cameras]]`` entry."""
    props: dict[str, Any] = {}
    for f in dataclasses.fields(CameraConfig):
        tp = typing.get_type_hints(CameraConfig)[f.name]
        if tp is bool:
            props[f.name] = {"type": "boolean"}
        elif tp is int:
            props[f.name] = {"type": "integer", "minimum": 0}
            if f.name in _PORT_KEYS:
                props[f.name]["maximum"] = 65535
        elif tp is float:
            props[f.name] = {"type": "number", "minimum": 0}
        else:
            props[f.name] = {"type": "string"}
    props["offline"]["enum"] = ["", "placeholder", "none"]
    props["rtsp_auth"]["enum"] = ["", "path", "onvif"]
    props["source"]["description"] = "file sources are set in the configuration file only"
    return {"type": "object", "properties": props, "additionalProperties": False}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
}


def _errors(*codes: str) -> dict[str, Any]:
    out = dict(_ERRORS)
    for c in codes:
        out[c] = {"$ref": "#/components/responses/Error"}
    return out


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the camera's name, key, slug or path",
    "schema": {"type": "string", "minLength": 1},
}


@functools.cache
def spec() -> dict[str, Any]:
    """The whole OpenAPI document."""
    camera_in = camera_input_schema()
    camera_new = {
        **camera_in,
        "required": ["path"],
        "properties": {**camera_in["properties"], "path": {"type": "string", "minLength": 1}},
    }
    camera = {
        "type": "object",
        "required": [
            "name",
            "slug",
            "path",
            "state",
            "origin",
            "online",
            "codec",
            "resolution",
            "fps",
            "bitrate_kbps",
            "readers",
            "publisher_address",
            "rtsp_url",
            "onvif_url",
            "snapshot_url",
            "push",
            "uuid",
            "mac",
            "serial",
        ],
        "properties": {
            "name": {"type": "string"},
            "slug": {"type": "string"},
            "path": {"type": "string"},
            "sub_path": {"type": "string"},
            "auto": {"type": "boolean"},
            "online": {"type": "boolean"},
            "address": {"type": "string"},
            "uuid": {"type": "string"},
            "mac": {"type": "string"},
            "serial": {"type": "string"},
            "auth": {"type": "boolean"},
            "video": {"type": "object"},
            "port": {"type": "integer"},
            "onvif_url": {"type": "string"},
            "rtsp_url": {"type": "string"},
            "snapshot_url": {"type": "string"},
            "api_snapshot_url": {"type": "string"},
            "origin": {"type": "string", "enum": ["config", "api", "auto"]},
            "state": {"type": "string", "enum": ["online", "offline", "placeholder"]},
            "codec": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "resolution": {"type": "string"},
            "fps": {"type": "number"},
            "bitrate_kbps": {"type": "integer"},
            "readers": {"type": "integer", "minimum": 0},
            "publisher_address": {"type": "string"},
            "publisher_protocol": {"type": "string"},
            "push": {
                "type": "object",
                "description": "URLs to push this camera's stream to: rtsp, rtmp, "
                "obs_server + obs_key, srt, whip (those whose ingest is on)",
                "additionalProperties": {"type": "string"},
            },
            "config": {"type": "object", "description": "its settings (password masked)"},
        },
    }
    session = {
        "type": "object",
        "required": ["id", "path", "role", "protocol", "address", "bytes", "uptime"],
        "properties": {
            "id": {"type": "string"},
            "path": {"type": "string"},
            "role": {"type": "string", "enum": ["publisher", "reader"]},
            "protocol": {"type": "string"},
            "address": {"type": "string"},
            "bytes": {"type": "integer", "minimum": 0},
            "uptime": {"type": "number", "minimum": 0},
            "description": {"type": "string"},
        },
    }
    event = {
        "type": "object",
        "required": ["id", "type", "at"],
        "properties": {
            "id": {"type": "integer"},
            "type": {"type": "string"},
            "at": {"type": "number"},
        },
        "additionalProperties": True,
    }
    item = {
        "type": "object",
        "required": ["kind", "id", "description", "status", "enabled", "switchable", "stats"],
        "properties": {
            "kind": {"type": "string"},
            "id": {"type": "string"},
            "description": {"type": "string"},
            "status": {"oneOf": [{"type": "string"}, {"type": "object"}]},
            "enabled": {"type": "boolean"},
            "switchable": {"type": "boolean"},
            "stats": {"type": "object"},
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "field": {"type": "string", "description": "the input field to blame"},
        },
    }
    names = {"type": "array", "items": {"type": "string"}}
    reload = {
        "type": "object",
        "required": ["ok", "source", "cameras", "applied", "restart_needed", "error"],
        "properties": {
            "ok": {"type": "boolean"},
            "source": {"type": "string", "description": "the configuration file"},
            "cameras": {
                "type": "object",
                "required": ["added", "updated", "removed", "refused"],
                "properties": {
                    "added": names,
                    "updated": names,
                    "removed": names,
                    "refused": {
                        "type": "object",
                        "description": "camera name -> why the registry refused it",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "applied": {**names, "description": "what took effect at once"},
            "restart_needed": {**names, "description": "changes that wait for a restart"},
            "error": {"type": "string"},
            "failed": {
                "type": "string",
                "enum": ["", "no_config", "config", "state"],
                "description": "why nothing changed",
            },
            "file": {"type": "string"},
            "key": {"type": "string", "description": "the configuration key to blame"},
            "reason": {"type": "string"},
            "field": {"type": "string"},
        },
    }
    trigger = {
        "type": "object",
        "required": ["type", "state"],
        "properties": {
            "type": {"type": "string", "enum": ["motion", "digital_input"]},
            "state": {"type": "boolean"},
            "input": {"type": "string", "description": "DI_1...; digital_input only"},
            "source": {"type": "string", "description": "VideoSource_1; motion only"},
        },
        "additionalProperties": False,
    }
    camera_ok = _json(_ref("Camera"), "the camera")
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "onvifcam HTTP API",
            "version": __version__,
            "description": "Cameras, sessions, events, sources and forwards of one onvifcam "
            "server. Every operation but GET /api/health needs the admin credential (HTTP "
            "Basic or a bearer token).",
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Liveness (no credential needed)",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "version"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "version": {"type": "string"},
                                    "uptime": {"type": "number"},
                                },
                            },
                            "the server runs",
                        )
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3"), **_ERRORS},
                }
            },
            "/api/cameras": {
                "get": {
                    "summary": "Every camera",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["time", "cameras"],
                                "properties": {
                                    "time": {"type": "number"},
                                    "cameras": {"type": "array", "items": _ref("Camera")},
                                },
                            },
                            "the cameras",
                        ),
                        **_ERRORS,
                    },
                },
                "post": {
                    "summary": "Create a camera (kept in the state directory)",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("CameraNew")}},
                    },
                    "responses": {
                        "201": _json(_ref("Camera"), "created"),
                        **_errors("409", "413", "422"),
                    },
                },
            },
            "/api/cameras/{name}": {
                "parameters": [_NAME],
                "get": {
                    "summary": "One camera with its settings",
                    "responses": {"200": camera_ok, **_errors("404")},
                },
                "put": {
                    "summary": "Replace an API or auto camera's settings",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("CameraNew")}},
                    },
                    "responses": {"200": camera_ok, **_errors("404", "409", "413", "422")},
                },
                "patch": {
                    "summary": "Change some settings of an API or auto camera",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("CameraInput")}},
                    },
                    "responses": {"200": camera_ok, **_errors("404", "409", "413", "422")},
                },
                "delete": {
                    "summary": "Remove an API or auto camera with its state file",
                    "responses": {"204": {"description": "removed"}, **_errors("404", "409")},
                },
            },
            "/api/cameras/{name}/snapshot": {
                "parameters": [_NAME],
                "get": {
                    "summary": "A JPEG of the camera's main stream (or its offline picture)",
                    "responses": {
                        "200": {
                            "description": "JPEG",
                            "content": {"image/jpeg": {"schema": {"type": "string"}}},
                        },
                        "503": {"description": "no picture ([onvif] snapshot_offline = 503)"},
                        **_errors("404"),
                    },
                },
            },
            "/api/cameras/{name}/events": {
                "parameters": [_NAME],
                "post": {
                    "summary": "Fire motion or a digital input (ONVIF Events)",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("Trigger")}},
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "applied"),
                        **_errors("404", "422"),
                    },
                },
            },
            "/api/sessions": {
                "get": {
                    "summary": "Publishers and readers of every stream",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["sessions"],
                                "properties": {
                                    "sessions": {"type": "array", "items": _ref("Session")}
                                },
                            },
                            "the sessions",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/sessions/{id}": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "delete": {
                    "summary": "Disconnect a publisher or reader",
                    "responses": {
                        "204": {"description": "disconnected"},
                        **_errors("404"),
                    },
                },
            },
            "/api/events": {
                "get": {
                    "summary": "Recent events, oldest first",
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "only events with a larger id",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1},
                            "description": "at most this many (the newest)",
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["events", "last_id"],
                                "properties": {
                                    "events": {"type": "array", "items": _ref("Event")},
                                    "last_id": {"type": "integer"},
                                },
                            },
                            "the events",
                        ),
                        **_errors("422"),
                    },
                }
            },
            "/api/events/stream": {
                "get": {
                    "summary": "Live events as Server-Sent Events (data: an Event as JSON)",
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors("503"),
                    },
                }
            },
            "/api/sources": {
                "get": {
                    "summary": "Sources and forwards with their status and counters",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["kinds", "items"],
                                "properties": {
                                    "kinds": {"type": "array", "items": {"type": "string"}},
                                    "items": {"type": "array", "items": _ref("Switchable")},
                                },
                            },
                            "the sources and forwards",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/sources/{kind}/{id}/{action}": {
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": s}
                    for n, s in (
                        ("kind", {"type": "string"}),
                        ("id", {"type": "string"}),
                        ("action", {"type": "string", "enum": ["enable", "disable"]}),
                    )
                ],
                "post": {
                    "summary": "Enable or disable a source or forward",
                    "responses": {
                        "200": _json(_ref("Switchable"), "its new status"),
                        **_errors("404", "409"),
                    },
                },
            },
            "/api/reload": {
                "post": {
                    "summary": "Re-read the configuration file and apply what changed (as "
                    "SIGHUP); unaffected cameras, streams, readers and publishers are not touched",
                    "responses": {
                        "200": _json(_ref("Reload"), "what changed, took effect or waits"),
                        "409": _json(
                            _ref("Error"), "no configuration file, or a reload is running"
                        ),
                        "422": _json(
                            _ref("Reload"),
                            "the file has an error (file, key, reason); nothing changed",
                        ),
                        "507": _json(_ref("Reload"), "the state directory cannot be written"),
                        **_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "CameraInput": camera_in,
                "CameraNew": camera_new,
                "Camera": camera,
                "Session": session,
                "Event": event,
                "Switchable": item,
                "Error": error,
                "Trigger": trigger,
                "Reload": reload,
            },
            "responses": {
                "Error": _json(_ref("Error"), "refused; `field` names the input to blame"),
                "BadRequest": _json(_ref("Error"), "the body is not a JSON object"),
                "Unauthorized": _json(_ref("Error"), "the admin credential is missing"),
                "CrossSite": _json(
                    _ref("Error"),
                    "a browser sent it from another site (Sec-Fetch-Site, or an Origin "
                    "that is not this server): refused against CSRF",
                ),
                "NotJson": _json(_ref("Error"), "the body's Content-Type is not application/json"),
            },
        },
    }
    _add_cross_site_refusals(doc["paths"])
    return doc


# Operations whose CSRF check is about the origin only: the trigger route takes a body of
# any declared type (cameras and ``curl -d`` post it without application/json).
_ORIGIN_ONLY = {("/api/cameras/{name}/events", "post")}


def _add_cross_site_refusals(paths: dict[str, Any]) -> None:
    """Every state-changing operation passes ``web.api.cross_site_refusal`` first: 403 for
    a cross-site browser request, 415 for a body not declared as JSON."""
    for path, item in paths.items():
        for method, op in item.items():
            if method.upper() not in UNSAFE_METHODS:
                continue
            op["responses"]["403"] = {"$ref": "#/components/responses/CrossSite"}
            if (path, method) not in _ORIGIN_ONLY:
                op["responses"]["415"] = {"$ref": "#/components/responses/NotJson"}
