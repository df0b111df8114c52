"""``python -m hermes_notary``: run the notary."""

from __future__ import annotations

import asyncio

from hermes_notary.bootstrap import run
from hermes_notary.config import NotarySettings


def main() -> None:
    asyncio.run(run(NotarySettings()))


if __name__ == "__main__":
    main()
