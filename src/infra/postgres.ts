// Finds a PostgreSQL server for the demo and the tests: $DATABASE_URL, else 127.0.0.1:5432, else a private cluster
// started with the machine's initdb/pg_ctl. Also creates and drops scratch databases.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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

export interface PrivateClusterOptions {
  /** Where the cluster lives: data/ and server.log inside it. */
  dir: string;
  port: number;
  /** Server settings given at start (`-c name=value`), e.g. `{ wal_level: 'logical' }`. */
  settings?: Record<string, string>;
  /** With a password, TCP connections must give it (scram-sha-256) and `adminUrl` carries it; else trust. */
  password?: string;
}

/**
 * A PostgreSQL cluster of its own, made with the machine's initdb and run with pg_ctl, listening on 127.0.0.1 only:
 * the demo's fallback when no server runs, and the tests' servers that may be restarted or configured (wal_level…)
 * without touching the machine's own. initdb refuses root, so root runs the tools as `postgres`.
 */
export class PrivateCluster {
  private readonly asRoot = userInfo().uid === 0;
  private readonly tools: { initdb: string; pgCtl: string };

  constructor(readonly opts: PrivateClusterOptions) {
    const initdb = which('initdb');
    const pgCtl = which('pg_ctl');
    if (!initdb || !pgCtl)
      throw new Error(
        'no PostgreSQL found: set DATABASE_URL, run a server on 127.0.0.1:5432, or install initdb/pg_ctl',
      );
    this.tools = { initdb, pgCtl };
  }

  get dataDir(): string {
    return join(this.opts.dir, 'data');
  }

  /** A URL with rights to create databases. */
  get adminUrl(): string {
    const auth = this.opts.password ? `postgres:${encodeURIComponent(this.opts.password)}` : 'postgres';
    return `postgres://${auth}@127.0.0.1:${this.opts.port}/postgres`;
  }

  private run(cmd: string, args: string[]): void {
    if (this.asRoot) execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'ignore' });
    else execFileSync(cmd, args, { stdio: 'ignore' });
  }

  running(): boolean {
    const args = ['status', '-D', this.dataDir];
    const r = this.asRoot
      ? spawnSync('runuser', ['-u', 'postgres', '--', this.tools.pgCtl, ...args])
      : spawnSync(this.tools.pgCtl, args);
    return r.status === 0;
  }

  /** Creates the cluster on first use and starts it unless it runs; returns once it accepts connections. */
  start(): this {
    mkdirSync(this.opts.dir, { recursive: true });
    if (this.asRoot) execFileSync('chown', ['postgres', this.opts.dir]);
    if (!existsSync(join(this.dataDir, 'PG_VERSION'))) this.initdb();
    if (this.running()) return this;
    this.run(this.tools.pgCtl, ['start', ...this.startArgs()]);
    return this;
  }

  private initdb(): void {
    const args = ['-D', this.dataDir, '-U', 'postgres', '-E', 'UTF8'];
    if (!this.opts.password) {
      this.run(this.tools.initdb, [...args, '--auth=trust']);
      return;
    }
    // The password reaches initdb through a file readable by the server's user, removed at once.
    const pwfile = join(this.opts.dir, 'pwfile');
    writeFileSync(pwfile, `${this.opts.password}\n`, { mode: 0o644 });
    try {
      this.run(this.tools.initdb, [...args, '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`]);
    } finally {
      rmSync(pwfile, { force: true });
    }
  }

  private startArgs(): string[] {
    const settings = Object.entries(this.opts.settings ?? {}).map(([k, v]) => `-c ${k}=${v}`);
    const options = [`-p ${this.opts.port}`, `-k ${this.opts.dir}`, '-c listen_addresses=127.0.0.1', ...settings];
    return ['-w', '-t', '120', '-D', this.dataDir, '-l', join(this.opts.dir, 'server.log'), '-o', options.join(' ')];
  }

  /** Stops the server: `fast` ends sessions cleanly, `immediate` is a crash (recovery runs at the next start). */
  stop(mode: 'fast' | 'immediate' = 'fast'): void {
    if (this.running()) this.run(this.tools.pgCtl, ['stop', '-w', '-m', mode, '-D', this.dataDir]);
  }

  /** Restarts the server without blocking the caller, so clients can keep trying (and failing) meanwhile. */
  restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const args = ['restart', '-m', mode, ...this.startArgs()];
    const [cmd, argv] = this.asRoot
      ? ['runuser', ['-u', 'postgres', '--', this.tools.pgCtl, ...args]]
      : [this.tools.pgCtl, args];
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, argv, { stdio: 'ignore' });
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pg_ctl restart exited ${code}`))));
    });
  }
}

/** The demo's fallback: a private cluster under .tidemark/pg (as root, /tmp/tidemark-pg) on port 55432. */
function startPrivateCluster(): string {
  const base = userInfo().uid === 0 ? '/tmp/tidemark-pg' : join(projectRoot(), '.tidemark', 'pg');
  const port = Number(process.env.TIDEMARK_PRIVATE_PG_PORT ?? 55432);
  return new PrivateCluster({ dir: base, port }).start().adminUrl;
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
