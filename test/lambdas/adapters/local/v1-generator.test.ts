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
        `SELECT count(*) AS n FROM device_data WHERE "timestamp" < (SELECT min("createdAt") FROM devices WHERE "createdAt" > '0001-01-01')`,
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

  it('covers the edges of every column’s type', async () => {
    const q = async (sql: string) => Number((await a.v1.query(sql)).rows[0].n);
    const some = async (where: string) =>
      expect(await q(`SELECT count(*) AS n FROM ${where}`)).toBeGreaterThan(0);
    // JSON null beside SQL NULL, numbers JavaScript cannot hold, escapes, empty containers, scalars.
    await some(`devices WHERE config = 'null'::jsonb`);
    await some(`devices WHERE config IS NULL`);
    await some(`device_data WHERE data = 'null'::jsonb`);
    await some(`device_data WHERE data::text LIKE '%123456789012345678901234567890%'`);
    await some(`devices WHERE config::text LIKE '%0.1000000000000000055511151231257827%'`);
    await some(`device_data WHERE jsonb_typeof(data) IN ('boolean', 'string')`);
    await some(`devices WHERE config = '[]'::jsonb`);
    await some(`devices WHERE config::text LIKE '%\\u0001%'`);
    // Empty strings beside NULLs, in every kind of text column.
    await some(`users WHERE name = ''`);
    await some(`users WHERE "passwordHash" = ''`);
    await some(`devices WHERE name = '' OR type = '' OR status = ''`);
    await some(`device_data WHERE source = ''`);
    await some(`device_data WHERE protocol = ''`);
    await some(`alerts WHERE message = '' AND status = ''`);
    // The ends of time: ±infinity, before the common era, beyond a JavaScript Date.
    await some(`users WHERE "createdAt" = 'infinity' AND "updatedAt" = '-infinity'`);
    await some(`users WHERE "createdAt" < '0001-01-01' AND "updatedAt" > '275760-09-13'`);
    await some(`devices WHERE "lastSeenAt" = 'infinity'`);
    await some(`devices WHERE "createdAt" = '-infinity'`);
    await some(`device_data WHERE "timestamp" < '0001-01-01'`);
    await some(`device_data WHERE "timestamp" > '275760-09-13'`);
    await some(`alerts WHERE "resolvedAt" = 'infinity'`);
    await some(`alerts WHERE "createdAt" < '0001-01-01'`);
    // Every value of the role enum.
    expect(await q(`SELECT count(DISTINCT role) AS n FROM users`)).toBe(3);
  });
});
