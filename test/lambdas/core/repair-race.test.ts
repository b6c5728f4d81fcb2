import type { Pool, PoolClient } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { syncRow } from '../../../lambdas/core/sync/repair';
import { checkWindows, repairWindow } from '../../../lambdas/core/verify';
import { bindWindow, loadWindows } from '../../../lambdas/core/windows';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';

/**
 * A window repair copies V1 from one snapshot while the backend keeps dual-writing. A row V1
 * commits after that snapshot, whose V2 half lands before the repair compares, is not in the
 * snapshot: the repair deletes it from V2, and must put it back from V1 as V1 holds it now.
 */
describe('window repair racing a dual write', () => {
  let dbs: TestDatabases;
  beforeAll(async () => {
    dbs = await freshDatabases('race');
    await seedV1(dbs.v1, { devices: 4, telemetry: 400, seed: 8 });
  });
  afterAll(async () => {
    await dbs?.drop();
  });

  it('keeps a row written to both sides after the repair read V1', async () => {
    const config = testConfig(dbs);
    await prepared(dbs, config);
    const deps = { v1: dbs.v1, v2: dbs.v2, config };
    await runBackfillLocally(deps);
    const rowDeps = { v1: dbs.v1, v2: dbs.v2, schemas: config.schemas, tenantId: config.tenant.id };

    // A V1 row and the telemetry window it falls in.
    const sample = (
      await dbs.v1.query<{ id: string; deviceId: string; ts: string }>(
        `SELECT id::text AS id, "deviceId", "timestamp"::text AS ts FROM device_data ORDER BY id LIMIT 1`,
      )
    ).rows[0];
    const ids = (
      await dbs.v2.query<{ id: string }>(
        `SELECT id::text AS id FROM migration_control.windows WHERE table_name = 'telemetry'`,
      )
    ).rows.map((r) => Number(r.id));
    let windowId: number | undefined;
    for (const window of await loadWindows(dbs.v2, config, ids)) {
      const client = await dbs.v1.connect();
      try {
        await client.query('BEGIN');
        const where = await bindWindow(client, 'telemetry', window, 'v1');
        const hit = await client.query(`SELECT 1 FROM device_data WHERE ${where} AND id = $1`, [sample.id]);
        await client.query('COMMIT');
        if (hit.rowCount === 1) windowId = window.id;
      } finally {
        client.release();
      }
    }
    expect(windowId).toBeDefined();

    // The backend's write lands on both sides right after the repair has read V1's snapshot.
    let written: string | undefined;
    const racing = Object.create(dbs.v1) as Pool;
    const watched = async () => {
      const client = await dbs.v1.connect();
      const query = client.query.bind(client) as (text: string, values?: unknown[]) => Promise<unknown>;
      // COPY streams (submittables) pass through as they are; SQL text is awaited and watched.
      (client as unknown as { query: unknown }).query = (text: unknown, values?: unknown[]) => {
        if (typeof text !== 'string') return (query as (q: unknown) => unknown)(text);
        return query(text, values).then(async (result) => {
          if (text === 'COMMIT' && written === undefined) {
            const { rows } = await dbs.v1.query<{ id: string }>(
              `INSERT INTO device_data ("deviceId", "timestamp", data, protocol, source)
               VALUES ($1, $2::timestamp, '{"raced": true}', 'MQTT', 'race') RETURNING id::text AS id`,
              [sample.deviceId, sample.ts],
            );
            written = rows[0].id;
            await syncRow(rowDeps, 'telemetry', written);
          }
          return result;
        });
      };
      return client as PoolClient;
    };
    // Pool.query checks a client out with a callback: those stay unwatched.
    racing.connect = ((callback?: Parameters<Pool['connect']>[0]) =>
      callback ? dbs.v1.connect(callback) : watched()) as Pool['connect'];

    await repairWindow({ ...deps, v1: racing }, windowId!);
    expect(written).toBeDefined();
    const inV2 = await dbs.v2.query(`SELECT source FROM telemetry WHERE legacy_id = $1`, [written]);
    expect(inV2.rows).toEqual([{ source: 'race' }]);
    const { windows } = await checkWindows(deps, [windowId!]);
    expect(windows[0].matched).toBe(true);
  });
});
