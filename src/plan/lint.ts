// Lints a plan's SQL with PostgreSQL's own parser (libpg-query) for changes that destroy data or hold locks that stop
// a live application, each with why it hurts and the safer pattern. Objects created by the same step are new and
// nobody uses them yet, so changing them is not flagged.
import { loadModule, parseSync } from 'libpg-query';
import type { ResolvedPlan, SqlSource } from './types';

export type LintSeverity = 'error' | 'danger' | 'warning';

export interface LintFinding {
  /** Where in the plan: `schema[0].up`, `cleanup.sql`. */
  at: string;
  file: string;
  /** 1-based statement number within the file, and the line it starts on. */
  statement: number;
  line: number;
  rule: string;
  severity: LintSeverity;
  message: string;
  why: string;
  instead: string;
}

export interface ParsedStatement {
  node: Record<string, unknown>;
  kind: string;
  /** The statement's text. */
  text: string;
  line: number;
}

let loaded: Promise<void> | undefined;
export function loadParser(): Promise<void> {
  loaded ??= loadModule();
  return loaded;
}

/** Splits and parses an SQL script with PostgreSQL's grammar; throws the parser's error (with position) if invalid. */
export async function parseStatements(sql: string): Promise<ParsedStatement[]> {
  await loadParser();
  const tree = parseSync(sql) as {
    stmts?: { stmt: Record<string, unknown>; stmt_location?: number; stmt_len?: number }[];
  };
  const bytes = Buffer.from(sql, 'utf8');
  return (tree.stmts ?? []).map((s) => {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const raw = bytes.subarray(start, end).toString('utf8');
    const lead = raw.length - raw.trimStart().length;
    const before = bytes.subarray(0, start).toString('utf8') + raw.slice(0, lead);
    const kind = Object.keys(s.stmt)[0];
    return { node: s.stmt[kind] as Record<string, unknown>, kind, text: raw.trim(), line: before.split('\n').length };
  });
}

const VOLATILE_DEFAULTS = new Set([
  'random',
  'gen_random_uuid',
  'uuid_generate_v1',
  'uuid_generate_v1mc',
  'uuid_generate_v4',
  'clock_timestamp',
  'timeofday',
  'nextval',
  'txid_current',
]);
const SERIAL_TYPES = new Set(['serial', 'bigserial', 'smallserial', 'serial4', 'serial8', 'serial2']);

type Node = Record<string, unknown>;
const rel = (r: unknown): string => {
  const v = r as { schemaname?: string; relname?: string } | undefined;
  return v?.relname ? `${v.schemaname ? `${v.schemaname}.` : ''}${v.relname}` : '?';
};
const bare = (name: string) => name.split('.').pop()!;

function funcNames(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => funcNames(n, out));
  else if (node && typeof node === 'object') {
    const fc = (node as Node).FuncCall as { funcname?: { String: { sval: string } }[] } | undefined;
    if (fc?.funcname) out.push(fc.funcname[fc.funcname.length - 1].String.sval);
    for (const v of Object.values(node)) funcNames(v, out);
  }
  return out;
}

/** Tables a script creates (CREATE TABLE, CREATE TABLE AS). */
export function createdTables(stmts: ParsedStatement[]): Set<string> {
  const out = new Set<string>();
  for (const s of stmts) {
    if (s.kind === 'CreateStmt') out.add(bare(rel(s.node.relation)));
    if (s.kind === 'CreateTableAsStmt') out.add(bare(rel((s.node.into as Node)?.rel)));
  }
  return out;
}

/** Tables a script creates, as it names them (`schema.name` where it says the schema). */
export function createdTableRefs(stmts: ParsedStatement[]): Set<string> {
  const out = new Set<string>();
  for (const s of stmts) {
    if (s.kind === 'CreateStmt') out.add(rel(s.node.relation));
    if (s.kind === 'CreateTableAsStmt') out.add(rel((s.node.into as Node)?.rel));
  }
  out.delete('?');
  return out;
}

