// The one place secrets are taken out of text. Connection strings and endpoint URLs live in the worker's environment
// (a plan names the variable, never the value); whatever tidemark writes — activity results and failures (so workflow
// history, status and events), logs, CLI output — goes through `redact`. It knows the values registered here (every
// urlEnv's value, on first use) and, as a net, any `scheme://user:password@` or `password=…` it meets.

const known = new Set<string>();

const CREDENTIALS_IN_URL = /([a-z][a-z0-9+.-]*:\/\/)([^\s/@:'"]*)(:[^\s/@'"]*)?@/gi;
const PASSWORD_PAIR = /\b(password|passwd|pwd)=([^\s&;'"]+)/gi;

/** Remembers a secret value (a URL: also its password alone, which errors sometimes quote). */
export function registerSecret(value: string | undefined): void {
  if (!value || value.length < 4) return;
  known.add(value);
  try {
    const u = new URL(value);
    if (u.password) known.add(decodeURIComponent(u.password)).add(u.password);
  } catch {
    const m = /password=([^\s&;]+)/i.exec(value);
    if (m) known.add(m[1]);
  }
}

/** Registers every value in `env` that carries credentials (a URL with a password, a password=… string). */
export function registerSecretsIn(env: NodeJS.ProcessEnv): void {
  for (const v of Object.values(env)) {
    if (v && (new RegExp(CREDENTIALS_IN_URL.source, 'i').test(v) || /password=/i.test(v))) registerSecret(v);
  }
}

/** `text` with every known secret and every credential-looking part replaced by [redacted]. */
export function redact(text: string): string {
  let out = text;
  for (const s of [...known].sort((a, b) => b.length - a.length)) {
    if (s.length >= 4 && out.includes(s)) out = out.split(s).join('[redacted]');
  }
  return out
    .replace(CREDENTIALS_IN_URL, (_m, scheme: string, user: string, pass?: string) =>
      pass ? `${scheme}${user}:[redacted]@` : `${scheme}${user}@`,
    )
    .replace(PASSWORD_PAIR, (_m, k: string) => `${k}=[redacted]`);
}

/** Deep copy of a JSON-like value with every string redacted (errors keep their class, message redacted). */
export function redactDeep<T>(value: T, seen = new WeakSet<object>()): T {
  if (typeof value === 'string') return redact(value) as T;
  if (!value || typeof value !== 'object') return value;
  if (seen.has(value)) return value;
  seen.add(value);
  if (value instanceof Error) {
    value.message = redact(value.message);
    if (value.stack) value.stack = redact(value.stack);
    const e = value as { cause?: unknown; details?: unknown[] };
    if (e.cause) redactDeep(e.cause, seen);
    if (Array.isArray(e.details)) e.details = redactDeep(e.details, seen);
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, seen)) as T;
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v, seen)])) as T;
}

/**
 * A fetch-able URL and headers for a URL that may carry `user:password@`: fetch refuses such URLs (and quotes them
 * in its error), so the credentials travel as a Basic Authorization header instead.
 */
export function withoutCredentials(url: string): { url: string; headers: Record<string, string> } {
  const u = new URL(url);
  if (!u.username && !u.password) return { url, headers: {} };
  const basic = Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
  u.username = '';
  u.password = '';
  return { url: u.toString(), headers: { authorization: `Basic ${basic}` } };
}
