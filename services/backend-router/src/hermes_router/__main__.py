"""``hermes-backend-router`` / ``python -m hermes_router``."""

import asyncio

from hermes_router.bootstrap import run
from hermes_router.config import RouterSettings


def main() -> None:
    asyncio.run(run(RouterSettings()))


if __name__ == "__main__":
    main()
