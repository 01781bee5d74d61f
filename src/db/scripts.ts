// tidemark.scripts: each run's SQL scripts by sha256 (see plan/scripts.ts), written once, read by the activities.
import { createHash } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import type { SqlSource } from '../plan/types';
import { TIDEMARK_SCHEMA } from './names';
import { quoteIdent } from './quote';

const SCRIPTS = `${quoteIdent(TIDEMARK_SCHEMA)}.scripts`;

export class ScriptMissingError extends Error {
  constructor(src: SqlSource) {
    super(
      `script ${src.path} (sha256 ${src.sha256.slice(0, 12)}) is not in ${TIDEMARK_SCHEMA}.scripts or does not match its sha256`,
    );
    this.name = 'ScriptMissingError';
  }
}

export async function storeScripts(db: Pool | PoolClient, scripts: SqlSource[]): Promise<void> {
  for (const s of scripts) {
    if (createHash('sha256').update(s.sql).digest('hex') !== s.sha256) throw new ScriptMissingError(s);
    await db.query(`INSERT INTO ${SCRIPTS} (sha256, path, sql) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING`, [
      s.sha256,
      s.path,
      s.sql,
    ]);
  }
}

/** The script's text: carried along, or read from tidemark.scripts (checked against its sha256). */
export async function scriptText(db: Pool | PoolClient, src: SqlSource): Promise<string> {
  if (src.sql) return src.sql;
  const r = await db.query(`SELECT sql FROM ${SCRIPTS} WHERE sha256 = $1`, [src.sha256]);
  const sql = r.rows[0]?.sql as string | undefined;
  if (sql === undefined || createHash('sha256').update(sql).digest('hex') !== src.sha256)
    throw new ScriptMissingError(src);
  return sql;
}
