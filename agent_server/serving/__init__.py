"""What both servers share, written once: the app builder (app_builder), bearer-token auth, request
bodies within limits, error answers, request ids and logging, and uvicorn's connection limits."""
