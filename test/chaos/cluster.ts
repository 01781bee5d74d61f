// A private PostgreSQL cluster the chaos suite may restart at will: its own data directory under a temporary directory,
// its own port, password authentication over TCP (so the URL every component uses carries a secret), trust only on its
// Unix socket. initdb and pg_ctl refuse root, so root runs them as `postgres`, as src/infra/postgres.ts does.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from '../../src/infra/devserver';
import { quoteIdent, quoteLiteral } from '../../src/db/quote';

export const CHAOS_PASSWORD = 's3cr3t-chaos';

function pgBin(name: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (r.stdout.trim()) return r.stdout.trim();
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const v of versions) if (existsSync(join(base, v, 'bin', name))) return join(base, v, 'bin', name);
  throw new Error(`${name} not found: the chaos suite needs PostgreSQL's server binaries (initdb, pg_ctl)`);
}

export class PrivateCluster {
  private constructor(
    readonly base: string,
    readonly port: number,
  ) {}

  get data(): string {
    return join(this.base, 'data');
  }

  /** A password-bearing URL for database `db`. */
  url(db = 'postgres'): string {
    return `postgres://postgres:${CHAOS_PASSWORD}@127.0.0.1:${this.port}/${encodeURIComponent(db)}`;
  }

  static async start(): Promise<PrivateCluster> {
    const base = mkdtempSync(join(tmpdir(), 'tidemark-chaos-pg-'));
    const cluster = new PrivateCluster(base, await freePort());
    const asRoot = userInfo().uid === 0;
    if (asRoot) chownSync(base, Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()), 0);
    const pwfile = join(base, 'pwfile');
    writeFileSync(pwfile, `${CHAOS_PASSWORD}\n`, { mode: 0o644 });
    cluster.run(pgBin('initdb'), [
      '-D',
      cluster.data,
      '-U',
      'postgres',
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      `--pwfile=${pwfile}`,
      '-E',
      'UTF8',
    ]);
    rmSync(pwfile);
    cluster.pgCtl([
      'start',
      '-w',
      '-t',
      '120',
      '-l',
      join(base, 'server.log'),
      '-o',
      `-p ${cluster.port} -k ${base} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off`,
    ]);
    return cluster;
  }

  private run(cmd: string, args: string[]): void {
    if (userInfo().uid === 0) execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'ignore' });
    else execFileSync(cmd, args, { stdio: 'ignore' });
  }

  private pgCtl(args: string[]): void {
    this.run(pgBin('pg_ctl'), ['-D', this.data, ...args]);
  }

  /** Restarts the server (`fast`: sessions are told to end; `immediate`: no shutdown checkpoint, crash recovery). */
  async restart(mode: 'fast' | 'immediate'): Promise<void> {
    const args = ['-D', this.data, 'restart', '-w', '-t', '120', '-m', mode, '-l', join(this.base, 'server.log')];
    const [cmd, argv] =
      userInfo().uid === 0 ? ['runuser', ['-u', 'postgres', '--', pgBin('pg_ctl'), ...args]] : [pgBin('pg_ctl'), args];
    // Asynchronous, so the writer keeps writing (and failing) while the server is down.
    await new Promise<void>((resolve, reject) => {
      const child = spawn(cmd as string, argv as string[], { stdio: 'ignore' });
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pg_ctl restart exited ${code}`))));
    });
  }

  stop(): void {
    try {
      this.pgCtl(['stop', '-w', '-m', 'immediate']);
    } catch {
      // already down
    }
    rmSync(this.base, { recursive: true, force: true });
  }

  async query<T = Record<string, unknown>>(db: string, sql: string, values?: unknown[]): Promise<T[]> {
    const c = new Client({ connectionString: this.url(db), application_name: 'chaos-check' });
    await c.connect();
    try {
      return (await c.query(sql, values)).rows as T[];
    } finally {
      await c.end();
    }
  }

  async recreate(db: string): Promise<void> {
    await this.query(
      'postgres',
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [db],
    );
    await this.query('postgres', `DROP DATABASE IF EXISTS ${quoteIdent(db)}`);
    await this.query('postgres', `CREATE DATABASE ${quoteIdent(db)}`);
    await this.query('postgres', `COMMENT ON DATABASE ${quoteIdent(db)} IS ${quoteLiteral('tidemark chaos run')}`);
  }
}
