// Turns PostgreSQL errors into one readable line and decides which ones are worth retrying.

export interface PgErrorLike {
  message: string;
  code?: string;
  detail?: string;
  hint?: string;
  position?: string;
  where?: string;
  schema?: string;
  table?: string;
  column?: string;
  constraint?: string;
}

export function isPgError(e: unknown): e is PgErrorLike & Error {
  return e instanceof Error && typeof (e as PgErrorLike).code === 'string' && (e as PgErrorLike).code!.length === 5;
}

/** Conflicts with other sessions: wait and retry on the same connection. */
const LOCK_CONFLICTS = new Set(['55P03', '40P01', '40001']);
/** The connection is gone (terminated backend, server shutdown or restart, network): retry on a fresh one. */
const CONNECTION_LOST = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006', '08P01']);
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
]);
const LOST_MESSAGES =
  /Connection terminated|connection timeout|Client has encountered a connection error|Client was closed|terminating connection|server closed the connection|Connection closed/i;

const codeOf = (e: unknown) => (e as { code?: unknown })?.code;

export function isLockConflict(e: unknown): boolean {
  return e instanceof Error && LOCK_CONFLICTS.has(codeOf(e) as string);
}

/** True when the error means the session itself is lost: the client must be thrown away, not reused. */
export function isConnectionLoss(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = codeOf(e) as string | undefined;
  if (code && (CONNECTION_LOST.has(code) || NETWORK_CODES.has(code))) return true;
  return LOST_MESSAGES.test(e.message);
}

/**
 * Two sessions changing one catalog row at once (two attempts of one step creating triggers on one table, when the
 * first outlived its timeout): PostgreSQL reports it as an internal error, which a retry, alone, gets past.
 */
export function isConcurrentCatalogChange(e: unknown): boolean {
  return codeOf(e) === 'XX000' && /^tuple concurrently (updated|deleted)$/.test((e as Error).message ?? '');
}

/** Errors a retry can fix: lock conflicts, a lost connection, too many connections, a concurrent catalog change. */
export function isRetryablePgError(e: unknown): boolean {
  return isLockConflict(e) || isConnectionLoss(e) || codeOf(e) === '53300' || isConcurrentCatalogChange(e);
}

/**
 * Whether a client that saw `e` must be destroyed rather than returned to its pool: its connection is lost, or the
 * error did not come from the server (the protocol state is unknown). SQL errors leave a usable session.
 */
export function breaksClient(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'CancelledFailure' || e.name === 'AbortError') return false;
  return isConnectionLoss(e) || !isPgError(e);
}

/**
 * One line: message plus code, detail, hint and position when PostgreSQL gave them. A detail that is a whole row of
 * the application's (`Failing row contains (…)`, from a CHECK or NOT NULL) is left out: the line goes to the
 * workflow's history, status, notifications and logs.
 */
export function formatPgError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const pg = e as PgErrorLike;
  const parts = [e.message];
  if (pg.code && /^[0-9A-Z]{5}$/.test(pg.code)) parts.push(`code ${pg.code}`);
  if (pg.detail?.startsWith('Failing row contains'))
    parts.push("detail: the failing row (its values left out: they are the application's data)");
  else if (pg.detail) parts.push(`detail: ${pg.detail}`);
  if (pg.hint) parts.push(`hint: ${pg.hint}`);
  if (pg.position) parts.push(`at position ${pg.position}`);
  return parts.join(' | ').replace(/\s*\n\s*/g, ' ');
}
