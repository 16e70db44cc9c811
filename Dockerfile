# syntax=docker/dockerfile:1
# meshbot image: `docker build -t meshbot .` then `docker run meshbot serve|socket|worker ...`.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: turn the project and every dependency into wheels --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Metadata first, packages after, so an edit to code does not invalidate more layers than needed.
COPY pyproject.toml README.md ./
COPY meshbot/ meshbot/
COPY bot/ bot/
COPY jobs/ jobs/
COPY policies/ policies/
COPY rendering/ rendering/
# playground/ (the local stand-ins) is not copied: setuptools packages only what it finds,
# so the image carries no test stand-in; `meshbot demo` there says how to get it.
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed even here;
# if one ever needs building, install gcc in this stage only — it never reaches the final one.
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: slim Python, the wheels, an unprivileged user ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# No .pyc writes (the root filesystem is read-only in the chart); logs straight to stdout;
# matplotlib (the rollback chart) keeps its font cache in the writable /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed uid/gid: the Helm chart's securityContext (runAsUser 10001) and this image agree.
RUN groupadd --system --gid 10001 meshbot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin meshbot
# The wheels are bind-mounted from the builder, not copied, so they leave no layer behind;
# --no-index makes the install use exactly what the builder resolved.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels meshbot
USER 10001:10001
WORKDIR /tmp
# 3000: `meshbot serve`; 9100: worker/socket /metrics, /healthz, /readyz.
EXPOSE 3000 9100
ENTRYPOINT ["meshbot"]
CMD ["serve"]
