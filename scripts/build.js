#!/usr/bin/env node
// Build: compile TypeScript to dist/, then bundle the workflow code once (dist/workflow-bundle.js) so workers start
// without webpack and with a smaller memory footprint.
const { execFileSync } = require('node:child_process');
const { writeFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
  cwd: root,
  stdio: 'inherit',
});

const { bundleWorkflowCode, DefaultLogger } = require('@temporalio/worker');
bundleWorkflowCode({
  workflowsPath: join(root, 'dist', 'migration', 'index.js'),
  logger: new DefaultLogger('WARN'),
}).then(
  ({ code }) => writeFileSync(join(root, 'dist', 'workflow-bundle.js'), code),
  (e) => {
    console.error(`bundling workflows failed: ${e.message}`);
    process.exit(1);
  },
);
