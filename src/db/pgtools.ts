// Finds the PostgreSQL client programs (pg_dump, pg_restore, psql) and runs them with credentials in the environment,
// never on the command line.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { parse as parseConnectionString } from 'pg-connection-string';

export type PgTool = 'pg_dump' | 'pg_restore' | 'psql';

/** Where to look for a program: $TIDEMARK_PG_BIN, then PATH, then Debian's versioned directories (newest first). */
export function findPgTool(tool: PgTool, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs: string[] = [];
  if (env.TIDEMARK_PG_BIN) dirs.push(env.TIDEMARK_PG_BIN);
  dirs.push(...(env.PATH ?? '').split(delimiter).filter(Boolean));
  try {
    const versions = readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    dirs.push(...versions.map((v) => `/usr/lib/postgresql/${v}/bin`));
  } catch {
    // no Debian layout
  }
  for (const d of dirs) {
    const p = join(d, tool);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** libpq environment variables for a connection string, so child programs never see the password in argv. */
export function libpqEnv(url: string): Record<string, string> {
  const c = parseConnectionString(url);
  const env: Record<string, string> = {};
  if (c.host) env.PGHOST = c.host;
  if (c.port) env.PGPORT = String(c.port);
  if (c.user) env.PGUSER = c.user;
  if (c.password) env.PGPASSWORD = c.password;
  if (c.database) env.PGDATABASE = c.database;
  const ssl = (c as { sslmode?: string }).sslmode;
  if (ssl) env.PGSSLMODE = ssl;
  env.PGAPPNAME = 'tidemark';
  return env;
}

export function databaseName(url: string): string {
  return parseConnectionString(url).database ?? '';
}

/** `pg_dump (PostgreSQL) 15.20` → 15; undefined when the program cannot run. */
export function toolMajorVersion(path: string): Promise<{ major: number; text: string } | undefined> {
  return new Promise((resolve) => {
    execFile(path, ['--version'], { timeout: 10_000 }, (err, stdout) => {
      if (err) return resolve(undefined);
      const m = /(\d+)(?:\.(\d+))?/.exec(stdout);
      resolve(m ? { major: Number(m[1]), text: stdout.trim() } : undefined);
    });
  });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program with extra environment; stderr lines are passed to onStderrLine as they come (for progress). */
export function runTool(
  path: string,
  args: string[],
  opts: {
    env: Record<string, string>;
    onStderrLine?: (line: string) => void;
    stdin?: NodeJS.ReadableStream;
    signal?: AbortSignal;
    captureStdout?: boolean;
  },
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, {
      env: { ...process.env, ...opts.env },
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      signal: opts.signal,
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout!.on('data', (d: Buffer) => {
      if (opts.captureStdout !== false) stdout += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString();
      stderr += text;
      if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
      partial += text;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) opts.onStderrLine?.(l);
    });
    if (opts.stdin) {
      // A program that stops reading (psql exiting on an error) breaks the pipe: its exit code says what went wrong,
      // and an unhandled EPIPE here would take the whole worker down.
      child.stdin!.on('error', () => undefined);
      opts.stdin.pipe(child.stdin!);
    }
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
