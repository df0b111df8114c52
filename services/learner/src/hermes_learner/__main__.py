"""``hermes-learner`` / ``python -m hermes_learner``."""

import asyncio

from hermes_learner.bootstrap import run
from hermes_learner.config import LearnerSettings


def main() -> None:
    asyncio.run(run(LearnerSettings()))


if __name__ == "__main__":
    main()
