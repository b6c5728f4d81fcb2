// The AWS SDK's notice that its releases after January 2027 need Node 22 is printed by every
// client made on Node 20 (README, "Node versions"); the workers inherit this setting.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
// Node 22's module compile cache (which tools turn on) goes here, not into the temporary
// directory, which a test run leaves as it found it.
process.env.NODE_COMPILE_CACHE ??= require('node:path').join(
  __dirname,
  'node_modules',
  '.cache',
  'node-compile-cache',
);

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  setupFiles: ['<rootDir>/test/support/setup-env.ts'],
  // Not in the temporary directory, which a test run leaves as it found it.
  cacheDirectory: '<rootDir>/node_modules/.cache/jest',
  testTimeout: 120000,
  maxWorkers: 2,
};
