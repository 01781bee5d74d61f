// Backup, workflow side: a verified pg_dump before anything changes. Backups are kept, so there is no undo; an abort
// with --restore-backup puts the dumped tables' contents back after every compensation has run.
import { backups, undos } from '../../migration/profiles';
import { count } from '../../migration/readable';
import { errorMessage } from '../../migration/saga';
import type { Phase, PhaseContext } from '../phase';

export const backupPhase: Phase = {
  name: 'backup',
  approvalAtStart: true,
  skip: (plan) => !plan.backup.enabled,
  async run({ plan, run, board }) {
    const what = plan.backup.tables?.join(', ') ?? 'the whole database';
    const b = await backups.createBackup.executeWithOptions({ summary: `pg_dump ${what} into ${plan.backup.dir}` }, [
      { plan, run },
    ]);
    board.status.backup = b;
    return b;
  },
  afterRollback: restoreBackupIfAsked,
};

/** After the compensations of an abort that asked for it: reload the backed-up tables; the failure, if any. */
async function restoreBackupIfAsked(ctx: PhaseContext): Promise<string | undefined> {
  if (!ctx.control.abortRequest?.restoreBackup) return undefined;
  const backup = ctx.board.status.backup as { file: string; sha256: string } | null;
  if (!backup) return 'restore-backup requested, but this run made no backup';
  try {
    const r = await undos.restoreBackup.executeWithOptions(
      { summary: `restore the backed-up tables from ${backup.file}` },
      [{ plan: ctx.plan, file: backup.file, sha256: backup.sha256 }],
    );
    if (!r.tables.length) {
      return (
        `restoring the backup: nothing to restore — the plan names no backup.tables, and copies, archives or changes ` +
        `no table that was there before it; the dump is ${backup.file} (pg_restore it by hand if need be)`
      );
    }
    const rows = (r.rows ?? []).map((x) => `${x.table} ${rowsOf(x.before)} → ${rowsOf(x.after)}`).join(', ');
    const also = r.referencing?.length ? `, with ${r.referencing.join(', ')}` : '';
    ctx.board.event(
      `backup restored into ${r.tables.join(', ')}${also}` +
        (rows ? `; rows before → after: ${rows} (what was written to these tables after the backup is gone)` : ''),
    );
    return undefined;
  } catch (e) {
    return `restoring the backup: ${errorMessage(e)}`;
  }
}

const rowsOf = (n: number) => (n < 0 ? '?' : count(n));
