import { rmSync } from 'node:fs';
import { ENV } from './servers';
import { checkTempDirEmpty } from './temp-dir';

/** Stops the run's servers and removes its backups, whether the tests passed or not; fails a run that left litter. */
export default async function globalTeardown(): Promise<void> {
  await Promise.all((globalThis.__TEST_SERVERS__ ?? []).map((s) => s.stop()));
  const backups = process.env[ENV.backupDir];
  if (backups) rmSync(backups, { recursive: true, force: true });
  if (globalThis.__TEST_TMPDIR__) checkTempDirEmpty(globalThis.__TEST_TMPDIR__);
}
