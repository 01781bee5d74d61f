// Sample data for the meetings example: the application's tables before the migration, with realistic gaps
// (meetings without a type, a few orphaned participants), generated deterministically.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { projectRoot } from '../infra/tools';

export function meetingsExampleDir(): string {
  return join(projectRoot(), 'examples', 'meetings');
}

/** Creates the example's tables (seed.sql) and fills them (seed-data.sql, the files the Docker stack seeds with too). */
export async function seedMeetings(url: string, rows: number): Promise<void> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(readFileSync(join(meetingsExampleDir(), 'seed.sql'), 'utf8'));
    await c.query(`SELECT set_config('tidemark.seed_rows', $1, false)`, [String(Math.floor(rows))]);
    await c.query(readFileSync(join(meetingsExampleDir(), 'seed-data.sql'), 'utf8'));
  } finally {
    await c.end();
  }
}
