FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned (pass a CPU-only wheel index with --build-arg TORCH_INDEX=... to slim the image).
ARG TORCH_INDEX=""
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX} "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY api api
COPY workers workers
COPY pipelines pipelines
COPY schemas schemas
COPY core core
COPY cli cli
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["agentmem", "api", "--host", "0.0.0.0", "--port", "8000"]
