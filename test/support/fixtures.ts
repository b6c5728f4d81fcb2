import type { Pool } from 'pg';
import { applyV1Schema, generateV1 } from '../../lambdas/adapters/local/v1-generator';
import { parseConfig, type MigrationConfig, type MigrationConfigInput } from '../../lambdas/core/config';
import type { TestDatabases } from './pg';

/** A validated config for a test database pair, with any overrides. */
export function testConfig(
  dbs: Pick<TestDatabases, 'v1Url' | 'v2Url'>,
  overrides: Partial<MigrationConfigInput> = {},
): MigrationConfig {
  return parseConfig({
    v1: { url: dbs.v1Url },
    v2: { url: dbs.v2Url },
    telemetryStorage: 'auto',
    // A test machine runs many databases at once: only the throttle's own tests (which set their
    // thresholds) may see V1 "under pressure"; elsewhere a slow commit must not hold windows back.
    throttle: { commitLatencyMs: 10_000, probeTimeoutMs: 30_000 },
    ...overrides,
  });
}

/**
 * A cutover for tests: the given percentages, each baked `bakeSeconds` (the local state machines
 * shorten every wait anyway), and no soak before cleanup.
 */
export function quickCutover(percentages: number[], bakeSeconds = 1): MigrationConfigInput['cutover'] {
  return { schedule: percentages.map((percentage) => ({ percentage, bakeSeconds })), soakMinutes: 0 };
}

/** Creates the V1 schema and writes a small deterministic data set. */
export async function seedV1(
  v1: Pool,
  options: { devices?: number; telemetry?: number; seed?: number } = {},
) {
  await applyV1Schema(v1);
  return generateV1(v1, {
    devices: options.devices ?? 20,
    telemetry: options.telemetry ?? 2000,
    seed: options.seed ?? 1,
  });
}

/** Every table's row count in a schema, for before/after comparisons. */
export async function rowCounts(pool: Pool, schema: string): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ table_name: string }>(
    `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1`,
    [schema],
  );
  const out: Record<string, number> = {};
  for (const { table_name } of rows) {
    out[table_name] = Number(
      (await pool.query(`SELECT count(*) AS n FROM "${schema}"."${table_name}"`)).rows[0].n,
    );
  }
  return out;
}
