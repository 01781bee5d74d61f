// Finds a PostgreSQL server for the demo and the tests: $DATABASE_URL, else 127.0.0.1:5432, else a private cluster
// started with the machine's initdb/pg_ctl. Also creates and drops scratch databases.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { quoteIdent, quoteLiteral } from '../db/quote';
import { projectRoot } from './tools';

export interface PostgresServer {
  /** A URL with rights to create databases. */
  adminUrl: string;
  source: 'DATABASE_URL' | 'local' | 'private';
}

async function canConnect(url: string): Promise<boolean> {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** A URL for another database on the same server. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

function binDir(): string | undefined {
  for (const d of ['/usr/lib/postgresql']) {
    try {
      const v = readdirSync(d)
        .filter((x) => /^\d+$/.test(x))
        .sort((a, b) => Number(b) - Number(a))[0];
      if (v) return join(d, v, 'bin');
    } catch {
      // not Debian
    }
  }
  return undefined;
}

function which(name: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  if (p) return p;
  const d = binDir();
  return d && existsSync(join(d, name)) ? join(d, name) : undefined;
}

/** Starts (or reuses) a private cluster under .tidemark/pg on port 55432. initdb refuses root, so root runs it as `postgres`. */
function startPrivateCluster(): string {
  const initdb = which('initdb');
  const pgCtl = which('pg_ctl');
  if (!initdb || !pgCtl)
    throw new Error('no PostgreSQL found: set DATABASE_URL, run a server on 127.0.0.1:5432, or install initdb/pg_ctl');
  const port = Number(process.env.TIDEMARK_PRIVATE_PG_PORT ?? 55432);
  const asRoot = userInfo().uid === 0;
  const base = asRoot ? '/tmp/tidemark-pg' : join(projectRoot(), '.tidemark', 'pg');
  const data = join(base, 'data');
  const run = (cmd: string, args: string[]) => {
    if (asRoot) execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'ignore' });
    else execFileSync(cmd, args, { stdio: 'ignore' });
  };
  mkdirSync(base, { recursive: true });
  if (asRoot) execFileSync('chown', ['postgres', base]);
  if (!existsSync(join(data, 'PG_VERSION'))) {
    run(initdb, ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  }
  const status = spawnSync(
    asRoot ? 'runuser' : pgCtl,
    asRoot ? ['-u', 'postgres', '--', pgCtl, 'status', '-D', data] : ['status', '-D', data],
  );
  if (status.status !== 0) {
    run(pgCtl, [
      'start',
      '-w',
      '-D',
      data,
      '-l',
      join(base, 'server.log'),
      '-o',
      `-p ${port} -k ${base} -c listen_addresses=127.0.0.1`,
    ]);
  }
  return `postgres://postgres@127.0.0.1:${port}/postgres`;
}

export async function findPostgres(): Promise<PostgresServer> {
  if (process.env.DATABASE_URL) {
    if (!(await canConnect(process.env.DATABASE_URL)))
      throw new Error('DATABASE_URL is set but the server cannot be reached');
    return { adminUrl: process.env.DATABASE_URL, source: 'DATABASE_URL' };
  }
  const user = userInfo().username === 'root' ? 'postgres' : userInfo().username;
  for (const url of [`postgres://postgres@127.0.0.1:5432/postgres`, `postgres://${user}@127.0.0.1:5432/postgres`]) {
    if (await canConnect(url)) return { adminUrl: url, source: 'local' };
  }
  const url = startPrivateCluster();
  if (!(await canConnect(url))) throw new Error(`started a private PostgreSQL cluster but cannot connect to ${url}`);
  return { adminUrl: url, source: 'private' };
}

/** Drops (terminating its sessions) and recreates a database; returns its URL. */
/** Whether database `name` exists, and the comment it carries (the demo marks the databases it creates). */
export async function databaseComment(
  adminUrl: string,
  name: string,
): Promise<{ exists: boolean; comment: string | null }> {
  const c = new Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const r = await c.query(
      `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`,
      [name],
    );
    return { exists: r.rowCount === 1, comment: r.rows[0]?.comment ?? null };
  } finally {
    await c.end();
  }
}

export async function recreateDatabase(adminUrl: string, name: string, comment?: string): Promise<string> {
  const c = new Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
    await c.query(`CREATE DATABASE ${quoteIdent(name)}`);
    if (comment) await c.query(`COMMENT ON DATABASE ${quoteIdent(name)} IS ${quoteLiteral(comment)}`);
  } finally {
    await c.end();
  }
  return withDatabase(adminUrl, name);
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const c = new Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
  } finally {
    await c.end();
  }
}