/** Foreign keys a script declares (CREATE TABLE, ALTER TABLE … ADD): each table, as named, and the one it references. */
export function declaredForeignKeys(stmts: ParsedStatement[]): { table: string; references: string }[] {
  const out: { table: string; references: string }[] = [];
  const walk = (node: unknown, table: string): void => {
    if (Array.isArray(node)) return node.forEach((n) => walk(n, table));
    if (!node || typeof node !== 'object') return;
    const n = node as Node;
    if (n.contype === 'CONSTR_FOREIGN' && n.pktable) out.push({ table, references: rel(n.pktable) });
    for (const v of Object.values(n)) walk(v, table);
  };
  for (const s of stmts) {
    if (s.kind === 'CreateStmt' || (s.kind === 'AlterTableStmt' && s.node.objtype === 'OBJECT_TABLE')) {
      walk(s.kind === 'CreateStmt' ? s.node.tableElts : s.node.cmds, rel(s.node.relation));
    }
  }
  return out;
}

/**
 * Tables a script changes, as it names them (`schema.name` where it says the schema): ALTER TABLE, DROP TABLE,
 * renames, INSERT, UPDATE, DELETE, TRUNCATE.
 */
export function changedTables(stmts: ParsedStatement[]): Set<string> {
  const out = new Set<string>();
  for (const s of stmts) {
    const n = s.node;
    switch (s.kind) {
      case 'AlterTableStmt':
        if (n.objtype === 'OBJECT_TABLE') out.add(rel(n.relation));
        break;
      case 'RenameStmt':
        if (n.relationType === 'OBJECT_TABLE' || n.renameType === 'OBJECT_TABLE') out.add(rel(n.relation));
        break;
      case 'DropStmt':
        if (n.removeType === 'OBJECT_TABLE') for (const d of dropNames(n)) out.add(d);
        break;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
        out.add(rel(n.relation));
        break;
      case 'TruncateStmt':
        for (const r of (n.relations as { RangeVar: unknown }[]) ?? []) out.add(rel(r.RangeVar));
        break;
    }
  }
  out.delete('?');
  return out;
}

/** The columns of each table a script creates with CREATE TABLE (by bare table name). */
export function createdTableColumns(stmts: ParsedStatement[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const s of stmts) {
    if (s.kind !== 'CreateStmt') continue;
    const cols = ((s.node.tableElts as Node[] | undefined) ?? [])
      .map((e) => (e as { ColumnDef?: { colname?: string } }).ColumnDef?.colname)
      .filter((c): c is string => !!c);
    out.set(bare(rel(s.node.relation)), new Set(cols));
  }
  return out;
}

interface Context {
  transactional: boolean;
  /** Tables new in this step (created by its `up`). */
  fresh: Set<string>;
  /** The script undoes its step (`down`): dropping what `up` created is its job. */
  isDown: boolean;
}

type Finding = Pick<LintFinding, 'rule' | 'severity' | 'message' | 'why' | 'instead'>;

/** The objects a DROP names, each as written (`schema.name`). */
const dropNames = (n: Node): string[] =>
  ((n.objects as { List?: { items: { String: { sval: string } }[] } }[]) ?? []).map((o) =>
    (o.List?.items ?? []).map((i) => i.String?.sval).join('.'),
  );

/**
 * The down of a non-transactional step may run after its up stopped half-way (an abort, a failure): each of its drops
 * must hold whether or not the up got that far.
 */
