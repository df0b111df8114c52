"""``python -m hermes_tools``: run the tool service."""

from __future__ import annotations

import asyncio

from hermes_tools.bootstrap import run
from hermes_tools.config import ToolSettings


def main() -> None:
    asyncio.run(run(ToolSettings()))


if __name__ == "__main__":
    main()
