/**
 * The test servers of a jest run (started once by global setup): embedded PostgreSQL always,
 * and PostgreSQL 15 with TimescaleDB where it is installed (`../shared/timescaledb/install.sh`).
 * Suites that need TimescaleDB say that they are skipped and why where it is not; with
 * REQUIRE_TIMESCALEDB=1 (set by .ci/run) they fail instead.
 */

export type TestServerKind = 'embedded' | 'timescaledb';

/** Environment variable names, defined once. */
export const ENV = {
  /** Set to 1 to make a missing or broken TimescaleDB fail the run instead of skipping its suites. */
  requireTimescale: 'REQUIRE_TIMESCALEDB',
  /** Set to 1 to make a missing /usr/bin/chromium fail the HTML report test instead of skipping it. */
  requireChromium: 'REQUIRE_CHROMIUM',
  /** Why the TimescaleDB server is not running (set by global setup). */
  timescaleMissing: 'TEST_TIMESCALEDB_MISSING',
  /** A folder for this run's backups (set by global setup). */
  backupDir: 'TEST_BACKUP_DIR',
  port: { embedded: 'TEST_PG_PORT', timescaledb: 'TEST_TIMESCALEDB_PORT' },
  user: { embedded: 'TEST_PG_USER', timescaledb: 'TEST_TIMESCALEDB_USER' },
  password: { embedded: 'TEST_PG_PASSWORD', timescaledb: 'TEST_TIMESCALEDB_PASSWORD' },
} as const;

export const timescaleRequired = () => process.env[ENV.requireTimescale] === '1';

/** Why TimescaleDB tests cannot run in this jest run, or undefined when they can. */
export function timescaleMissing(): string | undefined {
  if (process.env[ENV.port.timescaledb]) return undefined;
  return (
    process.env[ENV.timescaleMissing] ??
    'the TimescaleDB test server was not started (run the tests through jest)'
  );
}

/** A telemetry storage the migration chooses, and the test server that offers it. */
export interface StorageCase {
  storage: 'partitioned' | 'timescaledb';
  server: TestServerKind;
  /** For test titles. */
  label: string;
}

export const PARTITIONS: StorageCase = {
  storage: 'partitioned',
  server: 'embedded',
  label: 'native partitions (embedded PostgreSQL)',
};
export const HYPERTABLE: StorageCase = {
  storage: 'timescaledb',
  server: 'timescaledb',
  label: 'TimescaleDB hypertable (PostgreSQL 15)',
};
export const STORAGE_CASES: StorageCase[] = [PARTITIONS, HYPERTABLE];

const warned = new Set<string>();

/**
 * `describe` for a suite that needs the TimescaleDB server: where it is missing, the suite is
 * skipped with the reason in its title and on the console, or, with REQUIRE_TIMESCALEDB=1, it
 * fails with that reason.
 */
export function describeOnTimescale(title: string, body: () => void): void {
  const missing = timescaleMissing();
  if (!missing) {
    describe(title, body);
    return;
  }
  if (timescaleRequired()) {
    describe(title, () => {
      it(`needs TimescaleDB (${ENV.requireTimescale}=1)`, () => {
        throw new Error(`TimescaleDB is required (${ENV.requireTimescale}=1) but ${missing}`);
      });
    });
    return;
  }
  if (!warned.has(missing)) {
    warned.add(missing);
    console.warn(`TimescaleDB suites are SKIPPED: ${missing}`);
  }
  describe.skip(`${title} [SKIPPED: ${missing}]`, body);
}

/** Declares a suite once per telemetry storage (partitions; hypertable where TimescaleDB runs). */
export function describeEachStorage(title: string, body: (storage: StorageCase) => void): void {
  for (const c of STORAGE_CASES) {
    const full = `${title} on ${c.label}`;
    if (c.server === 'timescaledb') describeOnTimescale(full, () => body(c));
    else describe(full, () => body(c));
  }
}