function halfWayDown(s: ParsedStatement): Finding[] {
  const n = s.node;
  const drops: string[] = [];
  if (s.kind === 'DropStmt' && !n.missing_ok) {
    const names = dropNames(n);
    drops.push(
      `DROP ${String(n.removeType)
        .replace(/^OBJECT_/, '')
        .replace(/_/g, ' ')} ${names.join(', ')}`,
    );
  }
  if (s.kind === 'AlterTableStmt') {
    for (const c of (n.cmds as { AlterTableCmd: Node }[]) ?? []) {
      const cmd = c.AlterTableCmd;
      if ((cmd.subtype === 'AT_DropColumn' || cmd.subtype === 'AT_DropConstraint') && !cmd.missing_ok) {
        drops.push(
          `${rel(n.relation)} ${cmd.subtype === 'AT_DropColumn' ? 'DROP COLUMN' : 'DROP CONSTRAINT'} ${String(cmd.name)}`,
        );
      }
    }
  }
  return drops.map((d) => ({
    rule: 'down-not-idempotent',
    severity: 'warning',
    message: `${d} without IF EXISTS in the down of a non-transactional step`,
    why: 'the down also runs after an up that stopped half-way, where this may not exist: it fails and holds the rollback',
    instead: 'IF EXISTS on every drop of such a down',
  }));
}

