// The compensation stack. A phase registers the undo of a change before it makes the change; a rollback runs the
// undos newest first and stops at the first one that fails, because an older undo could then do harm (dropping the new
// table while the flag that sends traffic to it could not be put back). Entries are plain data — the phase that owns an
// entry, and the arguments its undo needs — so they survive continue-as-new and are dispatched, not re-derived.
import type { PhaseName } from '../plan/types';
import type { CompensationRecord } from './messages';

/** An undo's arguments: `kind` says which of its phase's undos, the rest is whatever that undo needs. */
export interface UndoAction {
  kind: string;
}

export interface SagaEntry<A extends UndoAction = UndoAction> {
  record: CompensationRecord;
  action: A;
}

export interface CompensationOutcome {
  /** The compensation that failed (and stopped the rollback), if one did. */
  failed?: CompensationRecord;
  /** Compensations left alone because a newer one failed, newest first. */
  notRun: CompensationRecord[];
}

export class Saga {
  private seq: number;

  constructor(private readonly entries: SagaEntry[] = []) {
    this.seq = entries.length;
  }

  /** Plain data to carry across continue-as-new. */
  snapshot(): SagaEntry[] {
    return this.entries;
  }

  records(): CompensationRecord[] {
    return this.entries.map((e) => e.record);
  }

  /** Whether anything is registered that a rollback would run. */
  get pending(): boolean {
    return this.entries.some((e) => e.record.status === 'registered');
  }

  /** Registers an undo; returns its id. */
  add(phase: PhaseName, description: string, action: UndoAction): string {
    const record: CompensationRecord = { id: `${phase}-${++this.seq}`, phase, description, status: 'registered' };
    this.entries.push({ record, action });
    return record.id;
  }

  /** Retires an entry that can no longer run (its objects are gone for good, e.g. after the archive drop). */
  drop(id: string): void {
    const e = this.entries.find((x) => x.record.id === id);
    if (e && e.record.status === 'registered') e.record.status = 'dropped';
  }

  /** After a failed compensation: the failed one and those left after it are to be run again. */
  retryFailed(): void {
    for (const e of this.entries) {
      if (e.record.status !== 'failed' && e.record.status !== 'not-run') continue;
      e.record.status = 'registered';
      delete e.record.error;
    }
  }

  /**
   * Runs every registered undo newest first, recording each outcome; stops at the first failure and marks the older
   * ones not-run. `now` stamps the records (workflow time).
   */
  async compensate(run: (entry: SagaEntry) => Promise<string | void>, now: () => string): Promise<CompensationOutcome> {
    const todo = [...this.entries].reverse().filter((e) => e.record.status === 'registered');
    for (const [i, e] of todo.entries()) {
      e.record.status = 'running';
      e.record.at = now();
      try {
        const note = await run(e);
        e.record.status = 'done';
        if (note) e.record.description = `${e.record.description} — ${note}`;
        e.record.at = now();
      } catch (err) {
        e.record.status = 'failed';
        e.record.error = errorMessage(err);
        e.record.at = now();
        const notRun = todo.slice(i + 1).map((x) => x.record);
        for (const r of notRun) r.status = 'not-run';
        return { failed: e.record, notRun };
      }
    }
    return { notRun: [] };
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
