"""One route module per resource: ideas, threads, thread events (SSE), system, metrics, the web UI."""
