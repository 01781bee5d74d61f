// Runs a local Temporal dev server (with the Web UI) for `tidemark dev`, the demo and the tests, with tidemark's
// search attributes registered and, optionally, its state kept in a file so past runs survive a restart.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { dirname } from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from '../migration/search-attributes';
import { temporalCli } from './tools';

export interface DevServer {
  address: string;
  uiUrl: string | null;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  port?: number;
  uiPort?: number;
  /** Keep state in this SQLite file (survives restarts); default: in memory. */
  dbFile?: string;
  headless?: boolean;
  namespace?: string;
  /** Server dynamic config values (`--dynamic-config-value KEY=JSON`). */
  dynamicConfig?: Record<string, unknown>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export function portOpen(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs);
    s.once('connect', () => done(true));
    s.once('timeout', () => done(false));
    s.once('error', () => done(false));
    s.connect(port, host);
  });
}

/** Waits until a Temporal frontend answers at `address`. */
export async function waitForTemporal(
  address: string,
  timeoutMs = 60_000,
  gaveUp: () => boolean = () => false,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline && !gaveUp()) {
    try {
      const conn = await Connection.connect({ address, connectTimeout: 2000 });
      try {
        await conn.workflowService.getSystemInfo({});
        return;
      } finally {
        await conn.close();
      }
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  throw new Error(`Temporal did not answer at ${address} within ${timeoutMs / 1000}s: ${(last as Error)?.message}`);
}

/** What a dev server that exited said: its panic or error line and what follows, else its last lines. */
export function exitReason(stderr: string, code: number | null): string {
  const lines = stderr.trim().split('\n');
  const at = lines.findIndex((l) => /\bpanic\b|\b(error|fatal)\b/i.test(l));
  const said = (at >= 0 ? lines.slice(at, at + 6) : lines.slice(-6)).join(' | ');
  return `exit code ${code}${said ? `: ${said}` : ''}`;
}

/**
 * Starts a dev server; when it exits before it answers (a port another process took in between, or state the last
 * process is still letting go of), it tries again, up to three times, and says what each attempt said.
 */
export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const failures: string[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    if (attempt > 1) {
      process.stderr.write(`tidemark: the Temporal dev server exited at start (${failures.at(-1)}); trying again\n`);
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
    // Ports not given are picked again on each attempt: another process may have taken the last pick.
    const port = opts.port ?? (await freePort());
    const uiPort = opts.headless ? undefined : (opts.uiPort ?? (await freePort()));
    const address = `127.0.0.1:${port}`;
    const args = [
      'server',
      'start-dev',
      '--ip',
      '127.0.0.1',
      '--port',
      String(port),
      '--log-level',
      'error',
      '--namespace',
      opts.namespace ?? 'default',
    ];
    if (uiPort) args.push('--ui-port', String(uiPort));
    else args.push('--headless');
    if (opts.dbFile) {
      mkdirSync(dirname(opts.dbFile), { recursive: true });
      args.push('--db-filename', opts.dbFile);
    }
    for (const sa of SEARCH_ATTRIBUTES) args.push('--search-attribute', `${sa.name}=Keyword`);
    for (const [k, v] of Object.entries(opts.dynamicConfig ?? {}))
      args.push('--dynamic-config-value', `${k}=${JSON.stringify(v)}`);
    const child = spawn(temporalCli(), args, { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-20_000);
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const gone = () => child.exitCode !== null || child.signalCode !== null;
    const ready = waitForTemporal(address, 60_000, gone).then(
      () => 'ready' as const,
      (e: Error) => e,
    );
    const first = await Promise.race([ready, exited.then(() => 'exited' as const)]);
    if (first instanceof Error) {
      child.kill('SIGKILL');
      throw first;
    }
    if (first === 'exited') {
      failures.push(exitReason(stderr, child.exitCode));
      continue;
    }
    return {
      address,
      uiUrl: uiPort ? `http://localhost:${uiPort}` : null,
      process: child,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      },
    };
  }
  throw new Error(`the Temporal dev server exited at start, ${failures.length} times: ${failures.join('; ')}`);
}

/** Registers tidemark's search attributes on a server that was not started with them (idempotent). */
export async function ensureSearchAttributes(address: string, namespace: string): Promise<void> {
  const conn = await Connection.connect({ address });
  try {
    const have = await conn.operatorService.listSearchAttributes({ namespace });
    const missing = SEARCH_ATTRIBUTES.filter((sa) => !(sa.name in (have.customAttributes ?? {})));
    if (!missing.length) return;
    await conn.operatorService.addSearchAttributes({
      namespace,
      // 2 = INDEXED_VALUE_TYPE_KEYWORD
      searchAttributes: Object.fromEntries(missing.map((sa) => [sa.name, 2])),
    });
  } finally {
    await conn.close();
  }
}
