// Plans that are wrong in one way each, with the exact error their path should get. Shared by the loader's unit
// tests and the CLI test that checks nothing reaches a database.
import { unprotectedMessage } from '../../src/plan/validate';

export const VALID_PLAN = {
  name: 'orders-v2-refused',
  database: { urlEnv: 'DATABASE_URL' },
  schema: [{ id: '001', up: 'sql/up.sql', down: 'sql/down.sql' }],
  copy: [
    {
      name: 'orders',
      from: 'orders',
      to: 'orders_v2',
      key: 'id',
      columns: { id: 'id', total: 'amount_cents / 100.0' },
      discardNewPathWrites: true,
    },
  ],
  validate: [{ rowCount: { copy: 'orders' } }],
  traffic: {
    flag: 'use_orders_v2',
    stages: [
      { percent: 10, soak: '1m' },
      { percent: 100, soak: '1m' },
    ],
  },
  cleanup: { after: '1h', archive: ['orders'] },
};

export const SQL_FILES = {
  'sql/up.sql': 'CREATE TABLE orders_v2 (id bigint primary key, total numeric);',
  'sql/down.sql': 'DROP TABLE orders_v2;',
};

type Doc = Record<string, unknown>;
const clone = (): Doc => JSON.parse(JSON.stringify(VALID_PLAN));
const edit = (f: (d: Doc & typeof VALID_PLAN) => void) => {
  const d = clone() as Doc & typeof VALID_PLAN;
  f(d);
  return d;
};

export interface MalformedCase {
  title: string;
  doc: Doc | string;
  files?: Record<string, string>;
  format?: 'yaml' | 'json';
  /** Every `path: message` the loader must report (in order). */
  errors: string[];
}

