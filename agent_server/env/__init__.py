"""The env server: SearchQAEnv sessions over HTTP, the data sets it offers, and recorded answers."""
