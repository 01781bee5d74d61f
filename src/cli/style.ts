// Colour for people at a terminal, through picocolors: only when stdout is a terminal, never with NO_COLOR set or
// --no-color. Everything else (pipes, files, --json) gets plain text.
import { createColors } from 'picocolors';

let colors = createColors(false);

export function setColor(allowed: boolean): void {
  const env = process.env;
  colors = createColors(allowed && process.stdout.isTTY === true && !env.NO_COLOR && env.TERM !== 'dumb');
}

export const c = {
  ok: (s: string) => colors.green(s),
  bad: (s: string) => colors.red(s),
  warn: (s: string) => colors.yellow(s),
  dim: (s: string) => colors.dim(s),
  bold: (s: string) => colors.bold(s),
  info: (s: string) => colors.cyan(s),
};

/** A migration or phase state, coloured by what it means. */
export function stateColor(state: string, text = state): string {
  if (state === 'completed' || state === 'ok') return c.ok(text);
  if (['failed', 'rolled-back', 'rolling-back', 'cancelled'].includes(state)) return c.bad(text);
  if (['paused', 'waiting-approval', 'skipped', 'pending'].includes(state)) return c.warn(text);
  return c.info(text);
}