export const MALFORMED: MalformedCase[] = [
  { title: 'missing name', doc: edit((d) => delete (d as Doc).name), errors: ['name: required'] },
  {
    title: 'name with capitals',
    doc: edit((d) => (d.name = 'Orders')),
    errors: ['name: must match [a-z0-9][a-z0-9-]*'],
  },
  {
    title: 'missing database url variable',
    doc: edit((d) => ((d.database as Doc) = {})),
    errors: ['database.urlEnv: required'],
  },
  {
    title: 'a duration that is not one',
    doc: edit((d) => (d.traffic.stages[0].soak = '10 minutes')),
    errors: ['traffic.stages[0].soak: "10 minutes" is not a duration (use e.g. 500ms, 30s, 10m, 1h, 7d)'],
  },
  { title: 'unknown top-level key', doc: edit((d) => ((d as Doc).colums = {})), errors: ['colums: unknown key'] },
  {
    title: 'unknown key in a copy job',
    doc: edit((d) => ((d.copy[0] as Doc).batchsize = 10)),
    errors: ['copy[0].batchsize: unknown key'],
  },
  {
    title: 'a password in a connection string',
    doc: edit((d) => ((d as Doc).description = 'copied from postgres://app:s3cret@db.internal:5432/shop')),
    errors: [
      "description: contains a connection string with a password; plans must not carry secrets — put the URL in the worker's environment and name the variable in database.urlEnv",
    ],
  },
  {
    title: 'a key=value connection string with the password before the host',
    doc: edit((d) => ((d as Doc).description = 'legacy dsn password=s3cret host=db.internal user=app')),
    errors: [
      "description: contains a connection string with a password; plans must not carry secrets — put the URL in the worker's environment and name the variable in database.urlEnv",
    ],
  },
  {
    title: 'a password in a SQL file the plan embeds (a URL in a comment, a connection string in a literal)',
    doc: VALID_PLAN,
    files: {
      'sql/up.sql':
        '-- fetched via postgres://app:s3cret@db.internal/shop\nCREATE TABLE orders_v2 (id bigint primary key, total numeric);',
      'sql/down.sql':
        "DROP TABLE orders_v2;\nUPDATE settings SET password = crypt('x', gen_salt('bf')) WHERE user = 'app';\nSELECT dblink_connect('user=app host=db password=s3cret');",
    },
    errors: [
      "schema[0].up: sql/up.sql line 1 contains a connection string with a password; plans must not carry secrets — put the URL in the worker's environment and name the variable in database.urlEnv",
      "schema[0].down: sql/down.sql line 3 contains a connection string with a password; plans must not carry secrets — put the URL in the worker's environment and name the variable in database.urlEnv",
    ],
  },
  {
    title: 'a missing SQL file',
    doc: edit((d) => (d.schema[0].up = 'sql/missing.sql')),
    errors: ['schema[0].up: file not found: sql/missing.sql'],
  },
  {
    title: 'a copy job without its key',
    doc: edit((d) => delete (d.copy[0] as Doc).key),
    errors: ['copy[0].key: required'],
  },
  {
    title: 'a latency budget that is not a percentage',
    doc: edit((d) => ((d.copy[0] as Doc).impact = { maxLatencyIncrease: 'a quarter' })),
    errors: ['copy[0].impact.maxLatencyIncrease: must be a percentage like "25%", or unlimited'],
  },
  {
    title: 'a latency budget below 1 %',
    doc: edit((d) => ((d.copy[0] as Doc).impact = { maxLatencyIncrease: '0.5%' })),
    errors: ['copy[0].impact.maxLatencyIncrease: must be between 1% and 1000%, or unlimited'],
  },
  {
    title: 'a check naming a copy job that does not exist',
    doc: edit((d) => (d.validate[0].rowCount.copy = 'order')),
    errors: ['validate[0].rowCount.copy: no copy job named "order"'],
  },
  {
    title: 'a rollout that never reaches 100 %',
    doc: edit((d) => (d.traffic.stages[1].percent = 90)),
    errors: ['traffic.stages[1].percent: the last stage must reach 100'],
  },
  {
    title: 'an approval for a phase that does not exist',
    doc: edit((d) => ((d as Doc).approvals = ['deploy'])),
    errors: [
      'approvals[0]: Invalid option: expected one of "preflight"|"backup"|"schema"|"copy"|"validate"|"traffic"|"cleanup"',
    ],
  },
  {
    title: 'a number where a string belongs (JSON)',
    doc: edit((d) => ((d.copy[0] as Doc).to = 42)),
    format: 'json',
    errors: ['copy[0].to: Invalid input: expected string, received number'],
  },
  {
    title: 'broken YAML',
    doc: 'name: orders-v2\ndatabase: [urlEnv: X\n',
    errors: [
      '(plan): invalid YAML at line 3, column 1: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ],
  },
  {
    title: 'traffic onto a target nothing syncs back',
    doc: edit((d) => delete (d.copy[0] as Doc).discardNewPathWrites),
    errors: [
      "copy[0].sync: traffic sends the application's writes to orders_v2, and copy job orders (sync: forward) syncs nothing back: a rollback would lose them. Use sync: bidirectional (with reverse for mapped columns, or writeBack for a query source), or set discardNewPathWrites: true to accept losing them (the rollback reports how many rows it discarded)",
    ],
  },
  {
    title: 'a query source synced both ways with no write back',
    doc: edit((d) => {
      const job = d.copy[0] as Doc;
      delete job.from;
      delete job.discardNewPathWrites;
      Object.assign(job, {
        query: 'SELECT o.id, o.amount_cents FROM orders o',
        sync: 'bidirectional',
        syncFrom: [{ table: 'orders', key: 'id' }],
      });
    }),
    errors: [
      'copy[0].sync: bidirectional sync of a query source needs writeBack: the old tables its rows are written back to',
    ],
  },
  {
    title: 'a write back that unfolds a column without saying which old rows a target row stands for',
    doc: edit((d) => {
      const job = d.copy[0] as Doc;
      delete job.from;
      delete job.discardNewPathWrites;
      Object.assign(job, {
        query: 'SELECT o.id, o.amount_cents FROM orders o',
        sync: 'bidirectional',
        syncFrom: [{ table: 'orders', key: 'id' }],
        writeBack: [
          {
            table: 'order_tags',
            key: ['order_id', 'tag'],
            unfold: 'jsonb_array_elements_text(t.tags) AS g(tag)',
            columns: { order_id: 't.id', tag: 'g.tag' },
          },
        ],
      });
    }),
    errors: [
      'copy[0].writeBack[0].owner: required with unfold: the old rows one target row stands for, as expressions over the target row',
    ],
  },
  {
    title: 'a write back that leaves out its key and comes with a table source',
    doc: edit((d) => {
      const job = d.copy[0] as Doc;
      delete job.discardNewPathWrites;
      Object.assign(job, {
        sync: 'bidirectional',
        writeBack: [{ table: 'orders', key: 'id', columns: { amount_cents: '(total * 100)::bigint' } }],
      });
    }),
    errors: [
      'copy[0].writeBack: only used with a query source (from uses reverse)',
      'copy[0].writeBack[0].columns: needs the key column(s) "id"',
    ],
  },
  {
    title: 'a column name with a double quote',
    doc: edit((d) => ((d.copy[0] as Doc).columns = { id: 'id', 'to"tal': 'amount_cents' })),
    errors: ['copy[0].columns.to"tal: must be a name of 1 to 63 characters without double quotes'],
  },
  {
    title: 'a table reference with two dots',
    doc: edit((d) => (d.copy[0].from = 'db.public.orders')),
    errors: ['copy[0].from: must be a table name: table or schema.table (no double quotes; one dot at most)'],
  },
  {
    title: 'several problems at once',
    doc: edit((d) => {
      delete (d as Doc).name;
      d.lockTimeout = 'soon' as never;
      (d.copy[0] as Doc).sync = 'both';
    }),
    errors: [
      'name: required',
      'lockTimeout: "soon" is not a duration (use e.g. 500ms, 30s, 10m, 1h, 7d)',
      'copy[0].sync: Invalid option: expected one of "none"|"forward"|"bidirectional"',
    ],
  },
  {
    title: "a value of the wrong type does not hide the other sections' errors",
    doc: edit((d) => {
      d.traffic.stages[0].percent = 10.5;
      d.schema.push({ ...d.schema[0] });
      d.validate = [{ rowCount: { copy: 'nosuchjob' } }];
    }),
    errors: [
      'traffic.stages[0].percent: Invalid input: expected int, received number',
      'schema[0].id: duplicate step id "001"',
      'schema[1].id: duplicate step id "001"',
      'validate[0].rowCount.copy: no copy job named "nosuchjob"',
    ],
  },
  {
    title: 'two copy jobs of one name that both sync nothing back: each reported at its own path',
    doc: edit((d) => {
      delete (d.copy[0] as Doc).discardNewPathWrites;
      d.copy.push({ ...d.copy[0], to: 'orders_v3' });
    }),
    errors: [
      'copy[0].name: duplicate copy job name "orders"',
      'copy[1].name: duplicate copy job name "orders"',
      `copy[0].sync: ${unprotectedMessage({ name: 'orders', to: 'orders_v2', sync: 'forward' })}`,
      `copy[1].sync: ${unprotectedMessage({ name: 'orders', to: 'orders_v3', sync: 'forward' })}`,
    ],
  },
];

/**
 * Plans whose read-only SQL (preflight checks, assertions, gates) could write: refused by `start` and `plan check`
 * with PostgreSQL's parser, before anything runs.
 */
export const UNSAFE_QUERIES: MalformedCase[] = [
  {
    title: 'a gate that ends its read-only transaction and writes',
    doc: edit((d) => {
      (d.traffic as Doc).gates = [{ name: 'errors', sql: 'SELECT 0; COMMIT; CREATE TABLE victim (x int)', max: 1 }];
    }),
    errors: ['traffic.gates[0].sql: must be exactly one SELECT statement, found 3 statements'],
  },
  {
    title: 'an assertion that deletes and a preflight check that is not a query',
    doc: edit((d) => {
      (d as Doc).validate = [
        {
          sql: {
            name: 'sneaky',
            query: 'WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone',
            expect: 0,
          },
        },
      ];
      (d as Doc).preflight = { checks: [{ name: 'drop', sql: 'DROP TABLE orders' }] };
    }),
    errors: [
      'preflight.checks[0].sql: must be a SELECT, found DROP',
      'validate[0].sql.query: must only read, found a DELETE inside it',
    ],
  },
];
