// Lint rules. The one that matters most: workflow code is deterministic orchestration and must not do I/O, so
// database, logging, file-system and process modules are banned there.
const js = require('@eslint/js');
const tseslint = require('typescript-eslint');

const ioModules = [
  'pg',
  'pg-connection-string',
  'pino',
  'yaml',
  'zod',
  'commander',
  '@temporalio/activity',
  '@temporalio/client',
  '@temporalio/worker',
];
const nodeBuiltins = [
  'fs',
  'fs/promises',
  'child_process',
  'net',
  'http',
  'https',
  'os',
  'path',
  'crypto',
  'dns',
  'worker_threads',
  'stream',
];

module.exports = tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tools/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  {
    files: [
      'src/migration/**/*.ts',
      'src/phases/phase.ts',
      'src/phases/index.ts',
      'src/phases/*/workflow.ts',
      'src/phases/*/*-workflow.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [...ioModules, ...nodeBuiltins, ...nodeBuiltins.map((m) => `node:${m}`)].map((name) => ({
            name,
            message: 'workflow code must stay deterministic: do I/O in an activity',
          })),
          patterns: [
            {
              regex:
                '(^|/)(activities|activity-kit|run-activities|ledger-activities|mapping|batcher|throttler|sizer|sql|across|capture-sql|chunks|probe)$',
              allowTypeImports: true,
              message: 'activity-side module: workflow code imports its types only (import type)',
            },
            {
              group: [
                '**/db/*',
                '**/infra/*',
                '**/cli/*',
                '**/logger',
                '**/rehearsal',
                '**/flags',
                '**/client',
                '**/worker',
              ],
              message: 'workflow code must not import I/O modules',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'require',
          '__dirname',
          'process',
          'console',
          'performance',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'clearInterval',
          'URL',
          'Buffer',
          'fetch',
        ]
          .map((g) => [g, 'readonly'])
          .concat([['module', 'writable']]),
      ),
    },
  },
);