function lintStatement(s: ParsedStatement, ctx: Context): Finding[] {
  const out: Finding[] = ctx.isDown && !ctx.transactional ? halfWayDown(s) : [];
  const n = s.node;
  const isFresh = (r: unknown) => ctx.fresh.has(bare(rel(r)));
  switch (s.kind) {
    case 'TransactionStmt':
      if (ctx.transactional) {
        out.push({
          rule: 'transaction-control',
          severity: 'error',
          message: 'transaction control (BEGIN/COMMIT) inside a step',
          why: 'tidemark runs each transactional step in its own transaction and records it in tidemark.history in that same transaction',
          instead: 'remove BEGIN/COMMIT/ROLLBACK from the file',
        });
      }
      break;
    case 'IndexStmt': {
      if (n.concurrent && ctx.transactional) {
        out.push({
          rule: 'concurrent-in-transaction',
          severity: 'error',
          message: `CREATE INDEX CONCURRENTLY on ${rel(n.relation)} in a transactional step`,
          why: 'CREATE INDEX CONCURRENTLY cannot run inside a transaction block',
          instead:
            'put it in its own step with transactional: false (and make its down DROP INDEX CONCURRENTLY IF EXISTS)',
        });
      } else if (!n.concurrent && !isFresh(n.relation)) {
        out.push({
          rule: 'index-without-concurrently',
          severity: 'warning',
          message: `CREATE ${n.unique ? 'UNIQUE ' : ''}INDEX without CONCURRENTLY on ${rel(n.relation)}`,
          why: `blocks every write to ${rel(n.relation)} until the index is built`,
          instead: 'CREATE INDEX CONCURRENTLY … in a step with transactional: false',
        });
      }
      break;
    }
    case 'DropStmt': {
      const type = n.removeType as string;
      const names = dropNames(n);
      if (type === 'OBJECT_TABLE') {
        const old = names.filter((t) => !ctx.fresh.has(bare(t)));
        if (old.length) {
          out.push({
            rule: 'drop-table',
            severity: 'danger',
            message: `DROP TABLE ${old.join(', ')}`,
            why: 'deletes the table and its data for good; no compensation can bring it back',
            instead:
              'leave it to cleanup: list it under cleanup.archive (moved to tidemark_archive, restorable) with dropAfter',
          });
        }
      } else if (type === 'OBJECT_INDEX' && !n.concurrent && !ctx.isDown) {
        out.push({
          rule: 'drop-index-without-concurrently',
          severity: 'warning',
          message: `DROP INDEX ${names.join(', ')} without CONCURRENTLY`,
          why: 'takes an ACCESS EXCLUSIVE lock on the table while it waits for running queries',
          instead: 'DROP INDEX CONCURRENTLY in a step with transactional: false',
        });
      } else if (type === 'OBJECT_SCHEMA' && n.behavior === 'DROP_CASCADE') {
        out.push({
          rule: 'drop-schema-cascade',
          severity: 'danger',
          message: `DROP SCHEMA ${names.join(', ')} CASCADE`,
          why: 'drops everything in the schema, data included',
          instead: 'drop the objects you mean, one by one',
        });
      }
      break;
    }
    case 'AlterTableStmt': {
      if (isFresh(n.relation)) break;
      const t = rel(n.relation);
      for (const c of (n.cmds as { AlterTableCmd: Node }[]) ?? []) {
        const cmd = c.AlterTableCmd;
        const col = cmd.name as string | undefined;
        switch (cmd.subtype) {
          case 'AT_DropColumn':
            out.push({
              rule: 'drop-column',
              severity: 'danger',
              message: `DROP COLUMN ${t}.${col}`,
              why: 'the data is gone, and code still reading the column breaks at once',
              instead:
                'stop using the column first; drop it in a later migration (expand/contract), or move to a new table with a copy job',
            });
            break;
          case 'AT_AlterColumnType':
            out.push({
              rule: 'alter-column-type',
              severity: 'warning',
              message: `ALTER COLUMN ${t}.${col} TYPE`,
              why: `rewrites ${t} under an ACCESS EXCLUSIVE lock (reads and writes wait) for most type changes`,
              instead:
                'add a new column or table, fill it with a copy job (sync keeps it current), switch readers with the flag, then drop the old one',
            });
            break;
          case 'AT_SetNotNull':
            out.push({
              rule: 'set-not-null',
              severity: 'warning',
              message: `SET NOT NULL on ${t}.${col}`,
              why: `scans all of ${t} under an ACCESS EXCLUSIVE lock`,
              instead: `ADD CONSTRAINT … CHECK (${col} IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT in a later step; then SET NOT NULL (PostgreSQL 12+ skips the scan)`,
            });
            break;
          case 'AT_AddColumn': {
            const def = cmd.def as {
              ColumnDef?: {
                colname: string;
                typeName?: { names: { String: { sval: string } }[] };
                constraints?: { Constraint: Node }[];
              };
            };
            const cd = def.ColumnDef;
            const type = cd?.typeName?.names.map((x) => x.String.sval).pop() ?? '';
            const cons = (cd?.constraints ?? []).map((x) => x.Constraint);
            const dflt = cons.find((x) => x.contype === 'CONSTR_DEFAULT');
            const volatile = dflt ? funcNames(dflt.raw_expr).filter((f) => VOLATILE_DEFAULTS.has(f)) : [];
            if (SERIAL_TYPES.has(type) || volatile.length) {
              out.push({
                rule: 'volatile-default',
                severity: 'warning',
                message: `ADD COLUMN ${t}.${cd?.colname} with ${SERIAL_TYPES.has(type) ? type : `DEFAULT ${volatile[0]}()`}`,
                why: `a volatile default rewrites every row of ${t} under an ACCESS EXCLUSIVE lock`,
                instead: 'add the column without a default, SET DEFAULT for new rows, backfill old rows in batches',
              });
            } else if (cons.some((x) => x.contype === 'CONSTR_NOTNULL') && !dflt) {
              out.push({
                rule: 'not-null-without-default',
                severity: 'warning',
                message: `ADD COLUMN ${t}.${cd?.colname} NOT NULL without a default`,
                why: `fails as soon as ${t} has rows, and running code that inserts without the column breaks`,
                instead:
                  'add it nullable (or with a constant default), backfill, then enforce NOT NULL with a validated CHECK',
              });
            }
            break;
          }
          case 'AT_AddConstraint': {
            const con = (cmd.def as { Constraint: Node }).Constraint;
            if (con.contype === 'CONSTR_FOREIGN' && !con.skip_validation) {
              out.push({
                rule: 'foreign-key-validated',
                severity: 'warning',
                message: `ADD FOREIGN KEY on ${t} without NOT VALID`,
                why: `checks every row while holding SHARE ROW EXCLUSIVE locks on ${t} and ${rel(con.pktable)} (writes wait)`,
                instead:
                  'ADD CONSTRAINT … FOREIGN KEY … NOT VALID; then VALIDATE CONSTRAINT in a later step (only a light lock)',
              });
            } else if (con.contype === 'CONSTR_CHECK' && !con.skip_validation) {
              out.push({
                rule: 'check-validated',
                severity: 'warning',
                message: `ADD CHECK constraint on ${t} without NOT VALID`,
                why: `scans all of ${t} under an ACCESS EXCLUSIVE lock`,
                instead: 'ADD CONSTRAINT … CHECK (…) NOT VALID; then VALIDATE CONSTRAINT in a later step',
              });
            } else if ((con.contype === 'CONSTR_PRIMARY' || con.contype === 'CONSTR_UNIQUE') && !con.indexname) {
              out.push({
                rule: 'constraint-builds-index',
                severity: 'warning',
                message: `ADD ${con.contype === 'CONSTR_PRIMARY' ? 'PRIMARY KEY' : 'UNIQUE'} on ${t}`,
                why: `builds its index while blocking writes to ${t}`,
                instead: 'CREATE UNIQUE INDEX CONCURRENTLY (transactional: false), then ADD CONSTRAINT … USING INDEX',
              });
            }
            break;
          }
        }
      }
      break;
    }
    case 'RenameStmt':
      if (!isFresh(n.relation)) {
        out.push({
          rule: 'rename',
          severity: 'warning',
          message: `RENAME ${(n.renameType as string).replace('OBJECT_', '').toLowerCase()} ${rel(n.relation)}${n.subname ? `.${n.subname}` : ''} to ${n.newname}`,
          why: 'code deployed against the old name fails the moment this commits',
          instead:
            'expand/contract: add the new name beside the old (new column or table, or a view), move readers over with the flag, drop the old name in cleanup',
        });
      }
      break;
    case 'TruncateStmt':
      out.push({
        rule: 'truncate',
        severity: 'danger',
        message: `TRUNCATE ${((n.relations as { RangeVar: unknown }[]) ?? []).map((r) => rel(r.RangeVar)).join(', ')}`,
        why: 'deletes every row for good',
        instead: 'archive the table in cleanup instead',
      });
      break;
    case 'DeleteStmt':
    case 'UpdateStmt':
      if (!n.whereClause && !isFresh(n.relation)) {
        out.push({
          rule: 'unbounded-dml',
          severity: 'warning',
          message: `${s.kind === 'DeleteStmt' ? 'DELETE' : 'UPDATE'} of every row of ${rel(n.relation)}`,
          why: 'one long transaction that locks every row and bloats the table',
          instead: 'move data with a copy job (batched, resumable), or batch it by key',
        });
      }
      break;
    case 'VacuumStmt': {
      const full = ((n.options as { DefElem: { defname: string } }[]) ?? []).some((o) => o.DefElem.defname === 'full');
      if (full) {
        out.push({
          rule: 'vacuum-full',
          severity: 'warning',
          message: 'VACUUM FULL',
          why: 'rewrites the table under an ACCESS EXCLUSIVE lock',
          instead: 'plain VACUUM, or pg_repack outside the migration',
        });
      }
      if (ctx.transactional) {
        out.push({
          rule: 'vacuum-in-transaction',
          severity: 'error',
          message: 'VACUUM in a transactional step',
          why: 'VACUUM cannot run inside a transaction block',
          instead: 'use a step with transactional: false',
        });
      }
      break;
    }
    case 'ClusterStmt':
      out.push({
        rule: 'cluster',
        severity: 'warning',
        message: `CLUSTER ${rel(n.relation)}`,
        why: 'rewrites the table under an ACCESS EXCLUSIVE lock',
        instead: 'leave physical ordering out of a live migration',
      });
      break;
    case 'AlterEnumStmt': {
      // ADD VALUE (RENAME VALUE names its old value and can be renamed back).
      if (ctx.isDown || n.oldVal) break;
      const type = ((n.typeName as { String: { sval: string } }[]) ?? []).map((x) => x.String.sval).join('.');
      out.push({
        rule: 'enum-add-value',
        severity: 'warning',
        message: `ALTER TYPE ${type} ADD VALUE '${String(n.newVal)}'`,
        why: 'PostgreSQL cannot drop a value from an enum: no down undoes it, and a rollback leaves it in the type',
        instead: 'a text column with a CHECK constraint (or a lookup table), which a down can change back',
      });
      break;
    }
    case 'LockStmt':
      out.push({
        rule: 'explicit-lock',
        severity: 'warning',
        message: `LOCK TABLE ${((n.relations as { RangeVar: unknown }[]) ?? []).map((r) => rel(r.RangeVar)).join(', ')}`,
        why: 'holds the lock until the step commits; stronger modes stop the application',
        instead: 'rely on the row locks of the statements themselves, with lockTimeout set',
      });
      break;
    case 'ReindexStmt': {
      const concurrent = ((n.params as { DefElem: { defname: string } }[]) ?? []).some(
        (o) => o.DefElem.defname === 'concurrently',
      );
      if (!concurrent) {
        out.push({
          rule: 'reindex',
          severity: 'warning',
          message: 'REINDEX without CONCURRENTLY',
          why: 'blocks writes to the table while it rebuilds',
          instead: 'REINDEX … CONCURRENTLY in a step with transactional: false',
        });
      }
      break;
    }
  }
  return out;
}

