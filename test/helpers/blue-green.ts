// Blue-green tests: the example plan pointed at two scratch databases, application writers on either side, and the
// comparison of the two through the example's mapping.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Pool } from 'pg';
import { freePort } from '../../src/infra/devserver';
import { PrivateCluster } from '../../src/infra/postgres';
import { projectRoot } from '../../src/infra/tools';
import { loadPlan } from '../../src/plan/load';
import type { ResolvedPlan } from '../../src/plan/types';
import type { TestDb } from './env';
import { LOOSE_BUDGET, tempDir } from './plans';

export const BLUE_GREEN_DIR = join(projectRoot(), 'examples', 'blue-green');

export async function seedBlue(db: TestDb, rows: number): Promise<void> {
  const { readFileSync } = await import('node:fs');
  const c = new Client({ connectionString: db.url });
  await c.connect();
  try {
    await c.query(`SELECT set_config('tidemark.seed_rows', $1, false)`, [String(rows)]);
    await c.query(readFileSync(join(BLUE_GREEN_DIR, 'seed.sql'), 'utf8'));
  } finally {
    await c.end();
  }
}

/** The example plan between `blue` and `green`, with the given stages and no waits or approvals. */
export function blueGreenPlan(
  blue: TestDb,
  green: TestDb,
  o: { stages: { percent: number; soak: number }[]; archive?: boolean },
): ResolvedPlan {
  const plan = loadPlan(join(BLUE_GREEN_DIR, 'plan.yaml'));
  return {
    ...plan,
    name: `blue-green-${blue.name.replace(/_/g, '-')}`,
    database: { urlEnv: blue.urlEnv },
    target: { ...plan.target!, urlEnv: green.urlEnv, maxLag: 2000 },
    approvals: [],
    backup: { ...plan.backup, dir: tempDir('tidemark-backup-') },
    copy: plan.copy.map((j) => ({ ...j, impact: LOOSE_BUDGET })),
    traffic: { ...plan.traffic!, stages: o.stages.map((s) => ({ ...s, approval: false })) },
    cleanup: { ...plan.cleanup!, after: 0, archive: o.archive ? plan.cleanup!.archive : [], dropAfter: undefined },
  };
}

/** Blue's cameras seen through the mapping, as green would hold them: one JSON text per row. */
export const BLUE_CAMERAS_AS_GREEN = `SELECT row_to_json(x)::text AS r FROM (
  SELECT id, name, ip_address::inet AS ip_address, port,
         split_part(resolution, 'x', 1)::integer AS resolution_width, split_part(resolution, 'x', 2)::integer AS resolution_height,
         fps, status, is_active = 1 AS is_active, config::jsonb AS config,
         created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at
    FROM cameras) AS x`;
export const GREEN_CAMERAS = `SELECT row_to_json(x)::text AS r FROM (
  SELECT id, name, ip_address, port, resolution_width, resolution_height, fps, status, is_active, config,
         created_at, updated_at FROM cameras) AS x`;
export const RESULTS = `SELECT row_to_json(x)::text AS r FROM (SELECT id, camera_id, at, count_in, count_out FROM counting_results) AS x`;

/** Rows of one side missing on the other, both ways (EXCEPT across two databases). */
export async function exceptAcross(
  a: TestDb,
  aSql: string,
  b: TestDb,
  bSql: string,
): Promise<{ onlyInA: string[]; onlyInB: string[] }> {
  const ra = new Set((await a.query<{ r: string }>(aSql)).map((x) => x.r));
  const rb = new Set((await b.query<{ r: string }>(bSql)).map((x) => x.r));
  return { onlyInA: [...ra].filter((x) => !rb.has(x)), onlyInB: [...rb].filter((x) => !ra.has(x)) };
}

/** What tidemark left in a database: triggers, its functions, captures, logged changes, row stamps, slots. */
export async function leftovers(db: TestDb): Promise<Record<string, number>> {
  const [r] = await db.query<Record<string, number>>(
    `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tidemark%')::int AS triggers,
            (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE nspname = 'tidemark' AND proname LIKE 'tidemark_capture%')::int AS functions,
            (SELECT count(*) FROM tidemark.captures)::int AS captures,
            (SELECT count(*) FROM tidemark.changes)::int AS changes,
            (SELECT count(*) FROM tidemark.row_clock)::int AS stamps,
            (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'tidemark%')::int AS slots,
            (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'tidemark%')::int AS publications`,
  );
  return r;
}

/**
 * An application writing cameras on one side: inserts (ids from its own range), updates of names and ports, deletes.
 * Every acknowledged write is recorded per id, in order (each id is written by one loop only), so a test can say what
 * each row must look like afterwards.
 */
export class CameraWriters {
  /** id → the last acknowledged state: a name and port, or deleted. */
  readonly last = new Map<number, { name: string; port: number } | 'deleted'>();
  /** id → acknowledged updates of it. */
  readonly updates = new Map<number, number>();
  acknowledged = 0;
  errors = 0;
  readonly firstNewId: number;
  private running = true;
  private readonly pool: Pool;
  private readonly loops: Promise<void>[];

