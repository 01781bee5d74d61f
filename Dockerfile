# A tidemark worker image: Node 20 plus the PostgreSQL client programs (pg_dump, pg_restore, psql) for backups.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bin ./bin
RUN npm ci && npm prune --omit=dev
COPY examples ./examples
ENTRYPOINT ["node", "bin/tidemark"]
