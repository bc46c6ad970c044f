# One image recipe for every service: `docker build --build-arg SERVICE=planner .`
# The builder installs only that service's distribution and what it needs (cvxpy only in the optimizer,
# ccxt only in the tracker and executor), from the committed lock, as `make run` does.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || (echo "build with --build-arg SERVICE=<tracker|optimizer|planner|executor|monitor>" && false)
RUN pip install --no-cache-dir "uv>=0.5"
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY apps ./apps
COPY libs ./libs
COPY services ./services
RUN uv sync --frozen --no-dev --no-editable --package "rebal-${SERVICE}"

FROM python:${PYTHON}-slim
ARG SERVICE
ENV REBAL_SERVICE=${SERVICE} PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 rebal && useradd --system --uid 10001 --gid rebal --home /app rebal
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY examples ./examples
USER rebal
# Services bind to all interfaces inside the container; compose publishes them on 127.0.0.1 only.
ENV REBAL__HTTP__HOST=0.0.0.0
CMD ["sh", "-c", "exec python -m rebal_${REBAL_SERVICE}"]
