"""``hermes-orchestrator`` / ``python -m hermes_orchestrator``."""

import asyncio

from hermes_orchestrator.bootstrap import run
from hermes_orchestrator.config import OrchestratorSettings


def main() -> None:
    asyncio.run(run(OrchestratorSettings()))


if __name__ == "__main__":
    main()
