// The SQL review: each destructive or locking change is named with why and what to do instead; changes to tables the
// step itself creates are left alone.
import { notOneSelect } from '../../src/plan/queries';
import { lintPlan, parseStatements } from '../../src/plan/lint';
import type { ResolvedPlan } from '../../src/plan/types';

function planWith(up: string, down = 'SELECT 1;', transactional = true): ResolvedPlan {
  return {
    name: 'p',
    schema: [
      {
        id: 's1',
        transactional,
        up: { path: 'up.sql', sql: up, sha256: 'x' },
        down: { path: 'down.sql', sql: down, sha256: 'y' },
      },
    ],
  } as unknown as ResolvedPlan;
}

const rules = async (up: string, down?: string, transactional?: boolean) =>
  (await lintPlan(planWith(up, down, transactional))).map((f) => `${f.severity} ${f.rule}: ${f.message}`);

test.each([
  ["ALTER TYPE mood ADD VALUE 'ecstatic';", "warning enum-add-value: ALTER TYPE mood ADD VALUE 'ecstatic'"],
  ['DROP TABLE orders;', 'danger drop-table: DROP TABLE orders'],
  ['ALTER TABLE orders DROP COLUMN note;', 'danger drop-column: DROP COLUMN orders.note'],
  [
    'ALTER TABLE orders ALTER COLUMN total TYPE numeric(14,2);',
    'warning alter-column-type: ALTER COLUMN orders.total TYPE',
  ],
  ['ALTER TABLE orders ALTER COLUMN total SET NOT NULL;', 'warning set-not-null: SET NOT NULL on orders.total'],
  [
    'CREATE INDEX orders_total_idx ON orders (total);',
    'warning index-without-concurrently: CREATE INDEX without CONCURRENTLY on orders',
  ],
  [
    'ALTER TABLE items ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES orders (id);',
    'warning foreign-key-validated: ADD FOREIGN KEY on items without NOT VALID',
  ],
  [
    'ALTER TABLE orders ADD CONSTRAINT pos CHECK (total > 0);',
    'warning check-validated: ADD CHECK constraint on orders without NOT VALID',
  ],
  ['ALTER TABLE orders RENAME COLUMN total TO amount;', 'warning rename: RENAME column orders.total to amount'],
  [
    'ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();',
    'warning volatile-default: ADD COLUMN orders.token with DEFAULT gen_random_uuid()',
  ],
  ['ALTER TABLE orders ADD COLUMN seq bigserial;', 'warning volatile-default: ADD COLUMN orders.seq with bigserial'],
  ['ALTER TABLE orders ADD PRIMARY KEY (id);', 'warning constraint-builds-index: ADD PRIMARY KEY on orders'],
  ['TRUNCATE orders;', 'danger truncate: TRUNCATE orders'],
  ['UPDATE orders SET total = 0;', 'warning unbounded-dml: UPDATE of every row of orders'],
  [
    'BEGIN; ALTER TABLE orders ADD COLUMN x int; COMMIT;',
    'error transaction-control: transaction control (BEGIN/COMMIT) inside a step',
  ],
  [
    'CREATE INDEX CONCURRENTLY i ON orders (total);',
    'error concurrent-in-transaction: CREATE INDEX CONCURRENTLY on orders in a transactional step',
  ],
])('%s', async (sql, expected) => {
  expect(await rules(sql)).toContain(expected);
});

test('the safe patterns pass without findings', async () => {
  expect(
    await rules(`
      ALTER TABLE orders ADD COLUMN note text;
      ALTER TABLE orders ADD COLUMN created_at timestamptz DEFAULT now();
      ALTER TABLE items ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES orders (id) NOT VALID;
      ALTER TABLE items VALIDATE CONSTRAINT fk;
      UPDATE orders SET note = '' WHERE id < 1000;`),
  ).toEqual([]);
  expect(
    await rules('CREATE INDEX CONCURRENTLY i ON orders (total);', 'DROP INDEX CONCURRENTLY IF EXISTS i;', false),
  ).toEqual([]);
});

test('changes to a table the same step creates are not flagged, nor is its down dropping it', async () => {
  expect(
    await rules(
      `CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric);
       CREATE INDEX orders_v2_total_idx ON orders_v2 (total);
       ALTER TABLE orders_v2 ALTER COLUMN total SET NOT NULL;`,
      'DROP TABLE orders_v2;',
    ),
  ).toEqual([]);
});

test('an unparsable file is reported with its line', async () => {
  const [f] = await lintPlan(planWith('SELECT 1;\nCREATE TABLE (;'));
  expect(f).toMatchObject({ rule: 'syntax', severity: 'error', line: 2, at: 'schema[0].up', file: 'up.sql' });
  expect(f.message).toMatch(/^does not parse: syntax error at or near "\("/);
});

test('statements are split by the PostgreSQL parser, dollar quotes and comments included', async () => {
  const stmts = await parseStatements(`-- leading comment
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
/* a; b */ CREATE INDEX CONCURRENTLY i ON t (a);
SELECT ';' AS x`);
  expect(stmts.map((s) => [s.kind, s.line])).toEqual([
    ['CreateFunctionStmt', 2],
    ['IndexStmt', 3],
    ['SelectStmt', 4],
  ]);
  expect(stmts[1].text).toBe('CREATE INDEX CONCURRENTLY i ON t (a)');
});

describe('read-only plan SQL is exactly one SELECT', () => {
  test.each([
    ['SELECT count(*) FROM orders WHERE total < 0', undefined],
    ['WITH x AS (SELECT 1 AS v) SELECT v FROM x', undefined],
    ['VALUES (1)', undefined],
    ['SELECT 0; COMMIT; CREATE TABLE victim (x int)', 'must be exactly one SELECT statement, found 3 statements'],
    ['SELECT 1;', undefined],
    ['UPDATE orders SET total = 0', 'must be a SELECT, found UPDATE'],
    [
      'WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone',
      'must only read, found a DELETE inside it',
    ],
    ['SELECT * INTO copy_of_orders FROM orders', 'must not create a table (SELECT … INTO)'],
    ['SELECT * FROM orders FOR UPDATE', 'must not lock rows (FOR UPDATE/SHARE)'],
  ])('%s', async (sql, why) => {
    expect(await notOneSelect(sql)).toBe(why);
  });
});

test("a non-transactional step's down drops only with IF EXISTS: it also runs after an up that stopped half-way", async () => {
  const up =
    'CREATE TABLE side_t (id int);\nALTER TABLE big ADD COLUMN f int;\nCREATE INDEX CONCURRENTLY big_f ON big (f);';
  const down =
    'DROP INDEX CONCURRENTLY big_f;\nALTER TABLE big DROP COLUMN f;\nDROP TABLE side_t;\nDROP INDEX CONCURRENTLY IF EXISTS big_g;';
  const found = (await rules(up, down, false)).filter((r) => r.includes('down-not-idempotent'));
  expect(found).toEqual([
    'warning down-not-idempotent: DROP INDEX big_f without IF EXISTS in the down of a non-transactional step',
    'warning down-not-idempotent: big DROP COLUMN f without IF EXISTS in the down of a non-transactional step',
    'warning down-not-idempotent: DROP TABLE side_t without IF EXISTS in the down of a non-transactional step',
  ]);
  expect((await rules(up, down, true)).filter((r) => r.includes('down-not-idempotent'))).toEqual([]);
});
