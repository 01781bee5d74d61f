// Keys at the ends of their type: the key before the lowest one does not exist in a bigint (or an integer) whose
// lowest row sits at -2^63 (-2^31), so no batch, range or chunk may name it. The table is copied, checksummed and
// synced (both ways) like any other.
import { loadPlan } from '../../src/plan/load';
import { eventOf, Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

test.each([
  ['bigint', '-9223372036854775808', '9223372036854775807'],
  ['integer', '-2147483648', '2147483647'],
])('a key of type %s at its lowest and highest value: copied, validated and synced', async (type, min, max) => {
  const db = await h.db(`extremes_${type}`);
  await db.query(`CREATE TABLE m (id ${type} PRIMARY KEY, v text NOT NULL);
    CREATE TABLE m_v2 (id ${type} PRIMARY KEY, v text NOT NULL);
    INSERT INTO m VALUES (${min}, 'min'), (${max}, 'max');
    INSERT INTO m SELECT i, 'v' || i FROM generate_series(-2000, 2000) i`);
  const plan = loadPlan(
    writePlan(
      {
        name: `key-extremes-${type}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'm', from: 'm', to: 'm_v2', key: 'id', sync: 'bidirectional', batchSize: 500, parallel: 2 }],
        validate: [{ rowCount: { copy: 'm' } }, { checksum: { copy: 'm', chunkSize: 1000 } }],
        traffic: { flag: 'm_v2', stages: [{ percent: 100, soak: '1h' }] },
        cleanup: {},
      },
      { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventOf(h.client, workflowId, /^phase validate completed$/);
  await db.query(`DELETE FROM m WHERE id = ${min}; UPDATE m SET v = 'top' WHERE id = ${max}`);
  expect(await db.query(`SELECT id::text, v FROM m_v2 WHERE id IN (${min}, ${max}) ORDER BY id`)).toEqual([
    { id: max, v: 'top' },
  ]);
  const [{ n }] = await db.query<{ n: number }>(
    `SELECT (SELECT count(*) FROM (TABLE m EXCEPT TABLE m_v2) a)::int + (SELECT count(*) FROM (TABLE m_v2 EXCEPT TABLE m) b)::int AS n`,
  );
  expect(n).toBe(0);
  await h.client.abort(workflowId, { reason: 'test over' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
});
