// Blue-green: the copy across databases reads the source without locking it, so every race between a batch and the
// application must come out right. Batches in two ranges run while writers update, delete, re-insert and move keys
// all over the table (ahead of the copy, inside the batch being copied, behind it); each row is written twice, so a
// row a batch got wrong is not mended by a later write. Once the log is applied, green must equal blue through the
// mapping, row for row.
import { Pool } from 'pg';
import { copyFormat } from '../../src/phases/copy/across';
import { resolveMapping } from '../../src/phases/copy/mapping';
import type { PrivateCluster } from '../../src/infra/postgres';
import { loadPlan } from '../../src/plan/load';
import { exceptAcross, leftovers, removeCluster, startPrivateCluster } from '../helpers/blue-green';
import { eventually, Harness, StopWaiting } from '../helpers/env';
import { LOOSE_BUDGET_IN_PLAN, writePlan } from '../helpers/plans';

const h = new Harness();
let logicalCluster: PrivateCluster | undefined;
beforeAll(() => h.start());
afterAll(async () => {
  await h.stop();
  removeCluster(logicalCluster);
});

/** A private server with wal_level = logical, started on first use: there the copy is captured by logical decoding. */
async function logicalServer(): Promise<string> {
  logicalCluster ??= await startPrivateCluster('logical');
  return logicalCluster.adminUrl;
}

const ROWS = 30_000;

/** Writes of every kind, as fast as they go, each acknowledged one timed. */
class Churn {
  readonly acknowledged: number[] = [];
  private running = true;
  private readonly pool: Pool;
  private readonly loops: Promise<void>[];

