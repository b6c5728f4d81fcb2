import { PrismaPg } from '@prisma/adapter-pg';
import type { Pool } from 'pg';
import { runVerificationLocally } from '../../lambdas/adapters/local/local-verify';
import type { MigrationConfig } from '../../lambdas/core/config';
import type { MappedTable } from '../../lambdas/core/mapping';
import { PrismaClient } from '../../prisma/v1/generated/client';
import type { TestDatabases } from '../support/pg';

/** The generated V1 client (prisma/v1) on a V1 test database, through node-postgres. */
export function v1Prisma(v1: Pool): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(v1) });
}

/** A router stand-in: a dual-write switch a test flips, and a fixed read decision. */
export function migrationRouter(on = true) {
  return {
    on,
    target: 'v1' as 'v1' | 'v2',
    dualWriteEnabled() {
      return this.on;
    },
    route(_key: string) {
      return this.target;
    },
  };
}

/**
 * The Phase 3 verifier over both sides (counts and checksums of every mapped column, window by
 * window; mismatches explained row by row), without repairing anything.
 */
export async function verify(dbs: TestDatabases, config: MigrationConfig, tables?: MappedTable[]) {
  return runVerificationLocally(
    { v1: dbs.v1, v2: dbs.v2, config },
    { repair: false, sampleSize: 50, ...(tables ? { tables } : {}) },
  );
}

/** Asserts the verifier finds V2 equal to V1 under the mapping (the given tables, or all). */
export async function expectVerified(dbs: TestDatabases, config: MigrationConfig, tables?: MappedTable[]) {
  const report = await verify(dbs, config, tables);
  expect(report.mismatches).toEqual([]);
  expect(report.clean).toBe(true);
  return report;
}

/** V2's row versions (xmin) and count of a table: changes when anything is written to it. */
export async function v2State(dbs: TestDatabases, table: MappedTable) {
  const key = table === 'telemetry' ? 'legacy_id' : 'id';
  const { rows } = await dbs.v2.query(
    `SELECT count(*)::int AS n, md5(coalesce(string_agg(${key}::text || ':' || xmin::text, ',' ORDER BY ${key}), '')) AS h FROM ${table}`,
  );
  return rows[0] as { n: number; h: string };
}

export const at = (iso: string) => new Date(iso);
