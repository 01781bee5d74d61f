// Reads a plan file (YAML or JSON), validates it and embeds every SQL file it names with its sha256.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { PlanDocument } from './schema';
import type { ResolvedPlan, SqlSource } from './types';
import {
  formatPath,
  formatPlanError,
  SECRET_MESSAGE,
  secretLineInSql,
  validatePlanDocument,
  type PlanError,
} from './validate';

export class PlanError_ extends Error {}

/** Thrown when a plan is invalid; `errors` holds every problem found, each with its path. */
export class InvalidPlanError extends Error {
  constructor(
    public readonly file: string,
    public readonly errors: PlanError[],
  ) {
    super(errors.map(formatPlanError).join('\n'));
    this.name = 'InvalidPlanError';
  }
}

export function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

function parseText(file: string, text: string): { raw?: unknown; errors: PlanError[] } {
  if (extname(file).toLowerCase() === '.json') {
    try {
      return { raw: JSON.parse(text), errors: [] };
    } catch (e) {
      return { errors: [{ path: '(plan)', message: `invalid JSON: ${(e as Error).message}` }] };
    }
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    return {
      errors: doc.errors.map((e) => ({
        path: '(plan)',
        message: `invalid YAML at line ${e.linePos?.[0]?.line ?? '?'}, column ${e.linePos?.[0]?.col ?? '?'}: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
      })),
    };
  }
  return { raw: doc.toJS(), errors: [] };
}

/** Every SQL file path a raw document names, with its plan path, whatever else is wrong with it. */
function referencedFiles(raw: unknown): { path: PropertyKey[]; file: string }[] {
  const out: { path: PropertyKey[]; file: string }[] = [];
  const r = raw as { schema?: unknown; cleanup?: { sql?: unknown; steps?: unknown } };
  const steps = (list: unknown, at: PropertyKey[]) => {
    if (!Array.isArray(list)) return;
    list.forEach((step: unknown, i) => {
      for (const k of ['up', 'down'] as const) {
        const f = (step as Record<string, unknown> | null)?.[k];
        if (typeof f === 'string' && f.trim()) out.push({ path: [...at, i, k], file: f });
      }
    });
  };
  steps(r?.schema, ['schema']);
  if (r?.cleanup && typeof r.cleanup === 'object') steps(r.cleanup.steps, ['cleanup', 'steps']);
  if (r?.cleanup && typeof r.cleanup.sql === 'string' && r.cleanup.sql.trim())
    out.push({ path: ['cleanup', 'sql'], file: r.cleanup.sql });
  return out;
}

function readSql(baseDir: string, file: string): SqlSource | string {
  const abs = isAbsolute(file) ? file : resolve(baseDir, file);
  let text: string;
  try {
    if (!statSync(abs).isFile()) return `not a file: ${file}`;
    text = readFileSync(abs, 'utf8');
  } catch {
    return `file not found: ${file}`;
  }
  if (!text.trim()) return `file is empty: ${file}`;
  const secret = secretLineInSql(text);
  if (secret !== undefined) return `${file} line ${secret} ${SECRET_MESSAGE}`;
  return { path: file, sql: text, sha256: sha256(text) };
}

/** Loads and resolves a plan, or throws InvalidPlanError listing every problem at once. */
export function loadPlan(file: string): ResolvedPlan {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InvalidPlanError(file, [
      { path: '(plan)', message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` },
    ]);
  }
  return resolvePlanText(file, text);
}

export function resolvePlanText(file: string, text: string): ResolvedPlan {
  const baseDir = dirname(resolve(file));
  const { raw, errors } = parseText(file, text);
  if (raw === undefined) throw new InvalidPlanError(file, errors);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidPlanError(file, [{ path: '(plan)', message: 'must be a mapping of keys (name, database, …)' }]);
  }

  const sqlByPath = new Map<string, SqlSource>();
  for (const ref of referencedFiles(raw)) {
    const got = readSql(baseDir, ref.file);
    if (typeof got === 'string') errors.push({ path: formatPath(ref.path), message: got });
    else sqlByPath.set(formatPath(ref.path), got);
  }

  const { plan, errors: docErrors } = validatePlanDocument(raw);
  errors.push(...docErrors);
  if (!plan || errors.length) throw new InvalidPlanError(file, errors);
  return resolveDocument(plan, baseDir, (p) => sqlByPath.get(p)!, { path: file, sha256: sha256(text) });
}

function resolveDocument(
  plan: PlanDocument,
  baseDir: string,
  sqlAt: (path: string) => SqlSource,
  source: ResolvedPlan['source'],
): ResolvedPlan {
  return {
    ...plan,
    // backup.dir is kept as written: the worker writes the dumps, so a relative one resolves there (activity-kit.ts).
    schema: plan.schema.map((s, i) => ({
      id: s.id,
      transactional: s.transactional,
      ...(plan.target ? { on: s.on ?? 'target' } : {}),
      up: sqlAt(`schema[${i}].up`),
      down: sqlAt(`schema[${i}].down`),
    })),
    copy: plan.copy.map((j) => ({ ...j, sync: j.sync ?? (j.query ? 'none' : 'forward') })),
    cleanup: plan.cleanup && {
      ...plan.cleanup,
      steps: plan.cleanup.steps.map((s, i) => ({
        id: s.id,
        transactional: s.transactional,
        up: sqlAt(`cleanup.steps[${i}].up`),
        down: sqlAt(`cleanup.steps[${i}].down`),
      })),
      sql: plan.cleanup.sql ? sqlAt('cleanup.sql') : undefined,
    },
    source,
  };
}
