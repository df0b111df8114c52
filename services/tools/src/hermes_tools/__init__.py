"""Hermes tool service: executes agents' tool calls (built-in tools and MCP servers) inside a bubblewrap sandbox."""
