// One audited copy of each script: history does not grow with SQL size however many activities need the script, and
// a plan too big for a workflow's input is refused at start with the limit named.
import { execFileSync } from 'node:child_process';
import { temporalCli } from '../../src/infra/tools';
import { loadPlan } from '../../src/plan/load';
import { runCli } from '../helpers/cli';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** A schema step inserting `rows` rows, one INSERT statement per row (a data load written as SQL). */
function bigStep(rows: number): string {
  const lines = ['CREATE TABLE lookup (id int PRIMARY KEY, label text NOT NULL);'];
  for (let i = 1; i <= rows; i++)
    lines.push(`INSERT INTO lookup VALUES (${i}, 'label number ${i} of the lookup table');`);
  return lines.join('\n') + '\n';
}

test('a 350 KB script rides in history twice (the start and preflight), not once per activity', async () => {
  const db = await h.db('bigsql');
  const up = bigStep(5500);
  expect(up.length).toBeGreaterThan(350_000);
  const plan = loadPlan(
    writePlan(
      {
        name: 'big-script',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [
          { id: '001_lookup', up: 'up.sql', down: 'down.sql' },
          { id: '002_index', up: 'up2.sql', down: 'down2.sql' },
        ],
      },
      {
        'up.sql': up,
        'down.sql': 'DROP TABLE lookup;',
        'up2.sql': 'CREATE INDEX lookup_label ON lookup (label);',
        'down2.sql': 'DROP INDEX lookup_label;',
      },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('completed');
  expect(await db.query(`SELECT count(*)::int AS n FROM lookup`)).toEqual([{ n: 5500 }]);
  const history = execFileSync(
    temporalCli(),
    ['workflow', 'show', '--address', h.client.address, '--workflow-id', workflowId, '--output', 'json'],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  // The script is base64 in the JSON (4/3 of its size): two copies and change, whatever the number of events.
  expect(history.length).toBeLessThan((2 * (up.length * 4)) / 3 + 150_000);
  // The scripts are kept with the migration, by sha256.
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tidemark.scripts WHERE sql = $1`, [up]);
  expect(n).toBe(1);
});

test('a plan too big for a workflow input is refused at start, naming the limit', async () => {
  const db = await h.db('hugesql');
  const file = writePlan(
    {
      name: 'huge-script',
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      schema: [{ id: '001_lookup', up: 'up.sql', down: 'down.sql' }],
    },
    { 'up.sql': bigStep(56_000), 'down.sql': 'DROP TABLE lookup;' },
  );
  const r = await runCli(['start', file, '--auto-approve'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(r.code).toBe(2);
  expect(r.stderr.trim()).toMatch(
    /^error: plan huge-script with its SQL files is \d\.\d MB; a workflow's input holds at most 1\.8 MB \(Temporal's payload limit, limit\.blobSize\.error\)/,
  );
  expect(r.stdout).toBe('');
});
