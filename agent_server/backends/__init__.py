"""Retrieval backends: BM25 (pyserini/Lucene, or bm25s), dense (faiss + sentence-transformers), hybrid
(RRF); their names in `names`."""
