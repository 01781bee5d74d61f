// How the workflow calls activities: one proxy per kind of work, with its timeouts, retries and cancellation named
// next to it. Activities are imported as types only; the phases' workflow sides call them through these proxies.
import {
  ActivityCancellationType,
  proxyActivities,
  proxyLocalActivities,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../phases/activities';
import { NON_RETRYABLE } from './failures';

const retry = (o: Partial<NonNullable<ActivityOptions['retry']>> = {}): ActivityOptions['retry'] => ({
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '1m',
  maximumAttempts: 10,
  nonRetryableErrorTypes: NON_RETRYABLE,
  ...o,
});

/** An abort waits until the activity has stopped (its statement cancelled in the server) before compensating. */
const waitForCancel = { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED };

/**
 * Operator settings the running copy reads (pause, resume, throttle): local activities, run by the worker that runs the
 * workflow task without waiting for an activity slot. Paused copy ranges keep their slots (they wait at a batch
 * boundary); with every slot of every worker held by one, a resume sent as an ordinary activity would never start.
 */
export const operatorSettings = proxyLocalActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: retry(),
});

/**
 * Quick work an abort need not wait for: reads (preflight, planning, counts) and bookkeeping rows (reports, settings).
 * They heartbeat while they run (KEPT_ALIVE in phases/activities.ts), so a lost worker costs 30 s, not 15 minutes.
 */
export const quick = proxyActivities<Activities>({
  startToCloseTimeout: '15m',
  heartbeatTimeout: '30s',
  retry: retry(),
});

/**
 * Short steps that change the database (sync triggers, archive, cleanup SQL). They heartbeat, so a cancellation reaches
 * them while they wait for a lock, and an abort waits for them to stop.
 */
export const changes = proxyActivities<Activities>({
  startToCloseTimeout: '15m',
  heartbeatTimeout: '30s',
  retry: retry(),
  ...waitForCancel,
});

/** The flag must move fast: short timeout, quick retries; its undo (back to 0) too. */
export const flagChanges = proxyActivities<Activities>({
  startToCloseTimeout: '20s',
  heartbeatTimeout: '10s',
  retry: retry({ initialInterval: '200ms', maximumInterval: '5s', maximumAttempts: 20 }),
  ...waitForCancel,
});

/**
 * Long, heartbeating work: the copy and the checksum resume from their checkpoint on a new attempt. Attempts are not
 * limited, and each retry waits 10 s at most: an attempt that made progress before its session was killed still
 * counts toward the back-off, and at 1 min every later kill would have held the copy for a minute.
 */
export const longRunning = proxyActivities<Activities>({
  startToCloseTimeout: '30d',
  heartbeatTimeout: '15s',
  retry: retry({ maximumAttempts: undefined, maximumInterval: '10s' }),
  ...waitForCancel,
});

/** Schema steps can run for hours (CREATE INDEX CONCURRENTLY on a big table). */
export const schemaSteps = proxyActivities<Activities>({
  startToCloseTimeout: '24h',
  heartbeatTimeout: '30s',
  retry: retry(),
  ...waitForCancel,
});

export const backups = proxyActivities<Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '1m',
  retry: retry({ maximumAttempts: 3 }),
  ...waitForCancel,
});

export const gateReads = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  retry: retry({ maximumAttempts: 2 }),
});

/**
 * Compensations retry patiently: giving up leaves objects behind (and stops the rollback). They heartbeat while they
 * run (KEPT_ALIVE in phases/activities.ts), so a worker lost mid-rollback costs 30 s, not the 15-minute timeout.
 */
export const undos = proxyActivities<Activities>({
  startToCloseTimeout: '15m',
  heartbeatTimeout: '30s',
  retry: retry({ maximumAttempts: 12, maximumInterval: '30s' }),
});

/** Notices to webhooks: a few quick tries with backoff (about a minute), never waited for by the migration. */
export const notices = proxyActivities<Activities>({
  startToCloseTimeout: '10s',
  retry: retry({ initialInterval: '1s', maximumInterval: '15s', maximumAttempts: 5 }),
});

/** Reads a person waits for at a prompt (`tidemark history`): a few quick tries, then the error. */
export const promptReads = proxyActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: retry({ maximumAttempts: 3, maximumInterval: '5s' }),
});
