// A private PostgreSQL cluster the chaos suite may restart at will (src/infra/postgres.ts's PrivateCluster): its own
// data directory under a temporary directory, its own port, password authentication over TCP (so the URL every
// component uses carries a secret), trust only on its Unix socket.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { quoteIdent, quoteLiteral } from '../../src/db/quote';
import { freePort } from '../../src/infra/devserver';
import { PrivateCluster, withDatabase } from '../../src/infra/postgres';

export const CHAOS_PASSWORD = 's3cr3t-chaos';

export class ChaosCluster {
  private constructor(private readonly server: PrivateCluster) {}

  get port(): number {
    return this.server.opts.port;
  }

  /** A password-bearing URL for database `db`. */
  url(db = 'postgres'): string {
    return withDatabase(this.server.adminUrl, db);
  }

  static async start(): Promise<ChaosCluster> {
    const server = new PrivateCluster({
      dir: mkdtempSync(join(tmpdir(), 'tidemark-chaos-pg-')),
      port: await freePort(),
      password: CHAOS_PASSWORD,
      settings: { max_connections: '200', fsync: 'off' },
    });
    return new ChaosCluster(server.start());
  }

  /** Restarts the server (`fast`: sessions are told to end; `immediate`: no shutdown checkpoint, crash recovery). */
  restart(mode: 'fast' | 'immediate'): Promise<void> {
    return this.server.restart(mode);
  }

  stop(): void {
    try {
      this.server.stop('immediate');
    } catch {
      // already down
    }
    rmSync(this.server.opts.dir, { recursive: true, force: true });
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
