// Connection pools keyed by the environment variable that names the database, so no URL ever leaves the worker.
import { Client, Pool, type PoolConfig } from 'pg';
import { parse } from 'pg-connection-string';
import { registerSecret } from '../secrets';
import { PINNED_SETTINGS } from './settings';

export class MissingDatabaseUrlError extends Error {
  constructor(public readonly envVar: string) {
    super(`environment variable ${envVar} is not set on the worker; it must hold the database connection string`);
    this.name = 'MissingDatabaseUrlError';
  }
}

/** The libpq `options` startup string for settings (spaces and backslashes escaped). */
function startupOptions(settings: Record<string, string>): string {
  return Object.entries(settings)
    .map(([k, v]) => `-c ${k}=${v.replace(/\\/g, '\\\\').replace(/ /g, '\\ ')}`)
    .join(' ');
}

/** Pool settings for a connection string, with tidemark's own name and pinned session settings. */
export function poolConfig(url: string, max: number): PoolConfig {
  const parsed = parse(url) as PoolConfig & { options?: string };
  return { ...parsed, max, application_name: 'tidemark', options: startupOptions(PINNED_SETTINGS) };
}

export class PoolRegistry {
  private readonly pools = new Map<string, Pool>();

  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly max = 10,
  ) {}

  /** The connection string held by `envVar`; throws a clear error when it is unset. */
  url(envVar: string): string {
    const url = this.env[envVar];
    if (!url) throw new MissingDatabaseUrlError(envVar);
    registerSecret(url);
    return url;
  }

  /** Called with each database asked for (activity-kit: which databases the running attempt uses). */
  onUse?: (envVar: string) => void;

  get(envVar: string): Pool {
    this.onUse?.(envVar);
    let pool = this.pools.get(envVar);
    if (!pool) {
      pool = new Pool(poolConfig(this.url(envVar), this.max));
      // A connection lost while its client sits idle in the pool: the pool drops it, the next query connects anew.
      pool.on('error', () => undefined);
      // A connection lost while a client is checked out (between two batches, say) is reported on the client: without
      // a listener that 'error' event would crash the worker. Its next query fails, which fails the current attempt,
      // and the client is destroyed on release (see breaksClient).
      pool.on('connect', (client) => client.on('error', () => undefined));
      this.pools.set(envVar, pool);
    }
    return pool;
  }

  /**
   * The databases this worker has used (or of them, `only`) that do not answer now: each is tried on a new connection
   * (not one of the pool's, which may be stale), giving up after `timeoutMs`.
   */
  async unreachable(timeoutMs = 5000, only?: ReadonlySet<string>): Promise<string[]> {
    const down: string[] = [];
    await Promise.all(
      [...this.pools.keys()]
        .filter((envVar) => !only || only.has(envVar))
        .map(async (envVar) => {
          const c = new Client({ ...poolConfig(this.url(envVar), 1), connectionTimeoutMillis: timeoutMs });
          c.on('error', () => undefined);
          try {
            await c.connect();
            await c.query('SELECT 1');
          } catch {
            down.push(envVar);
          } finally {
            await c.end().catch(() => undefined);
          }
        }),
    );
    return down;
  }

  async closeAll(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  }
}
