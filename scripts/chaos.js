#!/usr/bin/env node
// `npm run chaos`: builds (the worker runs the built `bin/tidemark`), then runs test/chaos/main.ts, compiled on the fly
// with swc (the compiler the tests use). Arguments: --runs N (default 50), --seed S, --rows R, --bound-seconds B.
const { execFileSync } = require('node:child_process');
const { join } = require('node:path');
const { transformFileSync } = require('@swc/core');

const root = join(__dirname, '..');
execFileSync(process.execPath, [join(root, 'scripts', 'build.js')], { cwd: root, stdio: 'inherit' });

require.extensions['.ts'] = (module, filename) => {
  const { code } = transformFileSync(filename, {
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    module: { type: 'commonjs' },
    sourceMaps: 'inline',
  });
  module._compile(code, filename);
};

require(join(root, 'test', 'chaos', 'main.ts'))
  .main(process.argv.slice(2))
  .then(
    (code) => process.exit(code),
    (e) => {
      console.error(`chaos: ${e.stack || e.message}`);
      process.exit(2);
    },
  );
