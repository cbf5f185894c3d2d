"""``python -m api.openapi [PATH]``: write the API's OpenAPI document.

docs/openapi.json is this output for the default settings; a test keeps the
two in step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from api.app import create_app
from relayq.config.settings import Settings

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app built with default settings."""
    settings = Settings.model_validate({})
    return create_app(settings, configure_logs=False).openapi()


def main(argv: list[str]) -> int:
    text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
