// The compensation stack: each change registers its undo the moment it succeeds; a rollback runs them newest first,
// records every outcome, and never swallows a failure. Entries are plain data so the state stays JSON.
import type { PhaseName } from '../plan/types';
import type { CompensationRecord } from './messages';

export type CompensationAction =
  | { kind: 'revertSchemaStep'; stepId: string }
  | { kind: 'undoCopy'; job: string; emptyTarget: boolean }
  | { kind: 'resetFlag'; flag: string }
  | { kind: 'restoreArchivedTables'; tables: string[] };

export interface SagaEntry {
  record: CompensationRecord;
  action: CompensationAction;
}

export class Saga {
  constructor(
    private readonly entries: SagaEntry[] = [],
    private seq = entries.length,
  ) {}

  /** Plain data to carry across continue-as-new. */
  snapshot(): SagaEntry[] {
    return this.entries;
  }

  /** Registers an undo; returns the record shown in status. */
  add(phase: PhaseName, description: string, action: CompensationAction): CompensationRecord {
    const record: CompensationRecord = { id: `${phase}-${++this.seq}`, phase, description, status: 'registered' };
    this.entries.push({ record, action });
    return record;
  }

  /** Marks entries that can no longer run (their objects are gone for good), e.g. after the archive drop. */
  drop(pred: (a: CompensationAction) => boolean): void {
    for (const e of this.entries) if (pred(e.action) && e.record.status === 'registered') e.record.status = 'dropped';
  }

  records(): CompensationRecord[] {
    return this.entries.map((e) => e.record);
  }

  /** Runs every registered compensation newest first; returns the failures (each also recorded on its entry). */
  async compensate(run: (a: CompensationAction) => Promise<string | void>, now: () => string): Promise<string[]> {
    const failures: string[] = [];
    for (const e of [...this.entries].reverse()) {
      if (e.record.status !== 'registered' && e.record.status !== 'failed') continue;
      e.record.status = 'running';
      e.record.at = now();
      try {
        const note = await run(e.action);
        e.record.status = 'done';
        if (note) e.record.description = `${e.record.description} — ${note}`;
      } catch (err) {
        e.record.status = 'failed';
        e.record.error = errorMessage(err);
        failures.push(`${e.record.description}: ${e.record.error}`);
      }
      e.record.at = now();
    }
    return failures;
  }
}

/** The most useful message of a Temporal failure chain (activity failures wrap the real cause). */
export function errorMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown; name?: string } | undefined;
  let msg = e?.message ?? String(err);
  while (e?.cause) {
    e = e.cause as typeof e;
    if (e?.message) msg = e.message;
  }
  return msg;
}
