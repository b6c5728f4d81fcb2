import { freshDatabases, type TestDatabases } from '../../../support/pg';
import { seedV1 } from '../../../support/fixtures';

let a: TestDatabases;
let b: TestDatabases;
beforeAll(async () => {
  [a, b] = await Promise.all([freshDatabases('gen_a'), freshDatabases('gen_b')]);
  await seedV1(a.v1, { devices: 40, telemetry: 60_000, seed: 42 });
  await seedV1(b.v1, { devices: 40, telemetry: 60_000, seed: 42 });
});
afterAll(() => Promise.all([a.drop(), b.drop()]));

const fingerprint = async (t: TestDatabases, table: string, order: string) =>
  (
    await t.v1.query(
      `SELECT md5(string_agg(x::text, '|' ORDER BY ${order})) AS h, count(*)::int AS n FROM ${table} x`,
    )
  ).rows[0];

describe('V1 data generator', () => {
  it('is deterministic for a seed', async () => {
    for (const [table, order] of [
      ['users', 'id'],
      ['devices', 'id'],
      ['device_data', 'id'],
      ['alerts', 'id'],
    ]) {
      expect(await fingerprint(a, table, order)).toEqual(await fingerprint(b, table, order));
    }
  });

  it('writes through the V1 schema, constraints intact', async () => {
    const constraints = await a.v1.query(
      `SELECT conname FROM pg_constraint WHERE conrelid = 'device_data'::regclass ORDER BY 1`,
    );
    expect(constraints.rows.map((r) => r.conname)).toEqual(['device_data_deviceId_fkey', 'device_data_pkey']);
    const index = await a.v1.query(
      `SELECT indexname FROM pg_indexes WHERE tablename = 'device_data' ORDER BY 1`,
    );
    expect(index.rows.map((r) => r.indexname)).toEqual(['device_data_device_ts', 'device_data_pkey']);
  });

  it('covers the odd-but-valid rows a real V1 holds', async () => {
    const q = async (sql: string) => Number((await a.v1.query(sql)).rows[0].n);
    expect(await q(`SELECT count(*) AS n FROM device_data WHERE source IS NULL`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM device_data WHERE data = '{}'::jsonb`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM device_data WHERE length(data::text) > 1000`)).toBeGreaterThan(
      0,
    );
    expect(
      await q(`SELECT count(*) AS n FROM device_data WHERE jsonb_typeof(data) = 'array'`),
    ).toBeGreaterThan(0);
    expect(
      await q(`SELECT count(*) AS n FROM device_data WHERE data::text ~ '[^\\x01-\\x7f]'`),
    ).toBeGreaterThan(0);
    expect(
      await q(
        `SELECT count(*) AS n FROM (SELECT "deviceId", "timestamp" FROM device_data GROUP BY 1, 2 HAVING count(*) > 1) d`,
      ),
    ).toBeGreaterThan(0);
    expect(
      await q(
        `SELECT count(*) AS n FROM devices d WHERE NOT EXISTS (SELECT 1 FROM device_data t WHERE t."deviceId" = d.id)`,
      ),
    ).toBeGreaterThan(0);
    expect(
      await q(
        `SELECT count(*) AS n FROM device_data WHERE "timestamp" < (SELECT min("createdAt") FROM devices)`,
      ),
    ).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM device_data WHERE "timestamp" > '2090-01-01'`)).toBeGreaterThan(
      0,
    );
    expect(await q(`SELECT count(*) AS n FROM devices WHERE config IS NULL`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM devices WHERE config = '{}'::jsonb`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM devices WHERE "ownerId" IS NULL`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM users WHERE name IS NULL`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM users WHERE email ~ '[^\\x01-\\x7f]'`)).toBeGreaterThan(0);
    expect(await q(`SELECT count(*) AS n FROM alerts WHERE "resolvedAt" IS NULL`)).toBeGreaterThan(0);
    expect(
      await q(`SELECT count(*) AS n FROM alerts WHERE message LIKE '%' || chr(10) || '%'`),
    ).toBeGreaterThan(0);
  });
});
