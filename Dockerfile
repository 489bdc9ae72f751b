# The bot's image: `docker build -t slack-assistants-bot .` (see README, "Running in production").
# No secret is baked in: settings come from the environment at run time.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY bot ./bot
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home bot \
    && mkdir /data && chown bot /data
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////data/bot.sqlite3 \
    PORT=3000 \
    HEALTH_PORT=8080
WORKDIR /data
USER bot
VOLUME ["/data"]
EXPOSE 3000 8080
# /healthz is on PORT in HTTP mode and on HEALTH_PORT in Socket Mode (SLACK_APP_TOKEN set).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['HEALTH_PORT'] if os.environ.get('SLACK_APP_TOKEN') else os.environ['PORT']; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
CMD ["python", "-m", "bot"]
