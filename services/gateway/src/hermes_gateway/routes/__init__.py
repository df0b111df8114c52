"""One route module per resource: ideas, threads, thread events (SSE), backends, system, metrics, the web UI."""