async function lintSource(
  at: string,
  src: SqlSource,
  ctx: Context,
): Promise<{ findings: LintFinding[]; stmts: ParsedStatement[] }> {
  let stmts: ParsedStatement[];
  try {
    stmts = await parseStatements(src.sql);
  } catch (e) {
    const err = e as { message: string; sqlDetails?: { cursorPosition?: number } };
    const pos = err.sqlDetails?.cursorPosition;
    const line = pos !== undefined ? Buffer.from(src.sql).subarray(0, pos).toString().split('\n').length : 1;
    return {
      findings: [
        {
          at,
          file: src.path,
          statement: 0,
          line,
          rule: 'syntax',
          severity: 'error',
          message: `does not parse: ${err.message}`,
          why: 'PostgreSQL would reject it',
          instead: 'fix the SQL',
        },
      ],
      stmts: [],
    };
  }
  const findings = stmts.flatMap((s, i) =>
    lintStatement(s, ctx).map((f) => ({ at, file: src.path, statement: i + 1, line: s.line, ...f })),
  );
  return { findings, stmts };
}

/** Every finding for every SQL file of the plan, in plan order. */
export async function lintPlan(plan: ResolvedPlan): Promise<LintFinding[]> {
  const out: LintFinding[] = [];
  const steps = [
    ...plan.schema.map((step, i) => ({ step, at: `schema[${i}]` })),
    ...(plan.cleanup?.steps ?? []).map((step, i) => ({ step, at: `cleanup.steps[${i}]` })),
  ];
  for (const { step, at } of steps) {
    const up = await lintSource(`${at}.up`, step.up, {
      transactional: step.transactional,
      fresh: new Set(),
      isDown: false,
    });
    const fresh = createdTables(up.stmts);
    // Statements on tables this very step creates are harmless: re-lint with that knowledge.
    const upAgain = await lintSource(`${at}.up`, step.up, {
      transactional: step.transactional,
      fresh,
      isDown: false,
    });
    out.push(...upAgain.findings);
    out.push(
      ...(await lintSource(`${at}.down`, step.down, { transactional: step.transactional, fresh, isDown: true }))
        .findings,
    );
  }
  if (plan.cleanup?.sql)
    out.push(
      ...(await lintSource('cleanup.sql', plan.cleanup.sql, { transactional: true, fresh: new Set(), isDown: false }))
        .findings,
    );
  return out;
}
