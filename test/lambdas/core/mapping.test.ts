import { applyV1Schema } from '../../../lambdas/adapters/local/v1-generator';
import { digestVersion, STORED_DIGEST, storedDigestExpression } from '../../../lambdas/core/digest';
import { MAPPINGS, TABLE_ORDER, V1_COLUMNS } from '../../../lambdas/core/mapping';
import { stagingColumns } from '../../../lambdas/core/sync/window-copy';
import { V1_TABLES } from '../../../lambdas/core/v1-schema';
import { testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';

/**
 * mapping.ts is the only source of column facts: these tests hold it against the real schemas
 * (sql/v1/schema.sql as PostgreSQL created it, V2 as Phase 1 deploys it), so a fact written
 * anywhere else, or a schema that drifts from it, fails here.
 */
describe('the mapping’s column facts', () => {
  let dbs: TestDatabases;
  beforeAll(async () => {
    dbs = await freshDatabases('facts');
    await applyV1Schema(dbs.v1);
    await prepared(dbs, testConfig(dbs, { telemetryStorage: 'partitioned' }));
  });
  afterAll(() => dbs.drop());

  const TYPES = {
    text: 'text',
    enum: 'USER-DEFINED',
    jsonb: 'jsonb',
    timestamp: 'timestamp without time zone',
    bigint: 'bigint',
  };

  it.each(TABLE_ORDER)('%s: V1_COLUMNS is V1’s table, column by column', async (table) => {
    const { rows } = await dbs.v1.query(
      `SELECT column_name AS name, data_type AS type, is_nullable = 'YES' AS nullable,
              column_default IS NOT NULL AS "hasDefault"
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`,
      [MAPPINGS[table].v1Table],
    );
    expect(
      V1_COLUMNS[table].map((c) => ({
        name: c.name,
        type: TYPES[c.type],
        nullable: c.nullable,
        hasDefault: c.hasDefault,
      })),
    ).toEqual(rows);
    expect(V1_TABLES[MAPPINGS[table].v1Table]).toEqual(rows.map((r) => r.name));
  });

  it('the role enum has V1’s type and values', async () => {
    const role = V1_COLUMNS.users.find((c) => c.name === 'role')!;
    const { rows } = await dbs.v1.query(
      `SELECT unnest(enum_range(NULL::${role.enumType ? `"${role.enumType}"` : 'text'}))::text AS v`,
    );
    expect(role.values).toEqual(rows.map((r) => r.v));
    expect(V1_COLUMNS.users.filter((c) => c.type === 'enum').map((c) => c.enumType)).toEqual(['UserRole']);
  });

  it.each(TABLE_ORDER)('%s: staging columns have V2’s types', async (table) => {
    const client = await dbs.v2.connect();
    try {
      await client.query('BEGIN');
      await client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
      const types = async (relation: string) =>
        (
          await client.query<{ name: string; type: string }>(
            `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
              WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`,
            [relation],
          )
        ).rows;
      const staged = new Map((await types('pg_temp.stage')).map((r) => [r.name, r.type]));
      const v2 = await types(`public.${MAPPINGS[table].v2Table}`);
      const mapped = new Set(MAPPINGS[table].columns.map((c) => c.v2));
      const expected = v2.filter((c) => mapped.has(c.name));
      expect(expected).toHaveLength(mapped.size);
      for (const c of expected) expect([c.name, staged.get(c.name)]).toEqual([c.name, c.type]);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
  });

  it('the stored digest’s version is derived from its expression', () => {
    expect(STORED_DIGEST.version).toBe(digestVersion(storedDigestExpression()));
    // Any change to the expression gives another version.
    const changed = storedDigestExpression().replace('hashtextextended', 'hashtextextended ');
    expect(digestVersion(changed)).not.toBe(STORED_DIGEST.version);
    expect(digestVersion(storedDigestExpression())).toBe(STORED_DIGEST.version);
  });
});
