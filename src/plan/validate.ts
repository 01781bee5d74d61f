// Pure checks on a parsed plan document: turns zod issues and cross-field rules into `path: message` lines.
import type { z } from 'zod';
import { jobKeys } from './keys';
import { planSchema, type PlanDocument } from './schema';

export interface PlanError {
  path: string;
  message: string;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out || '(plan)';
}

export function formatPlanError(e: PlanError): string {
  return `${e.path}: ${e.message}`;
}

const PASSWORD_URL = /[a-z][a-z0-9+.-]*:\/\/[^\s/@:]+:[^\s@/]*@/i;
const PASSWORD_KEY = /\bpassword\s*=\s*\S+/i;
const OTHER_KEY = /\b(?:host|hostaddr|dbname|user)\s*=\s*\S+/i;

/** A key=value connection string with a password: `password=` and another libpq key on one line, in either order. */
function passwordKeyValues(text: string): boolean {
  return text.split('\n').some((line) => PASSWORD_KEY.test(line) && OTHER_KEY.test(line));
}

export const SECRET_MESSAGE =
  "contains a connection string with a password; plans must not carry secrets — put the URL in the worker's environment and name the variable in database.urlEnv";

/** Every string in the document that carries a password: plans never hold secrets. */
export function findSecrets(doc: unknown, path: PropertyKey[] = []): PlanError[] {
  if (typeof doc === 'string') {
    return PASSWORD_URL.test(doc) || passwordKeyValues(doc)
      ? [{ path: formatPath(path), message: SECRET_MESSAGE }]
      : [];
  }
  if (Array.isArray(doc)) return doc.flatMap((v, i) => findSecrets(v, [...path, i]));
  if (doc && typeof doc === 'object') return Object.entries(doc).flatMap(([k, v]) => findSecrets(v, [...path, k]));
  return [];
}

/**
 * Where a SQL file the plan embeds carries a password (it travels in the workflow's input and history like the plan):
 * a URL with one anywhere, comments included, or a key=value connection string inside a string literal (SQL itself
 * may say `password = …` and `user = …` of a table's columns). The line, or undefined.
 */
export function secretLineInSql(sql: string): number | undefined {
  const lines = sql.split('\n');
  const i = lines.findIndex(
    (line) => PASSWORD_URL.test(line) || (line.match(/'(?:[^']|'')*'/g) ?? []).some((lit) => passwordKeyValues(lit)),
  );
  return i < 0 ? undefined : i + 1;
}

function zodIssuesToErrors(issues: z.core.$ZodIssue[]): PlanError[] {
  const out: PlanError[] = [];
  for (const iss of issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) out.push({ path: formatPath([...iss.path, key]), message: 'unknown key' });
    } else {
      // A bad record key (a column name in columns/reverse): say what is wrong with it, not just "invalid key".
      const inner = iss.code === 'invalid_key' ? iss.issues[0]?.message : undefined;
      out.push({ path: formatPath(iss.path), message: inner ?? iss.message });
    }
  }
  return out;
}

const requiredMessage = (iss: { code: string; input?: unknown }) =>
  (iss.code === 'invalid_type' || iss.code === 'invalid_union') && iss.input === undefined ? 'required' : undefined;

/** Parses a raw document (from YAML or JSON) and applies every rule that needs no file system. */
export function validatePlanDocument(raw: unknown): { plan?: PlanDocument; errors: PlanError[] } {
  const errors: PlanError[] = findSecrets(raw);
  const parsed = planSchema.safeParse(raw, { error: requiredMessage });
  if (!parsed.success) {
    errors.push(...zodIssuesToErrors(parsed.error.issues));
    errors.push(...salvagedCrossFieldErrors(raw));
    return { errors };
  }
  errors.push(...crossFieldErrors(parsed.data));
  return errors.length ? { errors } : { plan: parsed.data, errors };
}

/**
 * The cross-field rules of a document that does not parse, so that one bad value does not hide every other error: each
 * top-level section that parses on its own is taken as parsed, the others as if absent (their default). Left out are
 * the errors inside such a section (its values are unchecked) and those naming it (`… without a traffic section`),
 * which its absence alone could cause; a rule that needs its values reports nothing.
 */
function salvagedCrossFieldErrors(raw: unknown): PlanError[] {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return [];
  const doc: Record<string, unknown> = {};
  const broken: string[] = [];
  for (const [key, section] of Object.entries(planSchema.shape)) {
    const r = (section as z.ZodType).safeParse((raw as Record<string, unknown>)[key]);
    if (r.success) doc[key] = r.data;
    else {
      broken.push(key);
      const absent = (section as z.ZodType).safeParse(undefined);
      if (absent.success) doc[key] = absent.data;
    }
  }
  const naming = broken.map((k) => new RegExp(`\\b${k}\\b`, 'i'));
  try {
    return crossFieldErrors(doc as PlanDocument).filter(
      (e) => !broken.includes(e.path.split(/[.[]/)[0]) && !naming.some((n) => n.test(e.message)),
    );
  } catch {
    return [];
  }
}

function duplicates<T>(items: T[], key: (t: T) => string): Set<string> {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const it of items) {
    const k = key(it);
    if (seen.has(k)) dup.add(k);
    seen.add(k);
  }
  return dup;
}

