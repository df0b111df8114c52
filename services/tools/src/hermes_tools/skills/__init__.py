"""Skills: small programs an agent wrote, kept in a git repository (``$HERMES_HOME/skills``), each offered as a tool
``skill__<name>`` once a proposal passed validation (static checks, then its own tests in the sandbox).

Modules: :mod:`.manifest` (``SKILL.md``), :mod:`.repo` (the git library), :mod:`.checks` (ruff, bandit, Hermes's
own checks), :mod:`.validate` (a proposal's verdict), :mod:`.run` (a skill as a tool, run in the sandbox),
:mod:`.stats` (usage statistics).
"""
