"""FastAPI services of searchgym: the retrieval server and (later) the env server."""