  /** `composite`: the table's key is (tenant, id), the tenant text. */
  constructor(url: string, loops: number, composite: boolean) {
    const tenant = (v: string) => (composite ? `'t' || (${v} % 3), ` : '');
    const tenantCol = composite ? 'tenant, ' : '';
    this.pool = new Pool({ connectionString: url, max: loops });
    this.loops = Array.from({ length: loops }, async (_, loop) => {
      let seed = 7 + loop;
      const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
      let fresh = 1_000_000 + loop;
      const next = () => (fresh += loops);
      // Each row is written twice, in a shuffled order: the first write gets it onto green ahead of the copy, the
      // second may race the batch that copies it, and nothing later would mend a row that batch got wrong. Loop
      // `loop` owns the rows ≡ loop (mod loops).
      const order: number[] = [];
      for (let id = 1 + loop; id <= ROWS; id += loops) order.push(id, id);
      for (let i = order.length - 1; i > 0; i--) {
        const j = rnd(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (const id of order) {
        if (!this.running) break;
        const op = rnd(10);
        if (op < 4)
          await this.pool.query(`UPDATE ledger SET amount = amount + 1, note = $2 WHERE id = $1`, [id, `u${op}`]);
        else if (op < 6) await this.pool.query(`DELETE FROM ledger WHERE id = $1`, [id]);
        else if (op < 7)
          // Back inside the copied range: a key deleted before may come back.
          await this.pool.query(
            `INSERT INTO ledger (${tenantCol}id, account, amount, note) VALUES (${tenant('$1')}$1, $2, 5, 'back')
             ON CONFLICT (${tenantCol}id) DO UPDATE SET note = 'again'`,
            [id, id % 97],
          );
        else if (op < 8) await this.pool.query(`UPDATE ledger SET id = $2 WHERE id = $1`, [id, next()]);
        else
          await this.pool.query(
            `INSERT INTO ledger (${tenantCol}id, account, amount, note) VALUES (${tenant('$1')}$1, 1, 1, 'new')`,
            [next()],
          );
        this.acknowledged.push(Date.now());
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    await this.pool.end();
  }
}

describe.each([
  { shape: 'a bigint key', composite: false, logical: false },
  { shape: 'a composite key with a text part', composite: true, logical: false },
  { shape: 'a composite key, captured by logical decoding', composite: true, logical: true },
])('$shape', ({ composite, logical }) => {
  const tenantCol = composite ? 'tenant, ' : '';
  const key = composite
    ? 'tenant text NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant, id)'
    : 'id bigint PRIMARY KEY';
  test('batches copied while writers change every part of the table: green equals blue through the mapping', async () => {
    const blue = await h.db(`bgcopy_blue${composite ? '_ck' : ''}`, logical ? await logicalServer() : undefined);
    const green = await h.db(`bgcopy_green${composite ? '_ck' : ''}`);
    // Every 50th row carries a value large enough to be stored out of line (TOASTed), which the writers never touch:
    // logical decoding does not send it with an update of the row's other columns.
    await blue.query(`CREATE TABLE ledger (${key}, account integer NOT NULL, amount bigint NOT NULL, note text, blob text);
    INSERT INTO ledger (${tenantCol}id, account, amount, note, blob)
      SELECT ${composite ? "'t' || (i % 3), " : ''}i, i % 97, i * 3, 'seed ' || i,
             CASE WHEN i % 50 = 0 THEN (SELECT string_agg(md5(i::text || j), '') FROM generate_series(1, 300) j) END
        FROM generate_series(1, ${ROWS}) i`);
    const plan = loadPlan(
      writePlan(
        {
          name: `copy-race-${blue.name.replace(/_/g, '-')}`,
          database: { urlEnv: blue.urlEnv },
          target: { urlEnv: green.urlEnv, maxLag: '2s' },
          backup: { enabled: false },
          schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
          copy: [
            {
              name: 'ledger',
              from: 'ledger',
              to: 'ledger',
              key: composite ? ['tenant', 'id'] : 'id',
              columns: {
                ...(composite ? { tenant: 'tenant' } : {}),
                id: 'id',
                account: 'account',
                cents: 'amount * 100',
                note: 'note',
                blob: 'blob',
              },
              reverse: { amount: 'cents / 100' },
              sync: 'bidirectional',
              batchSize: 1000,
              parallel: 2,
              impact: LOOSE_BUDGET_IN_PLAN,
            },
          ],
          validate: [{ rowCount: { copy: 'ledger' } }],
          traffic: {
            flag: 'use_green',
            stages: [
              { percent: 10, soak: '1h' },
              { percent: 100, soak: '1h' },
            ],
          },
          cleanup: {},
        },
        {
          // With a composite key, account widens to bigint: batches then travel as text, otherwise in binary.
          'up.sql': `CREATE TABLE ledger (${key}, account ${composite ? 'bigint' : 'integer'} NOT NULL, cents bigint NOT NULL, note text, blob text)`,
          'down.sql': `DROP TABLE ledger`,
        },
      ),
    );
    const churn = new Churn(blue.url, 4, composite);
    let stopped = false;
    try {
      const { workflowId } = await h.client.start(plan, { autoApprove: true });
      const copy = await eventually(
        async () => {
          const s = await h.client.status(workflowId);
          if (['rolled-back', 'failed', 'completed'].includes(s.state))
            throw new StopWaiting(`migration ${s.state}: ${s.error}`);
          const p = s.phases.find((x) => x.name === 'copy');
          return p?.status === 'completed' && s.events.some((e) => e.message.startsWith('flag use_green at 10%')) && p;
        },
        'copy done and traffic at 10%',
        240_000,
      );
      await churn.stop();
      stopped = true;
      const said = (await h.client.status(workflowId)).events.map((e) => e.message);
      expect(said).toContain(
        `change capture of ledger (source → target) installed${logical ? ', by logical decoding' : ''}; applier started`,
      );
      expect(said.find((m) => m.startsWith('copy ledger: ') && m.includes('rows copied'))).toMatch(
        composite ? / rows copied \(text COPY format\)$/ : / rows copied \(binary COPY format\)$/,
      );
      const [from, to] = [Date.parse(copy.startedAt!), Date.parse(copy.endedAt!)];
      const during = churn.acknowledged.filter((t) => t >= from && t <= to).length;
      expect(during).toBeGreaterThan(200);
      await eventually(
        async () => Number((await blue.query<{ n: string }>(`SELECT count(*) AS n FROM tidemark.changes`))[0].n) === 0,
        'every change applied',
        120_000,
      );
      const diff = await exceptAcross(
        blue,
        `SELECT row_to_json(x)::text AS r FROM (SELECT ${tenantCol}id, account, amount * 100 AS cents, note, md5(blob) FROM ledger) AS x`,
        green,
        `SELECT row_to_json(x)::text AS r FROM (SELECT ${tenantCol}id, account, cents, note, md5(blob) FROM ledger) AS x`,
      );
      expect({ onlyOnBlue: diff.onlyInA.slice(0, 10), onlyOnGreen: diff.onlyInB.slice(0, 10) }).toEqual({
        onlyOnBlue: [],
        onlyOnGreen: [],
      });
      await h.client.abort(workflowId, { reason: 'test done' });
      const final = await h.client.waitForEnd(workflowId);
      expect(final.state).toBe('rolled-back');
      const clean = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
      expect(await leftovers(blue)).toEqual(clean);
      expect(await leftovers(green)).toEqual(clean);
    } finally {
      if (!stopped) await churn.stop();
    }
  }, 600_000);
});

test('batches travel in binary COPY format only where the target reads each value exactly as the source wrote it', async () => {
  const blue = await h.db('bgcopy_fmt_blue');
  const green = await h.db('bgcopy_fmt_green');
  await blue.query(`CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE TABLE t (id bigint PRIMARY KEY, n integer, s text, at timestamptz, tags text[], m mood)`);
  await green.query(`CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE TABLE same (id bigint PRIMARY KEY, n integer, s varchar(20), at timestamptz, tags text[]);
    CREATE TABLE wider (id bigint PRIMARY KEY, n bigint);
    CREATE TABLE moods (id bigint PRIMARY KEY, m mood)`);
  const [bluePool, greenPool] = [new Pool({ connectionString: blue.url }), new Pool({ connectionString: green.url })];
  const [src, tgt] = [await bluePool.connect(), await greenPool.connect()];
  try {
    const format = async (to: string, columns: Record<string, string>) => {
      const plan = loadPlan(
        writePlan(
          {
            name: 'copy-format',
            database: { urlEnv: blue.urlEnv },
            target: { urlEnv: green.urlEnv },
            backup: { enabled: false },
            schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
            copy: [{ name: 'j', from: 't', to, key: 'id', columns }],
            cleanup: {},
          },
          { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
        ),
      );
      return copyFormat(src, tgt, await resolveMapping(bluePool, plan.copy[0], { runKey: 'r' }, greenPool));
    };
    // The same built-in types on both sides (varchar(20) still checks each value's length as it reads it).
    expect(await format('same', { id: 'id', n: 'n', s: 's::varchar', at: 'at', tags: 'tags' })).toBe('binary');
    // text into varchar: another type, so the target parses it as it always did.
    expect(await format('same', { id: 'id', n: 'n', s: 's', at: 'at', tags: 'tags' })).toBe('text');
    // integer into bigint: the binary forms differ in width.
    expect(await format('wider', { id: 'id', n: 'n' })).toBe('text');
    expect(await format('wider', { id: 'id', n: 'n::bigint' })).toBe('binary');
    // An enum has an OID of its own in each database.
    expect(await format('moods', { id: 'id', m: 'm' })).toBe('text');
  } finally {
    src.release();
    tgt.release();
    await bluePool.end();
    await greenPool.end();
  }
});
