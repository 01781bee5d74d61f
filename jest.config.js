// Unit tests need no database (the workflow-logic tests run on the time-skipping test server); integration tests
// share one Temporal dev server (started in global setup) and each test creates its own PostgreSQL database.
// TIDEMARK_RECORD=1 runs only the recorder of replay histories (npm run record-histories).
const transform = {
  '^.+\\.ts$': [
    '@swc/jest',
    { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } },
  ],
};

const withServices = {
  transform,
  testEnvironment: 'node',
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
};

module.exports = {
  testTimeout: 180_000,
  projects: process.env.TIDEMARK_RECORD
    ? [{ displayName: 'record', testMatch: ['<rootDir>/test/record/**/*.record.ts'], ...withServices }]
    : [
        { displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'], transform, testEnvironment: 'node' },
        { displayName: 'integration', testMatch: ['<rootDir>/test/integration/**/*.test.ts'], ...withServices },
      ],
};
