"""FastAPI services of searchgym: the retrieval server and the env server."""
