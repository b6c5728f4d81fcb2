import { startLocalPostgres, type LocalPostgres } from '../../lambdas/adapters/local/embedded-pg';
import { isolateTempDir } from './temp-dir';

declare global {
  var __LOCAL_PG__: LocalPostgres | undefined;
  var __TEST_TMPDIR__: string | undefined;
}

/**
 * Starts one embedded PostgreSQL for the whole jest run on a free port; each suite takes fresh
 * databases on it (test/support/pg.ts). Workers are forked after this, so they inherit the env.
 */
export default async function globalSetup(): Promise<void> {
  const pg = await startLocalPostgres();
  globalThis.__LOCAL_PG__ = pg;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void pg.stop().finally(() => process.exit(130));
    });
  }
  // After the server's own data folder is made: the workers' temporary files go to a checked one.
  globalThis.__TEST_TMPDIR__ = isolateTempDir();
  process.env.TEST_PG_PORT = String(pg.port);
  process.env.TEST_PG_USER = pg.user;
  process.env.TEST_PG_PASSWORD = pg.password;
}
