import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

/** The prefix of a test run's own temporary directory. */
export const RUN_TMPDIR_PREFIX = 'iot-jest-';

/**
 * Gives the test run its own, empty temporary directory: TMPDIR is pointed at it before jest
 * forks its workers, so everything the tests (and what they run) put in the temporary
 * directory lands there. World-writable and sticky like /tmp, so the embedded server's
 * unprivileged postgres user reaches what the tests put there.
 */
export function isolateTempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), RUN_TMPDIR_PREFIX));
  chmodSync(dir, 0o1777);
  process.env.TMPDIR = dir;
  return dir;
}

/**
 * Caches that the tools the tests spawn keep in the temporary directory by design (tsx's
 * compile cache `tsx-<uid>`, jiti's for the Prisma and ESLint configs): not a test's litter, and
 * removed with the directory.
 */
const TOOL_CACHES = /^(tsx-\d+|jiti)$/;

/**
 * Removes the run's temporary directory and throws, naming them, when the tests left anything
 * in it: every test cleans what it creates (cloud assemblies, report folders, databases).
 */
export function checkTempDirEmpty(dir: string): void {
  if (basename(dir).startsWith(RUN_TMPDIR_PREFIX) === false) {
    throw new Error(`${dir} is not a test run's temporary directory`);
  }
  const left = readdirSync(dir).filter((entry) => !TOOL_CACHES.test(entry));
  rmSync(dir, { recursive: true, force: true });
  if (left.length > 0) {
    throw new Error(
      `the tests left ${left.length} entr${left.length === 1 ? 'y' : 'ies'} in the temporary directory: ${left.join(', ')}`,
    );
  }
}
