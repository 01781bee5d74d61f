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

/** SQLSTATEs a retry can fix: lock timeout, deadlock, serialization failure, connection trouble, shutdown. */
const RETRYABLE = new Set([
  '55P03',
  '40P01',
  '40001',
  '57P01',
  '57P02',
  '57P03',
  '53300',
  '08000',
  '08003',
  '08006',
  '08001',
  '08004',
]);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

export function isRetryablePgError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: string }).code;
  if (code && (RETRYABLE.has(code) || NETWORK_CODES.has(code))) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(e.message);
}

/** One line: message plus code, detail, hint and position when PostgreSQL gave them. */
export function formatPgError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const pg = e as PgErrorLike;
  const parts = [e.message];
  if (pg.code && /^[0-9A-Z]{5}$/.test(pg.code)) parts.push(`code ${pg.code}`);
  if (pg.detail) parts.push(`detail: ${pg.detail}`);
  if (pg.hint) parts.push(`hint: ${pg.hint}`);
  if (pg.position) parts.push(`at position ${pg.position}`);
  return parts.join(' | ').replace(/\s*\n\s*/g, ' ');
}
