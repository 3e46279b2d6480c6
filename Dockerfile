FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Node.js runs the JavaScript tools (Debian's package, under /usr: the sandbox shows it to tools read-only).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
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
COPY agentmem agentmem
# Everything else comes from pyproject.toml: no second list of dependencies to keep in step.
RUN pip install --no-cache-dir .
# The file tools' workspaces (a volume in docker-compose.yml), private to the worker's user from the start.
RUN mkdir -p -m 0700 /var/lib/agentmem/workspaces
EXPOSE 8000
CMD ["agentmem", "api", "--host", "0.0.0.0", "--port", "8000"]
