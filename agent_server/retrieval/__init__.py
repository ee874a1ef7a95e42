"""The retrieval server: Search-R1's `/retrieve` over a backend (agent_server.backends), with its
query sanitising, result cache, query coalescer and per-query failure isolation."""
