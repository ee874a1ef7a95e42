"""searchgym's servers: the retrieval server (`retrieval`) and the env server (`env`), both built by
`serving.app_builder`; the search backends and their indexes (`backends`, `embedded_indexes`, `index_cli`)."""
