# CPU image by default; for CUDA build with
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 XBENCH_CACHE=/cache XBENCH_DATA=/data
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git && rm -rf /var/lib/apt/lists/*; \
    fi && apt-get update && apt-get install -y --no-install-recommends git g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/xbench
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY pyproject.toml setup.py README.md ./
COPY xbench ./xbench
COPY tasks ./tasks
COPY baselines ./baselines
COPY benchmarks ./benchmarks
COPY tests ./tests
RUN pip install -e ".[dev]"
VOLUME ["/data", "/cache", "/opt/xbench/results"]
ENTRYPOINT ["xbench"]
CMD ["--help"]
