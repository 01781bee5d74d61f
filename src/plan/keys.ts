// A copy job's key as lists of column names, whatever form the plan wrote it in (pure: workflow code may use it).
import type { CopyJob } from './types';

export interface JobKeys {
  /** Key columns in the source row (table columns, or output columns of the query). */
  source: string[];
  /** The same key's columns in the target, in the same order. */
  target: string[];
}

const list = (k: string | string[]) => (Array.isArray(k) ? k : [k]);

export function jobKeys(job: Pick<CopyJob, 'key'>): JobKeys {
  const k = job.key;
  if (typeof k === 'string' || Array.isArray(k)) return { source: list(k), target: list(k) };
  return { source: list(k.source), target: list(k.target) };
}

/** The key as people read it: `id`, `(tenant_id, id)`, `id → legacy_id`. */
export function describeKey(job: Pick<CopyJob, 'key'>): string {
  const { source, target } = jobKeys(job);
  const show = (cols: string[]) => (cols.length === 1 ? cols[0] : `(${cols.join(', ')})`);
  return source.join() === target.join() ? show(source) : `${show(source)} → ${show(target)}`;
}

/** A sync source's key expressions as a list. */
export function syncKeyExprs(key: string | string[]): string[] {
  return list(key);
}
