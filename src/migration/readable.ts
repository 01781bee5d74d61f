// Numbers as people read them, shared by the workflow's texts (events, Web UI details) and the CLI. Pure.

/** A reading with a sensible number of digits (0.0500000001 → 0.05, 1234.5678 → 1235). */
export function readable(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

/** An absolute time as people read it, always in UTC and saying so (2026-01-01 12:00:00 UTC). */
export function utc(at: string | number): string {
  const iso = typeof at === 'number' ? new Date(at).toISOString() : at;
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}

/** A count with thousands separators (1234567 → 1,234,567), the same in every locale. */
export function count(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
