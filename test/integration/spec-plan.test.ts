// The plan of SPEC §2, as a user would run it: a `tidemark worker` process, then `tidemark start --auto-approve
// --watch`. The target ends up matching its source through the mapping.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { exceptBothWays, flagPercent } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { tempDir, writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

const SPEC_PLAN = (backupDir: string) => `
name: orders-v2
database:
  urlEnv: DATABASE_URL
approvals: [schema, cleanup]
approvalTimeout: 24h
lockTimeout: 2s
backup:
  dir: ${backupDir}
  tables: [orders]
preflight:
  maxActiveConnections: 200
  checks:
    - name: orphaned order items
      sql: SELECT count(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL
      severity: warn
schema:
  - id: 001_create_orders_v2
    up: sql/001_create_orders_v2.up.sql
    down: sql/001_create_orders_v2.down.sql
    transactional: true
copy:
  - name: orders
    from: orders
    to: orders_v2
    key: id
    columns:
      id: id
      customer_id: customer_id
      amount: amount_cents / 100.0
      created_at: created_at
    reverse:
      amount_cents: (amount * 100)::bigint
    sync: bidirectional
    batchSize: 5000
    targetBatchMs: 200
    impact: { maxLatencyIncrease: 25% }   # from SPEC's additions to the plan
validate:
  - rowCount: { copy: orders }
  - checksum: { copy: orders }
  - sql: { name: no negative amounts, query: "SELECT count(*) FROM orders_v2 WHERE amount < 0", expect: 0 }
traffic:
  flag: use_orders_v2
  stages:
    - { percent: 10, soak: 1s }
    - { percent: 50, soak: 1s, approval: true }
    - { percent: 100, soak: 1s }
  gates:
    - name: error rate
      sql: SELECT errors::float / greatest(requests, 1) FROM app_metrics_last_minute
      max: 0.05
      interval: 300ms
      failureLimit: 2
cleanup:
  after: 1s
  archive: [orders]
  sql: sql/cleanup.sql
`;

test('the SPEC §2 plan runs through `tidemark start --auto-approve` and its target matches its source', async () => {
  const db = await h.db('specplan');
  await db.query(`
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, amount_cents bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL, sku text NOT NULL);
    INSERT INTO orders (customer_id, amount_cents, created_at) SELECT g % 500, (g * 7919) % 100000, timestamptz '2025-06-01' + g * interval '1 minute' FROM generate_series(1, 25000) g;
    INSERT INTO order_items (order_id, sku) SELECT 1 + g % 25000, 'sku-' || g FROM generate_series(1, 50000) g;
    CREATE TABLE app_metrics_last_minute (requests bigint, errors bigint);
    INSERT INTO app_metrics_last_minute VALUES (1000, 3);`);
  const file = writePlan(SPEC_PLAN(tempDir('tidemark-backups-')), {
    'sql/001_create_orders_v2.up.sql': `CREATE TABLE orders_v2 (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL);`,
    'sql/001_create_orders_v2.down.sql': 'DROP TABLE IF EXISTS orders_v2;',
    'sql/cleanup.sql': `COMMENT ON TABLE orders_v2 IS 'orders, since the v2 migration';`,
  });
  const env = {
    DATABASE_URL: db.url,
    TIDEMARK_TASK_QUEUE: h.taskQueue,
    TEMPORAL_ADDRESS: h.client.address,
    LOG_LEVEL: 'warn',
  };
  const worker = spawn(process.execPath, [join(__dirname, '..', '..', 'bin', 'tidemark'), 'worker'], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
  });
  try {
    await eventually(() => h.client.hasWorkers(), 'the worker to poll');
    const r = await runCli(['start', file, '--auto-approve', '--watch'], env, 180_000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('migration orders-v2 (tidemark-orders-v2): COMPLETED');
  } finally {
    await new Promise((resolve) => {
      worker.once('exit', resolve);
      worker.kill('SIGTERM');
    });
  }
  // With no worker left, status still reads the finished migration (from its result).
  const after = await runCli(['status', 'orders-v2', '--json'], env);
  expect(after.code).toBe(0);
  expect(JSON.parse(after.stdout)).toMatchObject({ plan: 'orders-v2', state: 'completed', traffic: { percent: 100 } });
  expect(
    await exceptBothWays(
      db,
      'SELECT id, customer_id, (amount_cents / 100.0)::numeric(12,2), created_at FROM tidemark_archive.orders',
      'SELECT id, customer_id, amount, created_at FROM orders_v2',
    ),
  ).toEqual({ onlyInA: 0, onlyInB: 0 });
  expect(await flagPercent(db, 'use_orders_v2')).toBe(100);
  const [{ comment }] = await db.query<{ comment: string }>(`SELECT obj_description('orders_v2'::regclass) AS comment`);
  expect(comment).toBe('orders, since the v2 migration');
});
