// The plan file's shape (SPEC §2) as a zod schema: parses untrusted input once into a typed object with defaults.
import { z } from 'zod';
import { LIMITS } from '../migration/limits';
import { parseDuration } from './durations';

export const PHASES = ['preflight', 'backup', 'schema', 'copy', 'validate', 'traffic', 'cleanup'] as const;

const duration = z.string().transform((s, ctx) => {
  const ms = parseDuration(s);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${s}" is not a duration (use e.g. 500ms, 30s, 10m, 1h, 7d)` });
    return z.NEVER;
  }
  return ms;
});

// Names are used exactly as written and always quoted, so any PostgreSQL name works (mixed case, spaces, …) except
// one holding a double quote; a table reference splits on its one dot into schema and table.
const ident = z.string().regex(/^[^"\0]{1,63}$/, 'must be a name of 1 to 63 characters without double quotes');
const tableName = z
  .string()
  .regex(
    /^[^".\0]{1,63}(\.[^".\0]{1,63})?$/,
    'must be a table name: table or schema.table (no double quotes; one dot at most)',
  );
const envVar = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');
const sqlText = z.string().trim().min(1, 'must not be empty');
const filePath = z.string().trim().min(1, 'must be a file path');
const jobName = z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'must match [a-z0-9][a-z0-9_-]*');

const preflightCheck = z.strictObject({
  name: z.string().min(1),
  sql: sqlText,
  severity: z.enum(['warn', 'fail']).default('fail'),
});

const schemaStep = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must match [A-Za-z0-9][A-Za-z0-9_.-]*'),
  up: filePath,
  down: filePath,
  transactional: z.boolean().default(true),
});

const syncSource = z.strictObject({
  table: tableName,
  /** SQL expression over a row of `table` giving the copy key of the target rows it feeds. */
  key: sqlText,
});

const copyJob = z.strictObject({
  name: jobName,
  from: tableName.optional(),
  query: sqlText.optional(),
  to: tableName,
  key: ident,
  columns: z.record(ident, sqlText).optional(),
  reverse: z.record(ident, sqlText).optional(),
  sync: z.enum(['none', 'forward', 'bidirectional']).optional(),
  /** For query sources: the tables whose writes must be replayed into the target, and how to find the key. */
  syncFrom: z.array(syncSource).optional(),
  batchSize: z.number().int().min(LIMITS.batchSize.min).max(LIMITS.batchSize.max).default(5000),
  maxBatchSize: z.number().int().min(LIMITS.batchSize.min).max(LIMITS.batchSize.max).optional(),
  targetBatchMs: z.number().int().min(10).max(60_000).default(200),
  parallel: z.number().int().min(1).max(64).default(1),
  /**
   * With a traffic section the application writes the target on the new path, and a rollback loses what nothing syncs
   * back (any sync but bidirectional). Such a plan is refused unless this says the loss is accepted (a read model, a
   * cache); the rollback then reports how many rows written on the new path it discarded.
   */
  discardNewPathWrites: z.boolean().optional(),
});

const tolerance = z.union([
  z.number().min(0),
  z.string().regex(/^\d+(\.\d+)?%$/, 'must be a number of rows or a percentage like "1%"'),
]);

const validation = z
  .strictObject({
    rowCount: z.strictObject({ copy: jobName, tolerance: tolerance.optional() }),
    checksum: z.strictObject({
      copy: jobName,
      chunkSize: z
        .number()
        .int()
        .min(LIMITS.checksumChunk.min)
        .max(LIMITS.checksumChunk.max)
        .default(LIMITS.checksumChunk.default),
    }),
    sql: z.strictObject({
      name: z.string().min(1),
      query: sqlText,
      expect: z.union([z.number(), z.string(), z.boolean(), z.null()]).optional(),
      max: z.number().optional(),
      min: z.number().optional(),
    }),
    orphans: z.strictObject({
      name: z.string().min(1).optional(),
      table: tableName,
      column: ident,
      references: z.strictObject({ table: tableName, column: ident }),
      max: z.number().int().min(0).default(0),
    }),
  })
  .partial();

const gate = z.strictObject({
  name: z.string().min(1),
  sql: sqlText.optional(),
  database: z.strictObject({ urlEnv: envVar }).optional(),
  prometheus: z
    .strictObject({ url: z.string().url().optional(), urlEnv: envVar.optional(), query: sqlText })
    .optional(),
  http: z
    .strictObject({ url: z.string().url().optional(), urlEnv: envVar.optional(), field: z.string().min(1).optional() })
    .optional(),
  max: z.number().optional(),
  min: z.number().optional(),
  interval: duration.default(30_000),
  timeout: duration.default(5_000),
  failureLimit: z.number().int().min(1).default(1),
});

const stage = z.strictObject({
  percent: z.number().int().min(0).max(100),
  soak: duration.default(0),
  approval: z.boolean().default(false),
});

export const planSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]*$/, 'must match [a-z0-9][a-z0-9-]*')
    .max(100)
    // tidemark-revert-<plan> is the workflow id of a plan's revert: a plan named revert-… would take another's.
    .refine((n) => !n.startsWith('revert-'), 'must not start with "revert-" (tidemark-revert-<plan> names reverts)'),
  description: z.string().optional(),
  database: z.strictObject({ urlEnv: envVar }),
  approvals: z.array(z.enum(PHASES)).default([]),
  approvalTimeout: duration.default(24 * 3_600_000),
  onApprovalTimeout: z.enum(['abort', 'pause']).default('abort'),
  lockTimeout: duration.default(2_000),
  backup: z
    .strictObject({
      enabled: z.boolean().default(true),
      dir: filePath.default('./backups'),
      tables: z.array(tableName).min(1).optional(),
      /** How many earlier backups of this plan to keep besides the new one. */
      retain: z.number().int().min(0).optional(),
    })
    .default({ enabled: true, dir: './backups' }),
  preflight: z
    .strictObject({
      maxActiveConnections: z.number().int().min(1).optional(),
      maxTransactionAge: duration.default(5 * 60_000),
      checks: z.array(preflightCheck).default([]),
    })
    .default({ maxTransactionAge: 5 * 60_000, checks: [] }),
  schema: z.array(schemaStep).default([]),
  copy: z.array(copyJob).default([]),
  validate: z.array(validation).default([]),
  traffic: z
    .strictObject({
      flag: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'must match [A-Za-z0-9_.-]+'),
      stages: z.array(stage).min(1),
      gates: z.array(gate).default([]),
    })
    .optional(),
  cleanup: z
    .strictObject({
      after: duration.default(0),
      archive: z.array(tableName).default([]),
      dropAfter: duration.optional(),
      /**
       * Steps run after the archive, each up/down pair like a schema step: compatibility objects under the old names
       * (a view for old clients), constraints added once the copy is done. Compensated and recorded in the ledger.
       */
      steps: z.array(schemaStep).default([]),
      sql: filePath.optional(),
    })
    .optional(),
});

export type PlanDocument = z.output<typeof planSchema>;
