// The container image and stack, without a container engine: the Dockerfile's file copies and install steps are
// replayed in temporary directories (the build stage installs and builds; the runtime stage gets only what it copies
// and must run tidemark), and docker compose accepts the compose file, whose stack seeds the example's database,
// restarts the worker and keeps its dumps on a volume.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { tempDir } from '../helpers/plans';

const ROOT = join(__dirname, '..', '..');
const run = promisify(execFile);

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string;
  instructions: Instruction[];
}

/** The Dockerfile as stages of instructions (continuation lines joined, comments dropped). */
function dockerfile(): { args: Record<string, string>; stages: Stage[] } {
  const lines = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const [op, ...rest] = line.split(/\s+/);
    const instr = { op: op.toUpperCase(), args: rest.join(' ') };
    if (instr.op === 'FROM')
      stages.push({ name: /\bAS\s+(\S+)/i.exec(instr.args)?.[1] ?? `stage${stages.length}`, instructions: [] });
    else if (!stages.length && instr.op === 'ARG') {
      const [k, v] = instr.args.split('=');
      args[k] = v;
    } else stages.at(-1)!.instructions.push(instr);
  }
  return { args, stages };
}

/** Replays a stage: WORKDIR, COPY (from the context or an earlier stage) and the npm steps of RUN. */
async function replay(stage: Stage, roots: Record<string, string>): Promise<{ root: string; skipped: string[] }> {
  const root = tempDir(`tidemark-docker-${stage.name}-`);
  let workdir = '/';
  const skipped: string[] = [];
  const inImage = (p: string) => join(root, resolve(workdir, p));
  for (const { op, args } of stage.instructions) {
    if (op === 'WORKDIR') {
      workdir = resolve(workdir, args);
      mkdirSync(inImage('.'), { recursive: true });
    } else if (op === 'COPY') {
      const parts = args.split(/\s+/);
      const from = parts[0].startsWith('--from=') ? parts.shift()!.slice('--from='.length) : undefined;
      const dest = parts.pop()!;
      for (const src of parts) {
        const source = from ? join(roots[from], src) : join(ROOT, src);
        if (!existsSync(source)) throw new Error(`COPY ${src}: not in ${from ? `stage ${from}` : 'the build context'}`);
        const target = dest.endsWith('/') ? join(inImage(dest), src.split('/').pop()!) : inImage(dest);
        cpSync(source, target, { recursive: true });
      }
    } else if (op === 'RUN') {
      // apt-get needs the image's own root file system: those steps are checked by reading, below.
      if (/^npm\b/.test(args)) {
        await run('sh', ['-c', args], {
          cwd: inImage('.'),
          env: {
            ...process.env,
            npm_config_prefer_offline: 'true',
            npm_config_audit: 'false',
            npm_config_fund: 'false',
          },
          maxBuffer: 64 * 1024 * 1024,
        });
      } else skipped.push(args);
    }
  }
  return { root: inImage('.'), skipped };
}

test('the image builds from what it copies, runs tidemark, and ships a pg_dump as new as the compose database', async () => {
  const { args, stages } = dockerfile();
  expect(stages.map((s) => s.name)).toEqual(['build', 'stage1']);
  const build = await replay(stages[0], {});
  expect(existsSync(join(build.root, 'dist', 'workflow-bundle.js'))).toBe(true);
  const runtime = await replay(stages[1], { build: join(build.root, '..') });

  const tidemark = (...a: string[]) => run(process.execPath, ['bin/tidemark', ...a], { cwd: runtime.root });
  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
  expect((await tidemark('--version')).stdout.trim()).toBe(version);
  // The plan review needs the production dependencies only (libpg-query among them).
  expect((await tidemark('plan', 'check', 'examples/meetings/plan.yaml')).stdout).toContain('meetings-room-types');
  expect((await tidemark('worker', '--help')).stdout).toContain('--metrics-port');

  // The client programs come from the PostgreSQL project's repository, of the version the compose stack runs.
  expect(runtime.skipped.join('\n')).toMatch(/apt\.postgresql\.org\.sh -y/);
  expect(runtime.skipped.join('\n')).toContain('postgresql-client-${PG_MAJOR}');
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'));
  const dbMajor = Number(/postgres:(\d+)/.exec(compose.services['app-db'].image)![1]);
  expect(Number(args.PG_MAJOR)).toBeGreaterThanOrEqual(dbMajor);
  expect(Number(compose.services.worker.build.args.PG_MAJOR)).toBeGreaterThanOrEqual(dbMajor);
}, 600_000);

test('docker compose accepts the stack: seeded database, restarting worker waiting for Temporal, dumps on a volume', async () => {
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'));
  const worker = compose.services.worker;
  expect(worker.restart).toBe('on-failure');
  expect(worker.environment.TIDEMARK_CONNECT_TIMEOUT).toBeDefined();
  expect(worker.volumes).toContain('./backups:/app/backups');
  // The example's plan writes to ./backups, which the worker resolves under its working directory: the volume.
  expect(readFileSync(join(ROOT, 'examples', 'meetings', 'plan.yaml'), 'utf8')).toMatch(/dir: \.\/backups/);
  for (const v of compose.services['app-db'].volumes.filter((x: string) => x.includes('initdb')))
    expect(existsSync(join(ROOT, v.split(':')[0]))).toBe(true);
  expect(
    parse(readFileSync(join(ROOT, 'deploy', 'prometheus', 'alerts.yml'), 'utf8')).groups[0].rules.length,
  ).toBeGreaterThan(2);

  const cli = ['docker-compose', 'docker'].find((c) => {
    try {
      require('node:child_process').execFileSync(c, c === 'docker' ? ['compose', 'version'] : ['version'], {
        stdio: 'ignore',
      });
      return true;
    } catch {
      return false;
    }
  });
  if (!cli) {
    console.warn('docker compose not installed: the compose file was read but not checked by compose itself');
    return;
  }
  const r = await run(cli, [...(cli === 'docker' ? ['compose'] : []), '--profile', 'observability', 'config', '-q'], {
    cwd: ROOT,
  });
  expect(r.stderr).toBe('');
});
