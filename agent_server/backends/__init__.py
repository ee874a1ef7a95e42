"""Retrieval backends: BM25 (pyserini/Lucene), dense (faiss + sentence-transformers), hybrid (RRF)."""