  constructor(
    url: string,
    side: 'blue' | 'green',
    o: { loops: number; existingIds: number; firstNewId: number; pauseMs?: number },
  ) {
    this.firstNewId = o.firstNewId;
    this.pool = new Pool({ connectionString: url, max: o.loops });
    this.pool.on('error', () => undefined);
    let seq = 0;
    this.loops = Array.from({ length: o.loops }, async (_, loop) => {
      // Loop `loop` owns the existing ids ≡ loop (mod loops) and the new ids firstNewId + loop + k·loops.
      let nextNew = o.firstNewId + loop;
      const owned = (i: number) => 1 + loop + o.loops * (i % Math.max(1, Math.floor(o.existingIds / o.loops)));
      while (this.running) {
        const n = ++seq;
        const r = n % 10;
        try {
          if (r < 3) {
            const id = nextNew;
            nextNew += o.loops;
            const name = `${side}-new-${n}`;
            if (side === 'blue') {
              await this.pool.query(
                `INSERT INTO cameras (id, name, ip_address, port, resolution, is_active, config) VALUES ($1, $2, '10.9.9.9', 554, '640x480', 1, '{}')`,
                [id, name],
              );
            } else {
              await this.pool.query(
                `INSERT INTO cameras (id, name, ip_address, port, resolution_width, resolution_height, fps, status, is_active, config, created_at, updated_at)
                 VALUES ($1, $2, '10.9.9.9', 554, 640, 480, 25, 'online', true, '{}', now(), now())`,
                [id, name],
              );
            }
            this.last.set(id, { name, port: 554 });
          } else if (r < 9) {
            const id = owned(n);
            const name = `${side}-upd-${n}`;
            const port = 1000 + (n % 5000);
            const res = await this.pool.query(`UPDATE cameras SET name = $2, port = $3 WHERE id = $1`, [
              id,
              name,
              port,
            ]);
            if (res.rowCount) {
              this.last.set(id, { name, port });
              this.updates.set(id, (this.updates.get(id) ?? 0) + 1);
            }
          } else {
            const id = owned(n);
            const res = await this.pool.query(`DELETE FROM cameras WHERE id = $1`, [id]);
            if (res.rowCount) this.last.set(id, 'deleted');
          }
          this.acknowledged++;
        } catch {
          // Not acknowledged (the table is gone, a lock timed out): this write makes no promise.
          this.errors++;
        }
        if (o.pauseMs) await new Promise((res) => setTimeout(res, o.pauseMs));
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    await this.pool.end();
  }

  /**
   * Rows the applier changed more often than the application wrote them (see `countApplierWrites`): an application
   * INSERT may reach an existing row (one the copy got to first) as an update, so a new id may have one more.
   */
  async overApplied(db: TestDb): Promise<{ id: number; applierWrites: number; applicationWrites: number }[]> {
    const rows = await db.query<{ id: number; applier_writes: number }>(
      `SELECT id, applier_writes FROM cameras WHERE applier_writes > 0`,
    );
    return rows
      .map((r) => ({
        id: Number(r.id),
        applierWrites: r.applier_writes,
        applicationWrites: (this.updates.get(Number(r.id)) ?? 0) + (Number(r.id) >= this.firstNewId ? 1 : 0),
      }))
      .filter((r) => r.applierWrites > r.applicationWrites);
  }

  /** Acknowledged writes `db` does not show (it must show the last one of each id). */
  async missingIn(db: TestDb): Promise<string[]> {
    const rows = new Map(
      (await db.query<{ id: number; name: string; port: number }>(`SELECT id, name, port FROM cameras`)).map((r) => [
        Number(r.id),
        r,
      ]),
    );
    const missing: string[] = [];
    for (const [id, want] of this.last) {
      const got = rows.get(id);
      if (want === 'deleted') {
        if (got) missing.push(`${id}: deleted, still there as ${got.name}`);
      } else if (!got || got.name !== want.name || got.port !== want.port) {
        missing.push(`${id}: want ${want.name}/${want.port}, got ${got ? `${got.name}/${got.port}` : 'nothing'}`);
      }
    }
    return missing;
  }
}

/**
 * Counts, in a column of green's cameras the mapping does not know, every write of the applier that changes a row.
 * The applier is told apart from the copy's batches by the apply lock it holds: exclusive for the applier, shared for
 * a batch (capture-sql.ts). A change applied a second time over a newer one changes the row back and is counted; the
 * same row image written again (a change logged by decoding and by the triggers while capture switches) is not.
 */
export async function countApplierWrites(green: TestDb): Promise<void> {
  await green.query(`
    ALTER TABLE cameras ADD COLUMN applier_writes integer NOT NULL DEFAULT 0;
    CREATE FUNCTION count_applier_writes() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW IS DISTINCT FROM OLD AND EXISTS (
          SELECT 1 FROM pg_locks
          WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted
        ) THEN
          NEW.applier_writes = OLD.applier_writes + 1;
        END IF;
        RETURN NEW;
      END $$;
    CREATE TRIGGER count_applier_writes BEFORE UPDATE ON cameras FOR EACH ROW EXECUTE FUNCTION count_applier_writes();`);
}

/**
 * A PostgreSQL server of the test's own, started, on a free port in a fresh directory: `logical` lets tidemark capture
 * by logical decoding. Stop it with `removeCluster`.
 */
export async function startPrivateCluster(walLevel: 'logical' | 'replica'): Promise<PrivateCluster> {
  const c = new PrivateCluster({
    dir: mkdtempSync(join(tmpdir(), `tidemark-${walLevel}-`)),
    port: await freePort(),
    settings: { wal_level: walLevel, max_wal_senders: '4', max_replication_slots: '4', fsync: 'off' },
  });
  try {
    return await c.start();
  } catch (e) {
    removeCluster(c);
    throw e;
  }
}

/** Stops a private server at once and removes its directory. */
export function removeCluster(c: PrivateCluster | undefined): void {
  if (!c) return;
  c.stop('immediate');
  rmSync(c.opts.dir, { recursive: true, force: true });
}
