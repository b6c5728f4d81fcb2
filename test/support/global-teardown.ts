import { checkTempDirEmpty } from './temp-dir';

/** Stops the run's PostgreSQL server, whether the tests passed or not; fails a run that left litter. */
export default async function globalTeardown(): Promise<void> {
  await globalThis.__LOCAL_PG__?.stop();
  if (globalThis.__TEST_TMPDIR__) checkTempDirEmpty(globalThis.__TEST_TMPDIR__);
}
