"""``hermes-notifier`` / ``python -m hermes_notifier``."""

import asyncio

from hermes_notifier.bootstrap import run
from hermes_notifier.config import NotifierSettings


def main() -> None:
    asyncio.run(run(NotifierSettings()))


if __name__ == "__main__":
    main()
