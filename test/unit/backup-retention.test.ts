// Backup retention touches only its own plan's dumps: plan names can prefix one another (relp, relp-v2).
import { mkdtempSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dumpFileName, pruneBackups } from '../../src/phases/backup/activities';

test("retain: 0 deletes this plan's earlier dumps and their metadata, and nothing of a plan whose name it prefixes", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-retention-'));
  const dump = (plan: string, minutesAgo: number, run: string) => {
    const at = new Date(Date.now() - minutesAgo * 60_000);
    const name = dumpFileName(plan, at, run);
    writeFileSync(join(dir, name), 'dump');
    writeFileSync(join(dir, `${name}.json`), JSON.stringify({ plan }));
    utimesSync(join(dir, name), at, at);
    return name;
  };
  const old1 = dump('relp', 30, '01aaaaaa-1');
  const old2 = dump('relp', 20, '01bbbbbb-2');
  const other = dump('relp-v2', 25, '01cccccc-3');
  const unrelated = 'relp-notes.dump';
  writeFileSync(join(dir, unrelated), 'not a dump of ours');
  const current = dump('relp', 0, '01dddddd-4');

  const pruned = await pruneBackups(dir, 'relp', current, 0);
  expect(pruned.sort()).toEqual([old1, old2].sort());
  expect(readdirSync(dir).sort()).toEqual([current, `${current}.json`, other, `${other}.json`, unrelated].sort());
});

test('retain: N keeps the N newest earlier dumps of the plan', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-retention-'));
  const names = [40, 30, 20, 10].map((m, i) => {
    const at = new Date(Date.now() - m * 60_000);
    const name = dumpFileName('orders-v2', at, `0${i}eeeeee`);
    writeFileSync(join(dir, name), 'dump');
    utimesSync(join(dir, name), at, at);
    return name;
  });
  const current = dumpFileName('orders-v2', new Date(), '05ffffff');
  writeFileSync(join(dir, current), 'dump');
  expect((await pruneBackups(dir, 'orders-v2', current, 2)).sort()).toEqual(names.slice(0, 2).sort());
});
