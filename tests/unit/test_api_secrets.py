"""What the HTTP API shows of a camera's configuration: no password, user:password in a URL
or SRT passphrase; and a camera with forward entries serialises for the state file."""

from __future__ import annotations

import json

from onvifcam.cameras.registry import CameraRegistry
from onvifcam.config import from_dict
from onvifcam.web.api import config_json


def test_config_json_hides_every_secret() -> None:
    cfg = from_dict(
        {
            "cameras": [
                {
                    "name": "c",
                    "path": "cam",
                    "username": "u",
                    "password": "pw-SECRET",
                    "source": ["rtsp://u:SECRET@127.0.0.1:554/x", "srt://127.0.0.1:1?streamid=a"],
                    "forward": [
                        {"url": "srt://127.0.0.1:9000?streamid=s&passphrase=SECRETSECRET"},
                        {"url": "rtmp://u:SECRET@127.0.0.1/live/k"},
                    ],
                }
            ]
        }
    ).cameras[0]
    out = config_json(cfg)
    text = json.dumps(out)
    assert "SECRET" not in text
    assert out["password"] == "********"
    assert out["source"] == ["rtsp://u:***@127.0.0.1:554/x", "srt://127.0.0.1:1?streamid=a"]
    assert out["forward"][0]["url"] == "srt://127.0.0.1:9000?streamid=s&passphrase=***"
    assert out["forward"][1]["url"] == "rtmp://u:***@127.0.0.1/live/k"
    one = from_dict({"cameras": [{"path": "p", "source": "rtsp://u:SECRET@127.0.0.1/x"}]})
    assert config_json(one.cameras[0])["source"] == "rtsp://u:***@127.0.0.1/x"


def test_api_table_of_a_camera_with_forward_entries_is_json() -> None:
    cfg = from_dict(
        {"cameras": [{"path": "p", "forward": [{"url": "rtsp://127.0.0.1/x", "retry_limit": 2}]}]}
    ).cameras[0]
    table = json.loads(json.dumps(CameraRegistry.api_table(cfg)))
    assert table["forward"][0]["url"] == "rtsp://127.0.0.1/x"
    assert table["forward"][0]["retry_limit"] == 2
    again = from_dict({"cameras": [table]}).cameras[0]  # and reads back as it was
    assert again == cfg
