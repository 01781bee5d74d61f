// abort --restore-backup: which tables it puts back and what it says. With a dump of the whole database, the tables a
// schema step changed come back too (here a dropped column's values), and a table referencing a restored one comes
// along (TRUNCATE must empty them together); with a dump of some tables only, a table outside it that references one
// in it makes the restore impossible, which is said before anything is emptied. Either way the counts are reported.
import { loadPlan } from '../../src/plan/load';
import { allTableContents } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { tempDir, writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

async function requestsDb(tag: string): Promise<TestDb> {
  const db = await h.db(tag);
  await db.query(`
    CREATE TABLE requests (id int PRIMARY KEY, title text NOT NULL);
    CREATE TABLE request_votes (id int PRIMARY KEY, request_id int NOT NULL REFERENCES requests (id) ON DELETE CASCADE);
    CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, legacy_sku text);
    INSERT INTO requests SELECT g, 'song ' || g FROM generate_series(1, 300) g;
    INSERT INTO request_votes SELECT g, 1 + g % 300 FROM generate_series(1, 900) g;
    INSERT INTO products SELECT g, 'SKU-' || g, 'L' || g FROM generate_series(1, 500) g;`);
  return db;
}

/** A schema-only plan that waits an hour before its cleanup: aborted there, every step is undone first. */
function stepPlan(db: TestDb, up: string, down: string, backupTables?: string[]) {
  return loadPlan(
    writePlan(
      {
        name: `restore-${db.name.slice(-8).replace(/_/g, '-')}`,
        database: { urlEnv: db.urlEnv },
        backup: { dir: tempDir('tidemark-backup-'), ...(backupTables ? { tables: backupTables } : {}) },
        schema: [{ id: '001_step', up: 'up.sql', down: 'down.sql' }],
        cleanup: { after: '1h' },
      },
      { 'up.sql': up, 'down.sql': down },
    ),
  );
}

const inCleanup = (workflowId: string) =>
  eventually(async () => (await h.client.status(workflowId)).phase === 'cleanup' || undefined, 'the cleanup wait');

test('a whole-database dump: the tables the steps changed come back, with the tables that reference them', async () => {
  const db = await requestsDb('restorewhole');
  const before = await allTableContents(db);
  const plan = stepPlan(
    db,
    `ALTER TABLE products DROP COLUMN legacy_sku; UPDATE requests SET title = upper(title) WHERE id <= 100;`,
    `ALTER TABLE products ADD COLUMN legacy_sku text;`,
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await inCleanup(workflowId);
  // Written after the backup: gone with the restore, and counted.
  await db.query(`INSERT INTO request_votes VALUES (901, 5)`);
  await h.client.abort(workflowId, { reason: 'bad release', restoreBackup: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(await allTableContents(db)).toEqual(before);
  expect(final.events.map((e) => e.message)).toContainEqual(
    'backup restored into products, requests, request_votes, with request_votes (it references requests); ' +
      'rows before → after: products 500 → 500, requests 300 → 300, request_votes 901 → 900 ' +
      '(what was written to these tables after the backup is gone)',
  );
});

test('a dump of some tables: one outside it referencing one in it stops the restore before anything is emptied', async () => {
  const db = await requestsDb('restoresome');
  const plan = stepPlan(db, `UPDATE requests SET title = upper(title);`, `SELECT 1;`, ['requests']);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await inCleanup(workflowId);
  const changed = await allTableContents(db);
  await h.client.abort(workflowId, { reason: 'bad release', restoreBackup: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('failed');
  expect(final.error).toMatch(
    /cannot restore requests: request_votes references it and is not in backup\.tables .*Nothing was restored/,
  );
  expect(await allTableContents(db)).toEqual(changed);
});

test('nothing to restore is a failure that names the dump, not a success', async () => {
  const db = await requestsDb('restorenone');
  const plan = stepPlan(db, `CREATE TABLE audit (id int PRIMARY KEY);`, `DROP TABLE audit;`);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await inCleanup(workflowId);
  await h.client.abort(workflowId, { reason: 'bad release', restoreBackup: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('failed');
  expect(final.error).toMatch(/restoring the backup: nothing to restore .*the dump is \/.*\.dump/);
});
