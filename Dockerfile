# A tidemark worker image: Node 20, tidemark built from this checkout, and PostgreSQL's client programs (pg_dump,
# pg_restore, psql) of major version PG_MAJOR from the PostgreSQL project's apt repository — at least the major version
# of the databases it migrates (pg_dump refuses a newer server; preflight checks it).
#   docker build -t tidemark .                        # or: docker compose up -d --build
#   docker build --build-arg PG_MAJOR=17 -t tidemark .
ARG PG_MAJOR=16

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY bin ./bin
# npm ci builds dist/ (the prepare script) with the dev dependencies; the runtime keeps only the others.
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
ARG PG_MAJOR
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY examples ./examples
# A plan's relative backup.dir resolves here, on the worker: mount a volume at /app/backups to keep the dumps.
ENV TIDEMARK_BACKUP_ROOT=/app NODE_ENV=production
ENTRYPOINT ["node", "bin/tidemark"]
CMD ["worker", "--log-format", "json"]
