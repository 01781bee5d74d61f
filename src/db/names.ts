// Every name tidemark creates in a database comes from here, so cleanup can always find it again.
import { createHash } from 'node:crypto';

export const TIDEMARK_SCHEMA = 'tidemark';
export const ARCHIVE_SCHEMA = 'tidemark_archive';
export const FLAGS_CHANNEL = 'tidemark_flags';
/** Session setting set while tidemark itself writes a table, so sync triggers do not echo the write back. */
export const SYNC_GUARD_SETTING = 'tidemark.syncing';

const MAX_IDENT = 63;

/** Keeps generated names within PostgreSQL's 63-byte limit while staying unique. */
function bounded(name: string): string {
  if (Buffer.byteLength(name) <= MAX_IDENT) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return name.slice(0, MAX_IDENT - 9) + '_' + hash;
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9_]+/g, '_');
}

export type SyncDirection = 'forward' | 'reverse';

/**
 * The identity of one copy job's sync objects within one migration run: part of every trigger and function name, and
 * the token its triggers put in the sync guard. Two migrations (or two jobs whose names slug alike) never share one,
 * so they never share a trigger function, and one's cleanup cannot drop the other's triggers.
 */
export function syncIdFor(runKey: string, job: string): string {
  return createHash('sha256').update(`${runKey}\0${job}`).digest('hex').slice(0, 10);
}

/** A statement trigger of a sync: one per event (transition tables allow one event per trigger). */
export type SyncTriggerKind = 'ins' | 'upd' | 'del' | 'truncate';

/** Trigger (one per event) that copies writes of one side of a copy job to the other. */
export function syncTriggerName(job: string, syncId: string, direction: SyncDirection, kind: SyncTriggerKind): string {
  return bounded(`tidemark_sync_${slug(job)}_${syncId}_${direction}_${kind}`);
}

export function syncFunctionName(job: string, syncId: string, direction: SyncDirection): string {
  return bounded(`tidemark_sync_${slug(job)}_${syncId}_${direction}_fn`);
}

/** Triggers (insert, update, delete) and function counting the application's writes to a job's target. */
export function writeCountName(job: string, syncId: string, what: 'ins' | 'upd' | 'del' | 'function'): string {
  return bounded(`tidemark_sync_${slug(job)}_${syncId}_count${what === 'function' ? '_fn' : `_${what}`}`);
}

/** Triggers (one per event) and function replaying writes of the i-th table a query source reads (`syncFrom[i]`). */
export function querySyncName(
  job: string,
  syncId: string,
  index: number,
  what: 'trigger' | 'function',
  kind: SyncTriggerKind = 'ins',
): string {
  return bounded(`tidemark_sync_${slug(job)}_${syncId}_from${index}${what === 'function' ? '_fn' : `_${kind}`}`);
}

/**
 * Change capture of a blue-green copy job (one direction): its statement triggers (one per event) and their function.
 * The forward capture sits on the source table, the reverse one on the target table, each in its own database.
 */
export function captureName(
  job: string,
  syncId: string,
  direction: SyncDirection,
  what: SyncTriggerKind | 'function',
): string {
  return bounded(`tidemark_capture_${slug(job)}_${syncId}_${direction}${what === 'function' ? '_fn' : `_${what}`}`);
}

/** The stream a direction of a job's capture logs its changes under (tidemark.changes.stream). */
export function streamName(syncId: string, direction: SyncDirection): string {
  return `${syncId}:${direction}`;
}
