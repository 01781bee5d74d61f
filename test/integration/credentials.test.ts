// No credential from any urlEnv reaches workflow history, status, events, the CLI's output or the worker's log: the
// database URL, a gate's second database, an HTTP gate and a Prometheus gate all carry user:password@ here, one gate
// fails (its error would quote its URL), and everything tidemark wrote is searched for the passwords.
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { temporalCli } from '../../src/infra/tools';
import { freePort } from '../../src/infra/devserver';
import { runCli } from '../helpers/cli';
import { eventually, Harness } from '../helpers/env';
import { tempDir, writePlan } from '../helpers/plans';
import { killed, workerProcess } from '../helpers/worker-process';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

const SECRETS = ['S3cretDbPass', 'S3cretGateDbPass', 'S3cretHttpPass', 'S3cretPromPass'];

function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

test('credentialed URLs in every urlEnv never show up in history, status, CLI output or logs', async () => {
  const db = await h.db('creds');
  await db.query(`CREATE TABLE orders (id bigint PRIMARY KEY, total numeric); INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g;
                  CREATE TABLE app_metrics (error_rate float8); INSERT INTO app_metrics VALUES (0.001);`);
  // An HTTP health endpoint that answers only with the right Basic credentials.
  let authorized = 0;
  const server: Server = createServer((req, res) => {
    const ok = req.headers.authorization === `Basic ${Buffer.from('probe:S3cretHttpPass').toString('base64')}`;
    if (ok) authorized++;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ checks: { errorRate: 0.001 } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const httpPort = (server.address() as { port: number }).port;
  const closedPort = await freePort();
  const env = {
    APP_DB: withPassword(db.url, 'S3cretDbPass'),
    METRICS_DB: withPassword(db.url, 'S3cretGateDbPass'),
    HEALTH_URL: `http://probe:S3cretHttpPass@127.0.0.1:${httpPort}/health`,
    PROM_URL: `http://prom:S3cretPromPass@127.0.0.1:${closedPort}`,
  };
  const file = writePlan(
    {
      name: 'creds-orders',
      database: { urlEnv: 'APP_DB' },
      backup: { dir: tempDir('tidemark-backup-') },
      schema: [{ id: '001_orders_v2', up: 'up.sql', down: 'down.sql' }],
      copy: [{ name: 'orders', from: 'orders', to: 'orders_v2', key: 'id', sync: 'bidirectional' }],
      traffic: {
        flag: 'use_orders_v2',
        stages: [{ percent: 100, soak: '10m' }],
        gates: [
          {
            name: 'db errors',
            sql: 'SELECT error_rate FROM app_metrics',
            database: { urlEnv: 'METRICS_DB' },
            max: 0.05,
            interval: '200ms',
          },
          { name: 'health', http: { urlEnv: 'HEALTH_URL', field: 'checks.errorRate' }, max: 0.05, interval: '200ms' },
          { name: 'p99', prometheus: { urlEnv: 'PROM_URL', query: 'up' }, max: 1, interval: '200ms' },
        ],
      },
    },
    {
      'up.sql': 'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric);',
      'down.sql': 'DROP TABLE orders_v2;',
    },
  );
  const log = { text: '' };
  const worker = workerProcess(h.client.address, h.taskQueue, { ...env, LOG_LEVEL: 'debug' }, log);
  const cliEnv = { ...env, TIDEMARK_TASK_QUEUE: h.taskQueue };
  const outputs: string[] = [];
  try {
    const started = await runCli(['start', file, '--auto-approve'], cliEnv);
    outputs.push(started.stdout, started.stderr);
    expect(started.code).toBe(0);
    // The Prometheus gate cannot be reached: the rollout pauses with the reason (which would quote its URL).
    const paused = await eventually(async () => {
      const s = await h.client.status('creds-orders');
      return s.state === 'paused' ? s : undefined;
    }, 'the rollout to pause on the unreadable gate');
    expect(paused.paused?.reason).toMatch(/^gate "p99" could not be read: fetch failed/);
    expect(paused.traffic?.gates.find((g) => g.gate === 'health')).toMatchObject({ ok: true, value: 0.001 });
    expect(paused.traffic?.gates.find((g) => g.gate === 'db errors')).toMatchObject({ ok: true, value: 0.001 });
    expect(authorized).toBeGreaterThan(0);
    for (const args of [['status', 'creds-orders'], ['status', 'creds-orders', '--json'], ['list']]) {
      const r = await runCli(args, cliEnv);
      outputs.push(r.stdout, r.stderr);
    }
    const aborted = await runCli(['abort', 'creds-orders', '--reason', 'done'], cliEnv);
    outputs.push(aborted.stdout, aborted.stderr);
    expect(aborted.code).toBe(0);
    const history = execFileSync(
      temporalCli(),
      ['workflow', 'show', '--address', h.client.address, '--workflow-id', 'tidemark-creds-orders', '--output', 'json'],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const reports = JSON.stringify(await db.query(`SELECT * FROM tidemark.reports`));
    const everything = [history, reports, log.text, ...outputs].join('\n');
    expect(everything).toContain('gate "p99" could not be read');
    expect(log.text.length).toBeGreaterThan(0);
    for (const secret of SECRETS)
      expect({ secret, found: everything.includes(secret) }).toEqual({ secret, found: false });
  } finally {
    await killed(worker, 'SIGTERM');
    server.close();
  }
});
