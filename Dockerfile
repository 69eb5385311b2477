# omni-rtc bridge image: slim Python, non-root, only what runs the server.
# Configuration comes only from the same environment variables as the CLI
# (see README "Configuration" and .env.example).
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY omni_rtc ./omni_rtc
COPY signaling ./signaling
COPY web ./web
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMNI_RTC_HOST=0.0.0.0 \
    OMNI_RTC_PORT=8080
RUN useradd --system --uid 10001 --create-home --home-dir /home/omni omni
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER omni
WORKDIR /home/omni
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["omni-rtc", "healthcheck"]
ENTRYPOINT ["omni-rtc"]
CMD ["serve"]