/**
 * Copy jobs whose target takes the new path's writes (the plan moves traffic) while nothing syncs them back to the
 * source, and whose plan does not accept losing them: a rollback would silently drop those writes.
 */
export function unprotectedTargets<J extends { sync?: string; discardNewPathWrites?: boolean }>(plan: {
  traffic?: unknown;
  copy: J[];
}): J[] {
  if (!plan.traffic) return [];
  return plan.copy.filter((j) => j.sync !== 'bidirectional' && !j.discardNewPathWrites);
}

/** Why a job is refused by unprotectedTargets, in words. */
export function unprotectedMessage(job: { name: string; to: string; sync?: string }): string {
  return (
    `traffic sends the application's writes to ${job.to}, and copy job ${job.name} (sync: ${job.sync ?? 'default'}) ` +
    'syncs nothing back: a rollback would lose them. Use sync: bidirectional (with reverse for mapped columns, or writeBack for a query source), or ' +
    'set discardNewPathWrites: true to accept losing them (the rollback reports how many rows it discarded)'
  );
}

function crossFieldErrors(plan: PlanDocument): PlanError[] {
  const errors: PlanError[] = [];
  const err = (path: PropertyKey[], message: string) => errors.push({ path: formatPath(path), message });

  // Schema and cleanup steps share one ledger (tidemark.history, by plan and step id): their ids are one namespace.
  const cleanupSteps = plan.cleanup?.steps ?? [];
  const dupSteps = duplicates([...plan.schema, ...cleanupSteps], (s) => s.id);
  plan.schema.forEach((s, i) => dupSteps.has(s.id) && err(['schema', i, 'id'], `duplicate step id "${s.id}"`));
  cleanupSteps.forEach(
    (s, i) => dupSteps.has(s.id) && err(['cleanup', 'steps', i, 'id'], `duplicate step id "${s.id}"`),
  );

  const jobNames = new Set(plan.copy.map((j) => j.name));
  const dupJobs = duplicates(plan.copy, (j) => j.name);
  const sharedTargets = duplicates(plan.copy, (j) => j.to);
  plan.copy.forEach((job, i) => {
    const p = ['copy', i];
    if (dupJobs.has(job.name)) err([...p, 'name'], `duplicate copy job name "${job.name}"`);
    if (job.from && job.query) err(p, 'give either from or query, not both');
    if (!job.from && !job.query) err([...p, 'from'], 'required (or give query)');
    if (job.query && !/^\s*(select|with|values|table)\b/i.test(job.query)) err([...p, 'query'], 'must be a SELECT');
    if (job.query && !job.columns)
      err([...p, 'columns'], 'required for a query source (target column: expression over the query row)');
    if (job.from && job.to === job.from && !plan.target)
      err([...p, 'to'], 'must differ from from (one database, no target)');
    const keys = jobKeys(job);
    if (keys.source.length !== keys.target.length) err([...p, 'key'], 'needs as many target columns as source columns');
    for (const [j, src] of (job.syncFrom ?? []).entries()) {
      const n = Array.isArray(src.key) ? src.key.length : 1;
      if (n !== keys.source.length)
        err([...p, 'syncFrom', j, 'key'], `needs one expression per key column (${keys.source.length})`);
    }
    for (const col of Object.keys(job.slice ?? {})) {
      if (keys.target.includes(col))
        err([...p, 'slice', col], 'is a key column; a slice column tells jobs apart beside the key');
    }
    if (sharedTargets.has(job.to) && !job.slice)
      err([...p, 'slice'], `required: ${job.to} is filled by several jobs, and each needs its slice of it`);
    if (job.sync === 'bidirectional' && !job.from && !job.writeBack)
      err(
        [...p, 'sync'],
        'bidirectional sync of a query source needs writeBack: the old tables its rows are written back to',
      );
    if (job.writeBack && !job.query) err([...p, 'writeBack'], 'only used with a query source (from uses reverse)');
    if (job.writeBack && job.sync !== 'bidirectional') err([...p, 'writeBack'], 'only used with sync: bidirectional');
    job.writeBack?.forEach((w, j) => {
      const key = Array.isArray(w.key) ? w.key : [w.key];
      const missing = key.filter((k) => w.columns[k] === undefined);
      if (missing.length)
        err([...p, 'writeBack', j, 'columns'], `needs the key column(s) ${missing.map((k) => `"${k}"`).join(', ')}`);
      if (w.unfold && !w.owner)
        err(
          [...p, 'writeBack', j, 'owner'],
          'required with unfold: the old rows one target row stands for, as expressions over the target row',
        );
    });
    if (job.reverse && job.sync !== 'bidirectional') err([...p, 'reverse'], 'only used with sync: bidirectional');
    if (job.query && job.sync && job.sync !== 'none' && !job.syncFrom?.length)
      err(
        [...p, 'syncFrom'],
        'required to sync a query source: list the tables it reads and the key expression for each',
      );
    if (job.syncFrom && !job.query) err([...p, 'syncFrom'], 'only used with a query source');
    if (job.discardNewPathWrites && !plan.traffic)
      err([...p, 'discardNewPathWrites'], 'only used with a traffic section');
    if (job.maxBatchSize !== undefined && job.maxBatchSize < job.batchSize)
      err([...p, 'maxBatchSize'], 'must be at least batchSize');
  });

  // The sync a job gets by default (forward for tables, none for queries) counts as not syncing back.
  // Each job keeps its index: two jobs may share a name (reported above), and each is reported at its own path.
  const resolvedSync = plan.copy.map((j, index) => ({ ...j, index, sync: j.sync ?? (j.query ? 'none' : 'forward') }));
  for (const job of unprotectedTargets({ traffic: plan.traffic, copy: resolvedSync })) {
    err(['copy', job.index, 'sync'], unprotectedMessage(job));
  }

  plan.validate.forEach((v, i) => {
    const keys = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined);
    if (keys.length !== 1) {
      err(['validate', i], 'each check needs exactly one of rowCount, checksum, sql, orphans');
      return;
    }
    const ref = v.rowCount?.copy ?? v.checksum?.copy;
    if (ref !== undefined && !jobNames.has(ref)) err(['validate', i, keys[0], 'copy'], `no copy job named "${ref}"`);
    if (v.sql && v.sql.expect === undefined && v.sql.max === undefined && v.sql.min === undefined)
      err(['validate', i, 'sql'], 'needs expect, max or min');
  });

  if (plan.traffic) {
    const stages = plan.traffic.stages;
    stages.forEach((s, i) => {
      if (i > 0 && s.percent <= stages[i - 1].percent)
        err(['traffic', 'stages', i, 'percent'], 'must be greater than the previous stage');
    });
    if (stages.length && stages[stages.length - 1].percent !== 100)
      err(['traffic', 'stages', stages.length - 1, 'percent'], 'the last stage must reach 100');
    plan.traffic.gates.forEach((g, i) => {
      const sources = ['sql', 'prometheus', 'http'].filter((k) => (g as Record<string, unknown>)[k] !== undefined);
      if (sources.length !== 1) err(['traffic', 'gates', i], 'needs exactly one of sql, prometheus, http');
      if (g.max === undefined && g.min === undefined) err(['traffic', 'gates', i], 'needs max or min');
      if (g.database && !g.sql) err(['traffic', 'gates', i, 'database'], 'only used with sql');
      for (const k of ['prometheus', 'http'] as const) {
        const src = g[k];
        if (src && !src.url === !src.urlEnv) err(['traffic', 'gates', i, k], 'needs exactly one of url, urlEnv');
      }
    });
  }
  if (plan.target) {
    plan.copy.forEach((job, i) => {
      if (!job.from) err(['copy', i, 'query'], 'a copy across databases (target) needs a table source (from)');
      if (job.writeBack) err(['copy', i, 'writeBack'], 'not used across databases');
    });
    if (plan.target.urlEnv === plan.database.urlEnv) err(['target', 'urlEnv'], 'must differ from database.urlEnv');
    plan.copy.forEach((job, i) => {
      if (job.discardNewPathWrites) {
        err(['copy', i, 'discardNewPathWrites'], "not used across databases: the target's writes always flow back");
      }
    });
    if (plan.copy.some((j) => j.sync !== 'none') && !plan.cleanup) {
      err(['cleanup'], 'a plan with a target database needs a cleanup section: cleanup is what ends change capture');
    }
  } else {
    plan.schema.forEach((s, i) => s.on && err(['schema', i, 'on'], 'only used with a target database'));
    plan.validate.forEach((v, i) => {
      if (v.sql?.on) err(['validate', i, 'sql', 'on'], 'only used with a target database');
      if (v.orphans?.on) err(['validate', i, 'orphans', 'on'], 'only used with a target database');
    });
    if (plan.traffic?.flagIn === 'target') err(['traffic', 'flagIn'], 'only used with a target database');
  }
  if (plan.approvals.includes('traffic') && !plan.traffic)
    err(['approvals'], 'traffic approval without a traffic section');
  if (plan.approvals.includes('cleanup') && !plan.cleanup)
    err(['approvals'], 'cleanup approval without a cleanup section');
  if (plan.cleanup?.dropAfter !== undefined && !plan.cleanup.archive.length)
    err(['cleanup', 'dropAfter'], 'only used with archive');
  return errors;
}
